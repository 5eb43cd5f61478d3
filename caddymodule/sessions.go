package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/reqbody"
)

// Defaults of the session settings.
const (
	DefaultLogoutPath  = "/logout"
	DefaultReuseGrace  = auth.DefaultReuseGrace
	DefaultMaxSessions = auth.DefaultMaxSessions
	// maxReuseGrace bounds refresh_reuse_grace: the grace is a window in
	// which a replayed token goes unnoticed.
	maxReuseGrace = 5 * time.Minute
)

// SessionSettings are how the handler's sessions behave: one session per
// login, whose refresh token rotates at every refresh.
type SessionSettings struct {
	// Whether every refresh spends the refresh token presented and hands
	// out its successor, so that a stolen refresh token that is used after
	// its owner refreshed revokes the session. Default: on.
	RotateRefresh *bool `json:"rotate_refresh,omitempty"`

	// How long a spent refresh token still gets its successor instead of
	// revoking the session: two tabs that refresh at the same moment both
	// succeed. Default: 10s; at most 5m.
	RefreshReuseGrace caddy.Duration `json:"refresh_reuse_grace,omitempty"`

	// Whether a refresh moves the session's end to refresh_ttl from now.
	// Default: off, a session ends refresh_ttl after its login.
	RefreshSliding bool `json:"refresh_sliding,omitempty"`

	// The most sessions a user holds at once; a login beyond it ends the
	// least recently used one. Default: 50.
	MaxSessions int `json:"max_sessions,omitempty"`

	// Path of the logout endpoint (POST). Default: /logout.
	LogoutPath string `json:"logout_path,omitempty"`

	// Path of the signed-in user's session list (GET) and of the ending of
	// one of them (DELETE sessions_path/SID). Default: none, off.
	SessionsPath string `json:"sessions_path,omitempty"`
}

func (s *SessionSettings) setDefaults() {
	orDefault(&s.RefreshReuseGrace, caddy.Duration(DefaultReuseGrace))
	orDefault(&s.MaxSessions, DefaultMaxSessions)
	orDefault(&s.LogoutPath, DefaultLogoutPath)
}

// policy is the settings as internal/auth takes them.
func (s *SessionSettings) policy() auth.SessionPolicy {
	return auth.SessionPolicy{
		Rotate:     s.RotateRefresh == nil || *s.RotateRefresh,
		ReuseGrace: time.Duration(s.RefreshReuseGrace),
		Sliding:    s.RefreshSliding,
		Max:        s.MaxSessions,
	}
}

// checkSessions validates the session settings against the handler's
// other endpoints.
func (h *Handler) checkSessions() error {
	s := &h.SessionSettings
	if s.RefreshReuseGrace < 0 || time.Duration(s.RefreshReuseGrace) > maxReuseGrace {
		return fmt.Errorf("refresh_reuse_grace: %s is out of range (0s to %s)", time.Duration(s.RefreshReuseGrace), maxReuseGrace)
	}
	if s.MaxSessions < 0 {
		return errors.New("max_sessions must be positive")
	}
	taken := map[string]string{h.TokenPath: "token_path", h.RefreshPath: "refresh_path"}
	if h.PasswordPath != "" {
		taken[h.PasswordPath] = "password_path"
	}
	for _, p := range []struct{ name, path string }{{"logout_path", s.LogoutPath}, {"sessions_path", s.SessionsPath}} {
		if p.path == "" {
			continue
		}
		if err := checkSessionPath(p.name, p.path); err != nil {
			return err
		}
		if other, ok := taken[p.path]; ok {
			return fmt.Errorf("%s and %s must differ (both are %q)", p.name, other, p.path)
		}
		taken[p.path] = p.name
	}
	return nil
}

// checkSessionPath checks the form of an endpoint path: the Caddyfile
// refuses a bad one at its line, Validate again for JSON configs.
func checkSessionPath(name, p string) error {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#*") || strings.HasSuffix(p, "/") {
		// "/" itself included: sessions_path / would take every path
		// starting with // from the backend.
		return fmt.Errorf("%s: %q must be an absolute path other than /, without query, wildcard or trailing slash", name, p)
	}
	return nil
}

