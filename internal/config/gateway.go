// Package config judges a gateway's configuration from its values alone,
// before anything is opened or resolved: the checks that Provision and
// Validate run, and the Caddyfile parser where it can refuse a value at its
// line. Each message names the Caddyfile and JSON field, so an operator
// finds the setting to fix; callers and tests match on these messages, so
// they do not change. The values come with the handler's defaults set.
package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/headers"
)

// Where the refresh token travels (the refresh setting).
const (
	RefreshModeCookie = "cookie"
	RefreshModeBody   = "body"
)

const (
	// PathOff turns jwks_path or metadata_path off.
	PathOff = "off"
	// MaxReuseGrace bounds refresh_reuse_grace: the grace is a window in
	// which a replayed token goes unnoticed.
	MaxReuseGrace = 5 * time.Minute
	// MaxJWKSMaxAge caps the JWKS's Cache-Control max-age. The max-age is
	// also at most half of key_publish_delay, so that a cache that fetched
	// the set just before a rotation still holds the new key before it
	// signs.
	MaxJWKSMaxAge = 5 * time.Minute
)

// Gateway is what the static checks read of a handler's configuration,
// defaults set.
type Gateway struct {
	AccessTTL, RefreshTTL time.Duration
	Refresh               string // RefreshModeCookie or RefreshModeBody
	TokenPath             string
	RefreshPath           string
	PasswordPath          string // "": off
	CookieName            string
	CookieSameSite        string
	AllowedOrigins        []string
	UserIDHeader          string
	UserNameHeader        string
	ScopesHeader          string
	StripHeaders          []string
	Sessions              Sessions
	Discovery             Discovery
	Realm                 Realm // the handler's own realm settings
}

// Sessions are the session settings.
type Sessions struct {
	RotateRefresh     *bool // nil: on
	RefreshReuseGrace time.Duration
	RefreshSliding    bool
	MaxSessions       int
	LogoutPath        string
	SessionsPath      string // "": off
}

// Discovery are the paths of the JWKS and metadata endpoints, each PathOff
// when it is off.
type Discovery struct {
	JWKSPath, MetadataPath string
}

// Check rejects unsafe or contradictory settings that need nothing but
// the config itself. Each message names the field.
func (g *Gateway) Check() error {
	if g.AccessTTL < 0 || g.RefreshTTL < 0 {
		return errors.New("access_ttl and refresh_ttl must be positive")
	}
	if g.AccessTTL > g.RefreshTTL {
		return fmt.Errorf("access_ttl (%s) must not be longer than refresh_ttl (%s)", g.AccessTTL, g.RefreshTTL)
	}
	if g.Refresh != RefreshModeCookie && g.Refresh != RefreshModeBody {
		return fmt.Errorf("refresh: %q is not one of cookie, body", g.Refresh)
	}
	for _, f := range []named[string]{{"token_path", g.TokenPath}, {"refresh_path", g.RefreshPath}} {
		if !strings.HasPrefix(f.v, "/") || strings.ContainsAny(f.v, "?#*") {
			return fmt.Errorf("%s: %q must be an absolute path without query or wildcard", f.name, f.v)
		}
	}
	if g.TokenPath == g.RefreshPath {
		return fmt.Errorf("token_path and refresh_path must differ (both are %q)", g.TokenPath)
	}
	if err := g.checkPasswordPath(); err != nil {
		return err
	}
	if err := g.Discovery.Check(); err != nil {
		return err
	}
	if err := g.checkSessions(); err != nil {
		return err
	}
	if err := g.Realm.Check(); err != nil {
		return err
	}
	if err := headers.CheckCookieName(g.CookieName, g.RefreshPath); err != nil {
		return fmt.Errorf("cookie_name: %w", err)
	}
	// internal/endpoints serves the cookie, so it judges its SameSite.
	ep := endpoints.Config{CookieMode: g.Refresh == RefreshModeCookie, CookieSameSite: g.CookieSameSite, AllowedOrigins: g.AllowedOrigins}
	if err := ep.CheckSameSite(); err != nil {
		return err
	}
	for _, o := range g.AllowedOrigins {
		if !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") || strings.HasSuffix(o, "/") {
			return fmt.Errorf("allowed_origins: %q must be scheme://host[:port], with no path", o)
		}
	}
	for _, f := range []named[string]{{"user_id_header", g.UserIDHeader}, {"user_name_header", g.UserNameHeader}, {"scopes_header", g.ScopesHeader}} {
		if err := headers.CheckIdentityName(f.v); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	for _, name := range g.StripHeaders {
		if err := headers.CheckToken(name); err != nil {
			return fmt.Errorf("strip_headers: %w", err)
		}
	}
	names := []string{headers.Normalize(g.UserIDHeader), headers.Normalize(g.UserNameHeader), headers.Normalize(g.ScopesHeader)}
	slices.Sort(names)
	if len(slices.Compact(names)) != 3 {
		return errors.New("user_id_header, user_name_header and scopes_header must be three different headers")
	}
	return nil
}

