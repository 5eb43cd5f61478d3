package caddymodule

import (
	"net/http"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/metrics"
)

// The gateway's own endpoints (token, refresh, password, logout,
// sessions) are served by internal/endpoints; this is what the handler
// hands them.

// newEndpoints builds the endpoints' server, once the auth service is
// there.
func (h *Handler) newEndpoints() *endpoints.Server {
	return endpoints.New(endpoints.Config{
		TokenPath:      h.TokenPath,
		RefreshPath:    h.RefreshPath,
		PasswordPath:   h.PasswordPath,
		LogoutPath:     h.LogoutPath,
		SessionsPath:   h.SessionsPath,
		CookieMode:     h.Refresh == RefreshModeCookie,
		CookieName:     h.CookieName,
		CookieSameSite: h.CookieSameSite,
		AllowedOrigins: h.AllowedOrigins,
		AccessTTL:      time.Duration(h.AccessTTL),
		Discovery:      h.discovery(),
		Auth:           h.auth,
		Bearer: func(r *http.Request) (auth.Principal, int, string, error) {
			p, d := h.gate.Check(r, nil)
			return p, d.Status, d.Challenge, d.Err
		},
		LogDenial: h.gate.LogDenial,
		ClientIP:  clientIP,
		Logger:    h.logger,
		Now:       time.Now,
		Metrics:   metrics.Endpoints(),
	})
}