// unmarshalSub parses one session subdirective.
func (s *SessionSettings) unmarshalSub(d *caddyfile.Dispenser, sub string) error {
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	switch sub {
	case "rotate_refresh", "refresh_sliding":
		var on bool
		switch v {
		case "on":
			on = true
		case "off":
		default:
			return d.Errf("%s: %q is not one of on, off", sub, v)
		}
		if sub == "rotate_refresh" {
			s.RotateRefresh = &on
		} else {
			s.RefreshSliding = on
		}
	case "refresh_reuse_grace":
		dur, err := caddy.ParseDuration(v)
		if err != nil || dur < 0 || dur > maxReuseGrace {
			return d.Errf("refresh_reuse_grace: %q is not a duration from 0s to %s", v, maxReuseGrace)
		}
		if dur == 0 {
			// 0 in JSON means the default; a grace of none is 1ns.
			dur = 1
		}
		s.RefreshReuseGrace = caddy.Duration(dur)
	case "max_sessions":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return d.Errf("max_sessions: %q is not a positive number", v)
		}
		s.MaxSessions = n
	case "logout_path", "sessions_path":
		if err := checkSessionPath(sub, v); err != nil {
			return d.Err(err.Error())
		}
		if sub == "logout_path" {
			s.LogoutPath = v
		} else {
			s.SessionsPath = v
		}
	default:
		return d.Errf("unrecognized subdirective %q", sub)
	}
	return nil
}

// sessionSubdirectives are the subdirectives unmarshalSub takes.
var sessionSubdirectives = []string{"rotate_refresh", "refresh_reuse_grace", "refresh_sliding", "max_sessions",
	"logout_path", "sessions_path"}

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
func (h *Handler) logoutCookieName() string {
	if rest, ok := strings.CutPrefix(h.CookieName, "__Host-"); ok {
		return "__Secure-" + rest + "_logout"
	}
	return h.CookieName + "_logout"
}

// hasLogoutCookie reports whether the logout cookie is set: there is a
// logout path the refresh cookie does not reach.
func (h *Handler) hasLogoutCookie() bool {
	return h.LogoutPath != "" && h.LogoutPath != h.RefreshPath
}

// tokenCookie is one of the two cookies carrying value until expires; an
// empty value clears it (Max-Age=0).
func (h *Handler) tokenCookie(name, path, value string, expires time.Time) *http.Cookie {
	c := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     path,
		HttpOnly: true,
		Secure:   true,
		SameSite: h.sameSiteMode(),
		MaxAge:   -1, // Max-Age=0 on the wire
	}
	if value != "" {
		c.MaxAge = max(int(time.Until(expires)/time.Second), 1)
	}
	return c
}

// setRefreshCookie sets (or, with an empty value, clears) the refresh
// cookie and the logout cookie.
func (h *Handler) setRefreshCookie(w http.ResponseWriter, value string, expires time.Time) {
	http.SetCookie(w, h.tokenCookie(h.CookieName, h.RefreshPath, value, expires))
	if h.hasLogoutCookie() {
		http.SetCookie(w, h.tokenCookie(h.logoutCookieName(), h.LogoutPath, value, expires))
	}
}

