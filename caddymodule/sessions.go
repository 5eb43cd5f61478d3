package caddymodule

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/config"
)

// Defaults of the session settings.
const (
	DefaultLogoutPath  = "/logout"
	DefaultReuseGrace  = auth.DefaultReuseGrace
	DefaultMaxSessions = auth.DefaultMaxSessions
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

// values are the settings as internal/config checks them.
func (s *SessionSettings) values() config.Sessions {
	return config.Sessions{
		RotateRefresh:     s.RotateRefresh,
		RefreshReuseGrace: time.Duration(s.RefreshReuseGrace),
		RefreshSliding:    s.RefreshSliding,
		MaxSessions:       s.MaxSessions,
		LogoutPath:        s.LogoutPath,
		SessionsPath:      s.SessionsPath,
	}
}

// policy is the settings as internal/auth takes them.
func (s *SessionSettings) policy() auth.SessionPolicy {
	return s.values().Policy()
}

// subdirectives are the session subdirectives.
func (s *SessionSettings) subdirectives() subdirectives {
	return subdirectives{
		"rotate_refresh": func(d *caddyfile.Dispenser, name string) error {
			on := new(bool)
			if err := onOff(on)(d, name); err != nil {
				return err
			}
			s.RotateRefresh = on
			return nil
		},
		"refresh_reuse_grace": oneArg(s.parseReuseGrace),
		"refresh_sliding":     onOff(&s.RefreshSliding),
		"max_sessions":        positiveIntArg(&s.MaxSessions),
		"logout_path":         pathArg(&s.LogoutPath, false),
		"sessions_path":       pathArg(&s.SessionsPath, false),
	}
}

// parseReuseGrace parses refresh_reuse_grace, which takes 0 (unlike the
// other durations) and has a bound.
func (s *SessionSettings) parseReuseGrace(d *caddyfile.Dispenser, _, v string) error {
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur < 0 || dur > config.MaxReuseGrace {
		return d.Errf("refresh_reuse_grace: %q is not a duration from 0s to %s", v, config.MaxReuseGrace)
	}
	if dur == 0 {
		// 0 in JSON means the default; a grace of none is 1ns.
		dur = 1
	}
	s.RefreshReuseGrace = caddy.Duration(dur)
	return nil
}
