package endpoints

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/reqbody"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/throttle"
)

// MaxBody is the most bytes of a request body the endpoints read; a
// larger one is refused before it reaches a password hash or the database.
const MaxBody = 8 << 10

// oauthError is an RFC 6749 section 5.2 error response.
type oauthError struct {
	status      int
	code        string
	description string
	retryAfter  int // seconds; set with 503 and 429
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func badRequest(code, desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: code, description: desc}
}

// tokenResponse is the body of a successful /token or /refresh response.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// ServeToken handles the login endpoint: the OAuth 2.0 password grant
// (RFC 6749 section 4.3) and, for standard client libraries, the
// refresh_token grant (section 6).
func (s *Server) ServeToken(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	form, oerr := s.readTokenRequest(w, r)
	if oerr != nil {
		return s.writeError(w, r, oerr)
	}
	switch form.Get("grant_type") {
	case "", "password":
		return s.passwordGrant(w, r, form)
	case "refresh_token":
		requested, err := scope.Parse(form.Get("scope"))
		if err != nil {
			return s.writeError(w, r, badRequest("invalid_scope", err.Error()))
		}
		tok, oerr := s.refreshCookie(r)
		if oerr != nil {
			return s.writeError(w, r, oerr)
		}
		if tok == "" {
			tok = form.Get("refresh_token")
		}
		if tok == "" {
			return s.writeError(w, r, badRequest("invalid_request", "refresh_token is required"))
		}
		return s.refreshGrant(w, r, tok, requested)
	default:
		return s.writeError(w, r, badRequest("unsupported_grant_type", "grant_type must be password or refresh_token"))
	}
}

