package endpoints

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/site"
)

// CORS for single-page apps, and the SameSite attribute of the refresh
// cookie.
//
// A CORS preflight (Fetch standard, "CORS-preflight request") never carries
// credentials, so a browser cannot send a token with it: to a route of the
// rules it goes on to the next handler without one, and without identity
// headers. The gateway's own endpoints answer their preflights themselves,
// and add the CORS response headers for allowed_origins to every answer,
// errors included, so that the app can read them.

// Values of cookie_same_site.
const (
	SameSiteStrict = "strict"
	SameSiteLax    = "lax"
	SameSiteNone   = "none"
)

// ownEndpoint is what CORS needs to know of one of the gateway's own
// endpoints.
type ownEndpoint struct {
	// methods is the Access-Control-Allow-Methods value of its preflights.
	methods string
	// cookie: the endpoint reads or sets the refresh cookie, so in cookie
	// mode an origin the cookie cannot reach is refused (crossSiteCookie).
	cookie bool
}

// ownEndpoints lists the gateway's own endpoints for CORS, one line each.
// An endpoint that is missing here gets no CORS handling: its preflights
// fall through to its own method check.
var ownEndpoints = map[Endpoint]ownEndpoint{
	Token:    {methods: http.MethodPost, cookie: true},
	Refresh:  {methods: http.MethodPost, cookie: true},
	Password: {methods: http.MethodPost, cookie: true}, // answers with a new pair
	Logout:   {methods: http.MethodPost, cookie: true},
	Sessions: {methods: "GET, DELETE"},
}

const (
	// corsAllowHeaders are the request headers the endpoints read that a
	// browser does not send without asking (Authorization: password_path;
	// Content-Type: a JSON refresh body).
	corsAllowHeaders = "Content-Type, Authorization"
	// corsMaxAge is how long a browser may reuse a preflight's answer.
	// Chromium caps it at two hours, Firefox at one day.
	corsMaxAge = 10 * time.Minute
)

// IsPreflight reports whether r is a CORS preflight: OPTIONS with one
// Origin and an Access-Control-Request-Method. A browser sends it without a
// body; one with a body is not a preflight (a backend might read the body
// as something else) and stays a bearer request.
func IsPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions &&
		len(r.Header.Values("Origin")) == 1 &&
		r.Header.Get("Access-Control-Request-Method") != "" &&
		r.ContentLength == 0 && len(r.TransferEncoding) == 0
}

// CORS applies CORS to a request for one of the gateway's own
// endpoints, before the endpoint sees it. It answers a preflight itself
// (done is true). To any other request from an allowed origin it adds the
// CORS response headers, and in cookie mode it refuses one from an origin
// that the refresh cookie cannot reach (done is true); the rest is the
// endpoint's.
func (s *Server) CORS(w http.ResponseWriter, r *http.Request, ep Endpoint) (done bool, err error) {
	info, ok := ownEndpoints[ep]
	if !ok {
		return false, nil
	}
	// The answer depends on Origin, whether it grants anything or not.
	w.Header().Add("Vary", "Origin")
	o, allowed := s.allowedOrigin(r)
	if IsPreflight(r) {
		var oerr *oauthError
		if allowed {
			oerr = s.crossSiteCookie(r, o, info)
		} else {
			// Without CORS headers the browser blocks the request that
			// would follow.
			oerr = &oauthError{status: http.StatusForbidden, code: "invalid_request",
				description: "the origin is not in allowed_origins"}
		}
		if oerr != nil {
			noStore(w)
			return true, s.writeError(w, r, oerr)
		}
		hdr := w.Header()
		setCORSOrigin(hdr, r)
		hdr.Set("Access-Control-Allow-Methods", info.methods)
		hdr.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		hdr.Set("Access-Control-Max-Age", strconv.Itoa(int(corsMaxAge/time.Second)))
		w.WriteHeader(http.StatusNoContent)
		return true, nil
	}
	if !allowed {
		return false, nil
	}
	setCORSOrigin(w.Header(), r)
	if oerr := s.crossSiteCookie(r, o, info); oerr != nil {
		noStore(w)
		return true, s.writeError(w, r, oerr)
	}
	return false, nil
}

// setCORSOrigin grants the request's origin (already found in
// allowed_origins) the response, with credentials: the refresh cookie
// travels only on credentialed requests.
func setCORSOrigin(hdr http.Header, r *http.Request) {
	hdr.Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
	hdr.Set("Access-Control-Allow-Credentials", "true")
}

