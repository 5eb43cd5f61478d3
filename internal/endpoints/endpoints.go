// Package endpoints serves the gateway's own HTTP endpoints: the login
// (token) and refresh endpoints, the self-service password change, logout
// and the session list, with their cookies, their CORS answers and their
// RFC 6749 error format. It knows nothing of Caddy: the handler routes a
// request here and provides the bearer check, the client's address and the
// metrics.
package endpoints

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/headers"
)

// Endpoint is what the gateway does with a request: serve one of its own
// endpoints, or (None) judge it by the rules and pass it on.
type Endpoint int

const (
	None Endpoint = iota
	Token
	Refresh
	Password
	Logout
	Sessions
	JWKS
	Metadata
)

// ErrNoToken is the reason Config.Bearer gives when the request carries no
// bearer token.
var ErrNoToken = errors.New("no bearer token")

// Config is what the endpoints need, set once when the handler is
// provisioned.
type Config struct {
	// Paths of the endpoints; PasswordPath, LogoutPath and SessionsPath
	// are "" when off.
	TokenPath, RefreshPath, PasswordPath, LogoutPath, SessionsPath string

	// CookieMode: the refresh token travels in the refresh cookie, not in
	// the JSON body.
	CookieMode bool
	// CookieName is the refresh cookie's name.
	CookieName string
	// CookieSameSite is the cookies' SameSite: SameSiteStrict (also for
	// ""), SameSiteLax or SameSiteNone.
	CookieSameSite string
	// AllowedOrigins are the origins besides the request's own that may
	// call the endpoints from a browser.
	AllowedOrigins []string

	// AccessTTL is the access tokens' lifetime, for expires_in.
	AccessTTL time.Duration

	// Discovery configures the JWKS and metadata endpoints.
	Discovery Discovery

	// Auth logs in, refreshes, changes passwords and ends sessions.
	Auth *auth.Service
	// Bearer checks the request's access token, as the handler does for
	// a route without scopes. On failure it returns the status, the
	// WWW-Authenticate challenge and the reason; ErrNoToken when there is
	// no bearer token.
	Bearer func(*http.Request) (auth.Principal, int, string, error)
	// LogDenial logs a refused bearer check as the handler does.
	LogDenial func(r *http.Request, status int, err error)
	// ClientIP is the client's address as the server determined it.
	ClientIP func(*http.Request) string

	Logger  *zap.Logger
	Metrics Metrics
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// Metrics counts the endpoints' outcomes; a nil func counts nothing.
type Metrics struct {
	LoginSuccess, LoginFailure, LoginBusy, LoginThrottled func()
	RefreshSuccess, RefreshFailure                        func()
	PasswordChangeSuccess, PasswordChangeFailure          func()
	LogoutSession, LogoutAll                              func()
}

// Server serves the endpoints. It is built once, by New, and never
// changes after, but for the log of cross-site origins.
type Server struct {
	cfg Config
	// logoutName is the logout cookie's name (logoutCookieName).
	logoutName string
	// the allowed origins already logged as cross-site (crossSiteCookie):
	// one log line per origin, not one per request
	crossSiteLogged sync.Map
}

// New builds the Server of cfg.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClientIP == nil {
		cfg.ClientIP = func(r *http.Request) string { return r.RemoteAddr }
	}
	if cfg.LogDenial == nil {
		cfg.LogDenial = func(*http.Request, int, error) {}
	}
	m := &cfg.Metrics
	for _, f := range []*func(){&m.LoginSuccess, &m.LoginFailure, &m.LoginBusy, &m.LoginThrottled,
		&m.RefreshSuccess, &m.RefreshFailure, &m.PasswordChangeSuccess, &m.PasswordChangeFailure,
		&m.LogoutSession, &m.LogoutAll} {
		if *f == nil {
			*f = func() {}
		}
	}
	return &Server{cfg: cfg, logoutName: logoutCookieName(cfg.CookieName)}
}

// StripCookies removes the refresh and logout cookies from a request that
// goes on to a backend: the refresh token is the gateway's own business.
func (s *Server) StripCookies(r *http.Request) {
	headers.StripCookie(r, s.cfg.CookieName)
	headers.StripCookie(r, s.logoutName)
}

// clientOf is who sends r, as internal/auth records it.
func (s *Server) clientOf(r *http.Request) auth.Client {
	return auth.Client{IP: s.cfg.ClientIP(r), UserAgent: r.UserAgent()}
}