// readTokenRequest applies the method, origin, size and syntax checks of
// the token endpoint and returns the parsed form.
func (s *Server) readTokenRequest(w http.ResponseWriter, r *http.Request) (url.Values, *oauthError) {
	if oerr := s.checkEndpointRequest(w, r); oerr != nil {
		return nil, oerr
	}
	if q := r.URL.Query(); q.Has("password") || q.Has("username") || q.Has("refresh_token") {
		return nil, badRequest("invalid_request", "credentials must be sent in the request body, not the query string")
	}
	mt, oerr := bodyMediaType(r)
	if oerr != nil {
		return nil, oerr
	}
	if mt != "application/x-www-form-urlencoded" {
		return nil, badRequest("invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	body, oerr := readBody(w, r)
	if oerr != nil {
		return nil, oerr
	}
	// Strict parsing (UTF-8, escapes, RFC 6749 section 3.2: no parameter
	// more than once) lives in internal/reqbody, where it is fuzzed.
	form, err := reqbody.ParseForm(body)
	if err != nil {
		return nil, badRequest("invalid_request", err.Error())
	}
	return form, nil
}

// checkEndpointRequest enforces POST, one Content-Type header at most and,
// in cookie mode, that the request comes from the gateway's own origin (or
// an allowed one): a cookie that rides along on its own must not be usable
// by another site.
func (s *Server) checkEndpointRequest(w http.ResponseWriter, r *http.Request) *oauthError {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return &oauthError{status: http.StatusMethodNotAllowed, code: "invalid_request", description: "use POST"}
	}
	if s.cfg.CookieMode && !s.sameOrigin(r) {
		return &oauthError{status: http.StatusForbidden, code: "invalid_request", description: "cross-site requests are refused"}
	}
	// Checked here, before any branch decides whether the body is read, so
	// that no endpoint answers such a request one way or another.
	if len(r.Header.Values("Content-Type")) > 1 {
		return errTwoContentTypes
	}
	return nil
}

// errTwoContentTypes answers a request with several Content-Type headers.
// Readers disagree on which one counts (Go's Header.Get takes the first,
// others the last or a join), so none is picked.
var errTwoContentTypes = badRequest("invalid_request", "the Content-Type header is given more than once")

// bodyMediaType returns the media type of the request body, from exactly
// one Content-Type header. checkEndpointRequest has refused two already;
// the check here keeps a future caller from picking one silently.
func bodyMediaType(r *http.Request) (string, *oauthError) {
	vals := r.Header.Values("Content-Type")
	if len(vals) > 1 {
		return "", errTwoContentTypes
	}
	if len(vals) == 0 {
		return "", badRequest("invalid_request", "the Content-Type header is missing")
	}
	mt, _, err := mime.ParseMediaType(vals[0])
	if err != nil {
		return "", badRequest("invalid_request", "the Content-Type header is malformed")
	}
	return mt, nil
}

// sameOrigin reports whether a browser request comes from the gateway's own
// origin or from one of allowed_origins. Origins are compared as RFC 6454
// defines them: scheme, host and port, each exactly, with the scheme's
// default port made explicit. Comparing the host alone would let
// http://host:port (a plain-http page, which a network attacker can write)
// or another port of the same host speak for the site.
func (s *Server) sameOrigin(r *http.Request) bool {
	crossSite := strings.EqualFold(r.Header.Get("Sec-Fetch-Site"), "cross-site")
	origins := r.Header.Values("Origin")
	if len(origins) == 0 {
		// not a browser, or a same-origin GET-like request
		return !crossSite
	}
	if len(origins) > 1 {
		return false
	}
	o, ok := parseOrigin(origins[0])
	if !ok {
		return false // includes "null"
	}
	// A listed origin may be on another site (cookie_same_site none), and
	// the browser then says so in Sec-Fetch-Site: the list decides.
	if s.isAllowedOrigin(o) {
		return true
	}
	if crossSite {
		return false
	}
	// The request's own origin. Behind a proxy that terminates TLS the
	// request arrives over http and its origin is http: such a site lists
	// its https origin in allowed_origins.
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	self := url.URL{Host: r.Host}
	return o == origin{scheme: scheme, host: strings.ToLower(self.Hostname()), port: portOrDefault(self.Port(), scheme)}
}

// origin is a serialized origin (RFC 6454 section 6.2) taken apart: lower
// case scheme and host, and the port always written out.
type origin struct{ scheme, host, port string }

// parseOrigin reads an Origin header value or an allowed_origins entry:
// http or https, a host, an optional port, and nothing else (no user
// info, path, query or fragment).
func parseOrigin(s string) (origin, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.User != nil || u.Path != "" || u.RawPath != "" ||
		u.ForceQuery || u.RawQuery != "" || strings.Contains(s, "#") {
		return origin{}, false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return origin{}, false
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return origin{}, false
	}
	return origin{scheme: scheme, host: host, port: portOrDefault(u.Port(), scheme)}, true
}

func portOrDefault(port, scheme string) string {
	switch {
	case port != "":
		return port
	case scheme == "https":
		return "443"
	default:
		return "80"
	}
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *oauthError) {
	if r.ContentLength > MaxBody {
		return nil, &oauthError{status: http.StatusRequestEntityTooLarge, code: "invalid_request", description: "request body too large"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &oauthError{status: http.StatusRequestEntityTooLarge, code: "invalid_request", description: "request body too large"}
		}
		return nil, badRequest("invalid_request", "reading the request body failed")
	}
	return body, nil
}

// passwordGrant logs a user in (internal/auth).
func (s *Server) passwordGrant(w http.ResponseWriter, r *http.Request, form url.Values) error {
	requested, err := scope.Parse(form.Get("scope"))
	if err != nil {
		return s.writeError(w, r, badRequest("invalid_scope", err.Error()))
	}
	toks, err := s.cfg.Auth.Login(r.Context(), form.Get("username"), form.Get("password"), requested, s.clientOf(r))
	if err != nil {
		var ae *auth.Error
		switch {
		case !errors.As(err, &ae):
		case ae.Throttled:
			s.cfg.Metrics.LoginThrottled()
		case ae.Code == auth.CodeTemporarilyUnavailable:
			s.cfg.Metrics.LoginBusy()
		case ae.Code == auth.CodeInvalidGrant:
			s.cfg.Metrics.LoginFailure()
		}
		return s.writeError(w, r, s.oauthError(err))
	}
	s.cfg.Metrics.LoginSuccess()
	return s.writeTokens(w, toks)
}

// oauthError turns an internal/auth failure into its RFC 6749 section 5.2
// response; anything else is a server error, logged here.
func (s *Server) oauthError(err error) *oauthError {
	var ae *auth.Error
	if !errors.As(err, &ae) || ae.Code == auth.CodeServerError {
		return s.serverError("token endpoint", err)
	}
	e := &oauthError{status: http.StatusBadRequest, code: ae.Code, description: ae.Description}
	switch {
	case ae.Throttled:
		e.status = http.StatusTooManyRequests
	case ae.Code == auth.CodeTemporarilyUnavailable:
		e.status = http.StatusServiceUnavailable
	case ae.Code == auth.CodeInvalidToken:
		e.status = http.StatusUnauthorized
	case ae.Code == auth.CodeInsufficientScope:
		e.status = http.StatusForbidden
	}
	if ae.RetryAfter > 0 {
		e.retryAfter = throttle.RetryAfterSeconds(ae.RetryAfter)
	}
	return e
}

// writeTokens writes a token response (RFC 6749 section 5.1), with the
// refresh token, if any, where the configuration says.
func (s *Server) writeTokens(w http.ResponseWriter, toks *auth.Tokens) error {
	resp := &tokenResponse{
		AccessToken: toks.Access,
		TokenType:   "bearer",
		ExpiresIn:   int64(s.cfg.AccessTTL / time.Second),
		Scope:       toks.Scopes.String(),
	}
	switch {
	case toks.Refresh == "":
	case !s.cfg.CookieMode:
		resp.RefreshToken = toks.Refresh
	default:
		s.setRefreshCookie(w, toks.Refresh, toks.RefreshExpires)
	}
	return writeJSON(w, http.StatusOK, resp)
}

// ServeRefresh handles the refresh endpoint: the refresh token comes from
// the cookie first, then from the JSON body's refresh_token field.
func (s *Server) ServeRefresh(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	if oerr := s.checkEndpointRequest(w, r); oerr != nil {
		return s.writeError(w, r, oerr)
	}
	tok, oerr := s.refreshCookie(r)
	if oerr != nil {
		return s.writeError(w, r, oerr)
	}
	if tok == "" && r.ContentLength != 0 {
		if tok, oerr = readRefreshJSON(w, r); oerr != nil {
			return s.writeError(w, r, oerr)
		}
	}
	if tok == "" {
		return s.writeError(w, r, badRequest("invalid_request", "no refresh token: send the cookie or a JSON body with refresh_token"))
	}
	return s.refreshGrant(w, r, tok, nil)
}

// readRefreshJSON reads refresh_token from the request's JSON body, for
// the refresh and logout endpoints. Strict JSON (no repeated refresh_token
// in any case, no trailing data) lives in internal/reqbody, where it is
// fuzzed.
func readRefreshJSON(w http.ResponseWriter, r *http.Request) (string, *oauthError) {
	mt, oerr := bodyMediaType(r)
	if oerr != nil {
		return "", oerr
	}
	if mt != "application/json" {
		return "", badRequest("invalid_request", "the body must be application/json")
	}
	body, oerr := readBody(w, r)
	if oerr != nil {
		return "", oerr
	}
	rt, err := reqbody.ParseRefreshJSON(body)
	if err != nil {
		return "", badRequest("invalid_request", err.Error())
	}
	return rt, nil
}

// refreshCookie returns the refresh cookie's value, "" when there is none.
//
// Only cookie mode reads it: in body mode the gateway never sets the
// cookie, so one that arrives was set by someone else (a sibling subdomain
// can set it with Domain=) and must not replace the token in the body.
//
// More than one cookie of the name, in one Cookie header or across several,
// is refused: a sibling subdomain can plant its own with Domain= or a
// longer Path, browsers then send both, and whichever one a reader picks,
// it may be the attacker's (a login as the attacker). Names are compared
// exactly: RFC 6265 (section 5.3) and the browsers keep cookies apart by
// their name as written, and the lookup here matches it so, so a case
// variant is another cookie that is never read and cannot stand in for
// this one.
func (s *Server) refreshCookie(r *http.Request) (string, *oauthError) {
	if !s.cfg.CookieMode {
		return "", nil
	}
	cs := r.CookiesNamed(s.cfg.CookieName)
	switch len(cs) {
	case 0:
		return "", nil
	case 1:
		return cs[0].Value, nil
	}
	return "", badRequest("invalid_request", "the refresh cookie is sent more than once")
}

// refreshGrant mints a new access token from a refresh token
// (internal/auth).
func (s *Server) refreshGrant(w http.ResponseWriter, r *http.Request, tok string, requested scope.Set) error {
	toks, err := s.cfg.Auth.Refresh(r.Context(), tok, requested, s.clientOf(r))
	if err != nil {
		s.cfg.Metrics.RefreshFailure()
		return s.writeError(w, r, s.oauthError(err))
	}
	s.cfg.Metrics.RefreshSuccess()
	return s.writeTokens(w, toks)
}

func (s *Server) serverError(what string, err error) *oauthError {
	s.cfg.Logger.Error(what, zap.Error(err))
	return &oauthError{status: http.StatusInternalServerError, code: "server_error", description: "internal error"}
}

// writeError writes an RFC 6749 section 5.2 error. The token endpoints are
// API endpoints with their own error format, so these responses do not go
// through handle_errors.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *oauthError) error {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	if c := s.cfg.Logger.Check(zap.DebugLevel, "token endpoint error"); c != nil {
		c.Write(zap.Int("status", e.status), zap.String("error", e.code), zap.String("path", r.URL.Path), zap.String("client_ip", s.cfg.ClientIP(r)))
	}
	return writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.description})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	return err
}

// noStore marks a response as uncacheable (RFC 6749 section 5.1).
func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
}
