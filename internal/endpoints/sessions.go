package endpoints

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// The refresh token travels in two cookies in cookie mode, both HttpOnly,
// Secure and of the same SameSite: the refresh cookie, scoped to
// refresh_path as it always was, and the logout cookie, the same token
// scoped to logout_path, so that a logout reads it without the refresh
// cookie being sent to every path of the host (a cookie at / would reach
// every route and every other service on the host that is not behind the
// gateway). Any generation of a session's refresh token ends the session,
// so the logout cookie needs no rotation of its own; it is replaced with
// the refresh cookie all the same, so that it never outlives it.

// logoutCookieName is the logout cookie's name: cookie_name with
// "_logout" added. A __Host- cookie must have Path=/, so under a
// __Host- name the logout cookie takes the __Secure- prefix.
func logoutCookieName(cookieName string) string {
	if rest, ok := strings.CutPrefix(cookieName, "__Host-"); ok {
		return "__Secure-" + rest + "_logout"
	}
	return cookieName + "_logout"
}

// hasLogoutCookie reports whether the logout cookie is set: there is a
// logout path the refresh cookie does not reach.
func (s *Server) hasLogoutCookie() bool {
	return s.cfg.LogoutPath != "" && s.cfg.LogoutPath != s.cfg.RefreshPath
}

// tokenCookie is one of the two cookies carrying value until expires; an
// empty value clears it (Max-Age=0).
func (s *Server) tokenCookie(name, path, value string, expires time.Time) *http.Cookie {
	c := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     path,
		HttpOnly: true,
		Secure:   true,
		SameSite: s.sameSiteMode(),
		MaxAge:   -1, // Max-Age=0 on the wire
	}
	if value != "" {
		c.MaxAge = max(int(expires.Sub(s.cfg.Now())/time.Second), 1)
	}
	return c
}

// setRefreshCookie sets (or, with an empty value, clears) the refresh
// cookie and the logout cookie.
func (s *Server) setRefreshCookie(w http.ResponseWriter, value string, expires time.Time) {
	http.SetCookie(w, s.tokenCookie(s.cfg.CookieName, s.cfg.RefreshPath, value, expires))
	if s.hasLogoutCookie() {
		http.SetCookie(w, s.tokenCookie(s.logoutName, s.cfg.LogoutPath, value, expires))
	}
}