// checkPasswordPath validates password_path (off when empty).
func (g *Gateway) checkPasswordPath() error {
	p := g.PasswordPath
	if p == "" {
		return nil
	}
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#*") {
		return fmt.Errorf("password_path: %q must be an absolute path without query or wildcard", p)
	}
	if p == g.TokenPath || p == g.RefreshPath {
		return fmt.Errorf("password_path (%q) must differ from token_path and refresh_path", p)
	}
	return nil
}

// checkSessions validates the session settings against the handler's
// other endpoints.
func (g *Gateway) checkSessions() error {
	s := &g.Sessions
	if s.RefreshReuseGrace < 0 || s.RefreshReuseGrace > MaxReuseGrace {
		return fmt.Errorf("refresh_reuse_grace: %s is out of range (0s to %s)", s.RefreshReuseGrace, MaxReuseGrace)
	}
	if s.MaxSessions < 0 {
		return errors.New("max_sessions must be positive")
	}
	taken := map[string]string{g.TokenPath: "token_path", g.RefreshPath: "refresh_path"}
	if g.PasswordPath != "" {
		taken[g.PasswordPath] = "password_path"
	}
	for _, p := range []struct{ name, path string }{{"logout_path", s.LogoutPath}, {"sessions_path", s.SessionsPath},
		{"jwks_path", DiscoveryPath(g.Discovery.JWKSPath)}, {"metadata_path", DiscoveryPath(g.Discovery.MetadataPath)}} {
		if p.path == "" {
			continue
		}
		if err := CheckEndpointPath(p.name, p.path); err != nil {
			return err
		}
		if other, ok := taken[p.path]; ok {
			return fmt.Errorf("%s and %s must differ (both are %q)", p.name, other, p.path)
		}
		taken[p.path] = p.name
	}
	return nil
}

// Policy is the session settings as internal/auth takes them.
func (s Sessions) Policy() auth.SessionPolicy {
	return auth.SessionPolicy{
		Rotate:     s.RotateRefresh == nil || *s.RotateRefresh,
		ReuseGrace: s.RefreshReuseGrace,
		Sliding:    s.RefreshSliding,
		Max:        s.MaxSessions,
	}
}

// CheckEndpointPath checks the form of the path p of the endpoint setting
// name (logout_path, sessions_path, jwks_path, metadata_path): the
// Caddyfile refuses a bad one at its line, Validate again for JSON configs.
func CheckEndpointPath(name, p string) error {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#*") || strings.HasSuffix(p, "/") {
		// "/" itself included: sessions_path / would take every path
		// starting with // from the backend.
		return fmt.Errorf("%s: %q must be an absolute path other than /, without query, wildcard or trailing slash", name, p)
	}
	return nil
}

// Check checks the two discovery paths' form; Gateway.Check also checks
// that they collide with no other endpoint.
func (d *Discovery) Check() error {
	for _, p := range []struct{ name, path string }{{"jwks_path", d.JWKSPath}, {"metadata_path", d.MetadataPath}} {
		if p.path == "" || p.path == PathOff {
			continue
		}
		if err := CheckEndpointPath(p.name, p.path); err != nil {
			return err
		}
	}
	return nil
}

// DiscoveryPath returns the discovery endpoint path p, or "" when it is
// off.
func DiscoveryPath(p string) string {
	if p == PathOff {
		return ""
	}
	return p
}

// JWKSMaxAge is the JWKS's Cache-Control max-age for a realm whose
// rotations publish a key delay before it signs.
func JWKSMaxAge(delay time.Duration) time.Duration {
	return min(MaxJWKSMaxAge, (delay / 2).Truncate(time.Second))
}

// named is a setting and its name, for checks that walk several in the
// order a config lists them: with two of them wrong, the same one is
// reported every time.
type named[T any] struct {
	name string
	v    T
}
