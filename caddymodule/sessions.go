package caddymodule

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/crudauth/caddy-crudauth/internal/auth"
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
	for _, p := range []struct{ name, path string }{{"logout_path", s.LogoutPath}, {"sessions_path", s.SessionsPath},
		{"jwks_path", discoveryPath(h.JWKSPath)}, {"metadata_path", discoveryPath(h.MetadataPath)}} {
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

// checkPasswordPath validates password_path (off when empty).
func (h *Handler) checkPasswordPath() error {
	p := h.PasswordPath
	if p == "" {
		return nil
	}
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#*") {
		return fmt.Errorf("password_path: %q must be an absolute path without query or wildcard", p)
	}
	if p == h.TokenPath || p == h.RefreshPath {
		return fmt.Errorf("password_path (%q) must differ from token_path and refresh_path", p)
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