// ServeLogout handles POST logout_path: it ends the session of the refresh
// token (read as the refresh endpoint reads it: the cookie first, then the
// JSON body's refresh_token) and clears the cookie; with all=true in the
// query and a valid access token it ends every session of the user. It is
// idempotent: 204 whether or not the session was still there.
func (s *Server) ServeLogout(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	if oerr := s.checkEndpointRequest(w, r); oerr != nil {
		return s.writeError(w, r, oerr)
	}
	cl := s.clientOf(r)
	if s.cfg.CookieMode {
		// Whatever comes next, the client asked to be signed out.
		s.setRefreshCookie(w, "", time.Time{})
	}
	q := r.URL.Query()
	if all := q.Get("all"); all != "" || len(q["all"]) > 0 {
		if all != "true" || len(q["all"]) > 1 {
			return s.writeError(w, r, badRequest("invalid_request", "all must be given once, as all=true"))
		}
		p, status, challenge, err := s.cfg.Bearer(r)
		if err != nil {
			return s.writeError(w, r, s.bearerError(w, r, "reading user", status, challenge, err))
		}
		if _, err := s.cfg.Auth.LogoutAll(r.Context(), p, cl); err != nil {
			return s.writeError(w, r, s.oauthError(err))
		}
		s.cfg.Metrics.LogoutAll()
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	// Every token the cookies carry: a cookie planted by a sibling
	// subdomain beside the user's own must not keep the user's session
	// alive after they pressed "sign out", and ending the planter's own
	// session harms no one.
	var toks []string
	if s.cfg.CookieMode {
		for _, name := range []string{s.logoutName, s.cfg.CookieName} {
			for _, c := range r.CookiesNamed(name) {
				if c.Value != "" && !slices.Contains(toks, c.Value) {
					toks = append(toks, c.Value)
				}
			}
		}
	}
	if len(toks) == 0 && r.ContentLength != 0 {
		tok, oerr := readRefreshJSON(w, r)
		if oerr != nil {
			return s.writeError(w, r, oerr)
		}
		if tok != "" {
			toks = append(toks, tok)
		}
	}
	if len(toks) == 0 {
		if s.cfg.CookieMode {
			// No cookie: nothing to end, and the cookies are cleared.
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		return s.writeError(w, r, badRequest("invalid_request", "no refresh token: send a JSON body with refresh_token"))
	}
	var refused error
	ended := 0
	for _, tok := range toks {
		err := s.cfg.Auth.Logout(r.Context(), tok, cl)
		var ae *auth.Error
		switch {
		case err == nil:
			ended++
		case errors.As(err, &ae) && ae.Code == auth.CodeInvalidGrant:
			refused = err
		default:
			return s.writeError(w, r, s.oauthError(err))
		}
	}
	if ended == 0 {
		return s.writeError(w, r, s.oauthError(refused))
	}
	s.cfg.Metrics.LogoutSession()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// bearerError is the answer, in the endpoints' error format, to a failed
// bearer check (Config.Bearer) on one of the endpoints; what names the
// endpoint in the log line of a server error.
func (s *Server) bearerError(w http.ResponseWriter, r *http.Request, what string, status int, challenge string, err error) *oauthError {
	w.Header().Set("WWW-Authenticate", challenge)
	code, desc := "invalid_token", "the access token is invalid, expired or revoked"
	switch {
	case errors.Is(err, ErrNoToken):
		code, desc = "invalid_request", "an access token is required (Authorization: Bearer)"
	case status >= 500:
		return s.serverError(what, err)
	case status == http.StatusBadRequest:
		code, desc = "invalid_request", err.Error()
	}
	s.cfg.LogDenial(r, status, err)
	return &oauthError{status: status, code: code, description: desc}
}

// sessionView is one session as the signed-in user sees it.
type sessionView struct {
	users.SessionView
	Current bool `json:"current"`
}

// ServeSessions handles sessions_path: GET lists the signed-in user's
// sessions, the current one marked; DELETE sessions_path/SID ends one of
// them. Both need a valid access token; they read no cookie.
func (s *Server) ServeSessions(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	sid, sub := strings.CutPrefix(r.URL.Path, s.cfg.SessionsPath+"/")
	allow := http.MethodGet
	if sub {
		allow = http.MethodDelete
	}
	if r.Method != allow {
		w.Header().Set("Allow", allow)
		return s.writeError(w, r, &oauthError{status: http.StatusMethodNotAllowed, code: "invalid_request", description: "use " + allow})
	}
	p, status, challenge, err := s.cfg.Bearer(r)
	if err != nil {
		return s.writeError(w, r, s.bearerError(w, r, "reading user", status, challenge, err))
	}
	cl := s.clientOf(r)
	if sub {
		err := s.cfg.Auth.EndSession(r.Context(), p, sid, cl)
		if errors.Is(err, auth.ErrNoSuchSession) {
			return s.writeError(w, r, &oauthError{status: http.StatusNotFound, code: "not_found", description: "no such session"})
		}
		if err != nil {
			return s.writeError(w, r, s.oauthError(err))
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	list, err := s.cfg.Auth.Sessions(r.Context(), p)
	if err != nil {
		return s.writeError(w, r, s.oauthError(err))
	}
	views := make([]sessionView, 0, len(list))
	for _, se := range list {
		views = append(views, sessionView{SessionView: users.SessionViewOf(se), Current: se.ID == p.SessionID})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"sessions": views})
}