// serveLogout handles POST logout_path: it ends the session of the refresh
// token (read as the refresh endpoint reads it: the cookie first, then the
// JSON body's refresh_token) and clears the cookie; with all=true in the
// query and a valid access token it ends every session of the user. It is
// idempotent: 204 whether or not the session was still there.
func (h *Handler) serveLogout(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	if oerr := h.checkEndpointRequest(w, r); oerr != nil {
		return h.writeError(w, r, oerr)
	}
	cl := clientOf(r)
	if h.Refresh == RefreshModeCookie {
		// Whatever comes next, the client asked to be signed out.
		h.setRefreshCookie(w, "", time.Time{})
	}
	q := r.URL.Query()
	if all := q.Get("all"); all != "" || len(q["all"]) > 0 {
		if all != "true" || len(q["all"]) > 1 {
			return h.writeError(w, r, badRequest("invalid_request", "all must be given once, as all=true"))
		}
		p, status, challenge, err := h.authenticate(r, nil)
		if err != nil {
			return h.bearerEndpointError(w, r, status, challenge, err)
		}
		if _, err := h.auth.LogoutAll(r.Context(), p, cl); err != nil {
			return h.writeError(w, r, h.oauthError(err))
		}
		logoutsTotal.WithLabelValues("all").Inc()
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	// Every token the cookies carry: a cookie planted by a sibling
	// subdomain beside the user's own must not keep the user's session
	// alive after they pressed "sign out", and ending the planter's own
	// session harms no one.
	var toks []string
	if h.Refresh == RefreshModeCookie {
		for _, name := range []string{h.logoutCookieName(), h.CookieName} {
			for _, c := range r.CookiesNamed(name) {
				if c.Value != "" && !slices.Contains(toks, c.Value) {
					toks = append(toks, c.Value)
				}
			}
		}
	}
	if len(toks) == 0 && r.ContentLength != 0 {
		mt, oerr := bodyMediaType(r)
		if oerr != nil {
			return h.writeError(w, r, oerr)
		}
		if mt != "application/json" {
			return h.writeError(w, r, badRequest("invalid_request", "the body must be application/json"))
		}
		body, oerr := readBody(w, r)
		if oerr != nil {
			return h.writeError(w, r, oerr)
		}
		tok, oerr := parseRefreshBody(body)
		if oerr != nil {
			return h.writeError(w, r, oerr)
		}
		if tok != "" {
			toks = append(toks, tok)
		}
	}
	if len(toks) == 0 {
		if h.Refresh == RefreshModeCookie {
			// No cookie: nothing to end, and the cookies are cleared.
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		return h.writeError(w, r, badRequest("invalid_request", "no refresh token: send a JSON body with refresh_token"))
	}
	var refused error
	ended := 0
	for _, tok := range toks {
		err := h.auth.Logout(r.Context(), tok, cl)
		var ae *auth.Error
		switch {
		case err == nil:
			ended++
		case errors.As(err, &ae) && ae.Code == auth.CodeInvalidGrant:
			refused = err
		default:
			return h.writeError(w, r, h.oauthError(err))
		}
	}
	if ended == 0 {
		return h.writeError(w, r, h.oauthError(refused))
	}
	logoutsTotal.WithLabelValues("session").Inc()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// parseRefreshBody reads refresh_token from a JSON body strictly
// (internal/reqbody, where it is fuzzed).
func parseRefreshBody(body []byte) (string, *oauthError) {
	rt, err := reqbody.ParseRefreshJSON(body)
	if err != nil {
		return "", badRequest("invalid_request", err.Error())
	}
	return rt, nil
}

// bearerEndpointError answers a failed bearer check on one of the
// gateway's own endpoints in the endpoints' error format.
func (h *Handler) bearerEndpointError(w http.ResponseWriter, r *http.Request, status int, challenge string, err error) error {
	w.Header().Set("WWW-Authenticate", challenge)
	code, desc := "invalid_token", "the access token is invalid, expired or revoked"
	switch {
	case errors.Is(err, errNoToken):
		code, desc = "invalid_request", "an access token is required (Authorization: Bearer)"
	case status >= 500:
		return h.writeError(w, r, h.serverError("reading user", err))
	case status == http.StatusBadRequest:
		code, desc = "invalid_request", err.Error()
	}
	h.logDenial(r, status, err)
	return h.writeError(w, r, &oauthError{status: status, code: code, description: desc})
}

// sessionView is one session as the signed-in user sees it.
type sessionView struct {
	ID         string    `json:"id"`
	Current    bool      `json:"current"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	UserAgent  string    `json:"user_agent"`
	Address    string    `json:"address"`
}

// serveSessions handles sessions_path: GET lists the signed-in user's
// sessions, the current one marked; DELETE sessions_path/SID ends one of
// them. Both need a valid access token; they read no cookie.
func (h *Handler) serveSessions(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	sid, sub := strings.CutPrefix(r.URL.Path, h.SessionsPath+"/")
	allow := http.MethodGet
	if sub {
		allow = http.MethodDelete
	}
	if r.Method != allow {
		w.Header().Set("Allow", allow)
		return h.writeError(w, r, &oauthError{status: http.StatusMethodNotAllowed, code: "invalid_request", description: "use " + allow})
	}
	p, status, challenge, err := h.authenticate(r, nil)
	if err != nil {
		return h.bearerEndpointError(w, r, status, challenge, err)
	}
	cl := clientOf(r)
	if sub {
		err := h.auth.EndSession(r.Context(), p, sid, cl)
		if errors.Is(err, auth.ErrNoSuchSession) {
			return h.writeError(w, r, &oauthError{status: http.StatusNotFound, code: "not_found", description: "no such session"})
		}
		if err != nil {
			return h.writeError(w, r, h.oauthError(err))
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	list, err := h.auth.Sessions(r.Context(), p)
	if err != nil {
		return h.writeError(w, r, h.oauthError(err))
	}
	views := make([]sessionView, 0, len(list))
	for _, s := range list {
		views = append(views, sessionView{ID: s.ID, Current: s.ID == p.SessionID, CreatedAt: s.CreatedAt,
			LastUsedAt: s.LastUsedAt, ExpiresAt: s.ExpiresAt, UserAgent: s.UserAgent, Address: s.Address})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"sessions": views})
}
