package endpoints

import (
	"errors"
	"net/http"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/reqbody"
)

// ServePassword handles POST password_path: a user with a valid access token
// proves the current password and sets a new one. token_version is bumped in
// the same transaction that stores the new hash, so every earlier token of
// the user (this one included) is refused from then on, and the response
// carries a fresh pair exactly as the token endpoint would.
func (s *Server) ServePassword(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	fail := func(e *oauthError) error {
		s.cfg.Metrics.PasswordChangeFailure()
		return s.writeError(w, r, e)
	}
	if oerr := s.checkEndpointRequest(w, r); oerr != nil {
		return fail(oerr)
	}
	p, status, challenge, err := s.cfg.Bearer(r)
	if err != nil {
		return fail(s.bearerError(w, r, "password change: reading user", status, challenge, err))
	}
	current, next, oerr := readPasswordChange(w, r)
	if oerr != nil {
		return fail(oerr)
	}
	toks, err := s.cfg.Auth.ChangePassword(r.Context(), p, current, next, s.clientOf(r))
	if err != nil {
		return fail(s.oauthError(err))
	}
	s.cfg.Metrics.PasswordChangeSuccess()
	return s.writeTokens(w, toks)
}

// readPasswordChange reads current_password and new_password from a form or
// JSON body, through the same strict parsers as the token endpoints: a
// member given twice (in any letter case, for JSON) is refused rather than
// one copy picked, so the password checked is the only one in the body.
func readPasswordChange(w http.ResponseWriter, r *http.Request) (current, next string, oerr *oauthError) {
	if q := r.URL.Query(); q.Has("current_password") || q.Has("new_password") {
		return "", "", badRequest("invalid_request", "passwords must be sent in the request body, not the query string")
	}
	mt, oerr := bodyMediaType(r)
	if oerr != nil {
		return "", "", oerr
	}
	if mt != "application/x-www-form-urlencoded" && mt != "application/json" {
		return "", "", badRequest("invalid_request", "the body must be application/x-www-form-urlencoded or application/json")
	}
	body, oerr := readBody(w, r)
	if oerr != nil {
		return "", "", oerr
	}
	if mt == "application/json" {
		vals, err := reqbody.ParseJSONStrings(body, "current_password", "new_password")
		switch {
		case errors.Is(err, reqbody.ErrRepeatedMember), errors.Is(err, reqbody.ErrNotUTF8):
			return "", "", badRequest("invalid_request", err.Error())
		case err != nil:
			return "", "", badRequest("invalid_request", "the body must be a JSON object with string current_password and new_password")
		}
		current, next = vals[0], vals[1]
	} else {
		form, err := reqbody.ParseForm(body)
		if err != nil {
			return "", "", badRequest("invalid_request", err.Error())
		}
		current, next = form.Get("current_password"), form.Get("new_password")
	}
	if current == "" || next == "" {
		return "", "", badRequest("invalid_request", "current_password and new_password are required")
	}
	if len(current) > password.MaxBytes {
		return "", "", badRequest("invalid_request", "current_password too long")
	}
	return current, next, nil
}