// allowedOrigin returns the request's one Origin, parsed, and whether it is
// in allowed_origins.
func (s *Server) allowedOrigin(r *http.Request) (origin, bool) {
	vals := r.Header.Values("Origin")
	if len(vals) != 1 {
		return origin{}, false
	}
	o, ok := parseOrigin(vals[0])
	return o, ok && s.isAllowedOrigin(o)
}

func (s *Server) isAllowedOrigin(o origin) bool {
	for _, a := range s.cfg.AllowedOrigins {
		if ao, ok := parseOrigin(a); ok && ao == o {
			return true
		}
	}
	return false
}

// crossSiteCookie refuses, in cookie mode with a SameSite=strict or lax
// cookie, a request to a cookie endpoint from an allowed origin that is not
// same-site with the gateway: the browser would take the login and then
// never send the cookie back, and the app would fail at its first refresh
// with nothing to say why.
//
// The gateway's own origin is the request's: its host, and https when it
// came over TLS. Without TLS the scheme the browser saw is unknown (a proxy
// in front may have terminated TLS), so only the domains are compared; the
// load-time check (Config.CheckSameSite) still holds the schemes of
// allowed_origins to one site.
func (s *Server) crossSiteCookie(r *http.Request, o origin, info ownEndpoint) *oauthError {
	if !s.cfg.CookieMode || !info.cookie || s.cfg.sameSite() == SameSiteNone {
		return nil
	}
	host := (&url.URL{Host: r.Host}).Hostname()
	if r.TLS != nil && site.Same(o.scheme, o.host, "https", host) || r.TLS == nil && site.SameDomain(o.host, host) {
		return nil
	}
	serialized := o.String()
	if _, seen := s.crossSiteLogged.LoadOrStore(serialized, true); !seen {
		s.cfg.Logger.Error("an allowed origin is cross-site with the gateway, the refresh cookie cannot reach it: set cookie_same_site none, or serve the app from the gateway's site",
			zap.String("origin", serialized), zap.String("host", host), zap.String("cookie_same_site", s.cfg.sameSite()))
	}
	return badRequest("invalid_request", fmt.Sprintf(
		"origin %s is cross-site with this gateway, and its refresh cookie is SameSite=%s: set cookie_same_site none, or serve the app from the gateway's site",
		serialized, s.cfg.sameSite()))
}

// String serializes the origin, with the scheme's default port left out.
func (o origin) String() string {
	if o.port == portOrDefault("", o.scheme) {
		if strings.Contains(o.host, ":") {
			return o.scheme + "://[" + o.host + "]"
		}
		return o.scheme + "://" + o.host
	}
	return o.scheme + "://" + net.JoinHostPort(o.host, o.port)
}

// sameSite is cookie_same_site, strict when not set.
func (c *Config) sameSite() string {
	if c.CookieSameSite == "" {
		return SameSiteStrict
	}
	return c.CookieSameSite
}

// sameSiteMode is the refresh cookie's SameSite attribute.
func (s *Server) sameSiteMode() http.SameSite {
	switch s.cfg.sameSite() {
	case SameSiteLax:
		return http.SameSiteLaxMode
	case SameSiteNone:
		return http.SameSiteNoneMode
	}
	return http.SameSiteStrictMode
}

// CheckSameSite checks cookie_same_site and, in cookie mode with a
// strict or lax cookie, that allowed_origins lie on one site. A handler
// cannot know the site it serves at load (Caddy hands it no site address),
// but two origins of different sites cannot both be same-site with it: one
// of them could log in and never refresh. The request-time check
// (crossSiteCookie) catches a single origin on another site.
func (c *Config) CheckSameSite() error {
	ss := c.sameSite()
	if ss != SameSiteStrict && ss != SameSiteLax && ss != SameSiteNone {
		return fmt.Errorf("cookie_same_site: %q is not one of strict, lax, none", c.CookieSameSite)
	}
	if !c.CookieMode || ss == SameSiteNone {
		return nil
	}
	var first origin
	var firstRaw string
	for _, a := range c.AllowedOrigins {
		o, ok := parseOrigin(a)
		if !ok {
			continue // never matches an Origin header
		}
		if firstRaw == "" {
			first, firstRaw = o, a
			continue
		}
		if !site.Same(first.scheme, first.host, o.scheme, o.host) {
			return errors.New("allowed_origins: " + firstRaw + " and " + a + " are not same-site, so one of them is cross-site with the gateway and never gets its SameSite=" +
				ss + " refresh cookie back: set cookie_same_site none, or serve the app from the gateway's site")
		}
	}
	return nil
}
