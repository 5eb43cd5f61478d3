// Package metrics holds the gateway's Prometheus collectors and the
// functions that count into them. Caddy gives every config load a fresh
// registry; Register adds these collectors to it.
package metrics

import (
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/endpoints"
)

// Prometheus metrics. The collectors are package-level and created once:
// Caddy gives every config load a fresh registry, and the same collectors
// are registered into each (Register ignores a repeat registration),
// so counts run on across reloads and never clash. Every series a request
// can touch is resolved here, once, so the per-request cost is one atomic
// add with no allocation.
var (
	loginsTotal          = counterVec("logins_total", "Password-grant logins at the token endpoint, by outcome.", "outcome")
	refreshesTotal       = counterVec("refreshes_total", "Refresh-token grants (refresh endpoint and grant_type=refresh_token), by outcome.", "outcome")
	bearerChecksTotal    = counterVec("bearer_checks_total", "Bearer-token checks of proxied requests, by outcome.", "outcome")
	passwordChangesTotal = counterVec("password_changes_total", "Self-service password changes at the password endpoint, by outcome.", "outcome")
	logoutsTotal         = counterVec("logouts_total", "Logouts at the logout endpoint, by kind (session, or all of a user's).", "kind")
	refreshReuseTotal    = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "crudauth", Name: "refresh_reuse_total",
		Help: "Sessions revoked because a spent refresh token was presented again after the reuse grace."})
	adminOperationsTotal = counterVec("admin_operations_total", "Admin API operations on users and databases, by operation and outcome.", "operation", "outcome")
	hashDuration         = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "crudauth",
		Name:      "password_hash_duration_seconds",
		Help:      "Time spent computing one password hash (hashing or verifying).",
		Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
)

// Outcome label values.
const (
	outcomeSuccess           = "success"
	outcomeFailure           = "failure"
	outcomeBusy              = "busy"
	outcomeThrottled         = "throttled"
	outcomeOK                = "ok"
	outcomeMissing           = "missing"
	outcomeInvalid           = "invalid"
	outcomeRevoked           = "revoked"
	outcomeInsufficientScope = "insufficient_scope"
	outcomeError             = "error"
)

// Pre-resolved series of the request paths.
var (
	loginSuccess   = loginsTotal.WithLabelValues(outcomeSuccess)
	loginFailure   = loginsTotal.WithLabelValues(outcomeFailure)
	loginBusy      = loginsTotal.WithLabelValues(outcomeBusy)
	loginThrottled = loginsTotal.WithLabelValues(outcomeThrottled)

	refreshSuccess = refreshesTotal.WithLabelValues(outcomeSuccess)
	refreshFailure = refreshesTotal.WithLabelValues(outcomeFailure)

	bearerOK                = bearerChecksTotal.WithLabelValues(outcomeOK)
	bearerMissing           = bearerChecksTotal.WithLabelValues(outcomeMissing)
	bearerInvalid           = bearerChecksTotal.WithLabelValues(outcomeInvalid)
	bearerRevoked           = bearerChecksTotal.WithLabelValues(outcomeRevoked)
	bearerInsufficientScope = bearerChecksTotal.WithLabelValues(outcomeInsufficientScope)
	bearerError             = bearerChecksTotal.WithLabelValues(outcomeError)

	passwordChangeSuccess = passwordChangesTotal.WithLabelValues(outcomeSuccess)
	passwordChangeFailure = passwordChangesTotal.WithLabelValues(outcomeFailure)
)

// Register adds the collectors to reg (Caddy's registry of the
// config being loaded). A collector already registered there is fine.
func Register(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{loginsTotal, refreshesTotal, bearerChecksTotal, logoutsTotal, refreshReuseTotal,
		passwordChangesTotal, adminOperationsTotal, hashDuration} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) && are.ExistingCollector == c {
				continue
			}
			return err
		}
	}
	return nil
}

// Throttled counts a login refused by the throttle (429), or one the
// throttle could not decide (its store failed: 503, counted as busy).
func Throttled(status int) {
	if status == http.StatusTooManyRequests {
		loginThrottled.Inc()
	} else {
		loginBusy.Inc()
	}
}

// Hash is the password.Hasher observer.
func Hash(d time.Duration) { hashDuration.Observe(d.Seconds()) }

// Bearer counts the outcome of a bearer check from its status and error
// (endpoints.ErrNoToken when the request carried no token).
func Bearer(status int, err error) {
	switch {
	case err == nil:
		bearerOK.Inc()
	case status >= 500:
		bearerError.Inc()
	case errors.Is(err, endpoints.ErrNoToken):
		bearerMissing.Inc()
	case errors.Is(err, auth.ErrInsufficientScope):
		bearerInsufficientScope.Inc()
	case errors.Is(err, auth.ErrRevoked), errors.Is(err, auth.ErrDisabledUser),
		errors.Is(err, auth.ErrUnknownUser), errors.Is(err, auth.ErrScopeNotAllowed),
		errors.Is(err, auth.ErrSessionEnded):
		// The token itself checks out; the user's state revoked it.
		bearerRevoked.Inc()
	default:
		bearerInvalid.Inc()
	}
}

// Admin counts one admin API operation.
func Admin(op string, err error) {
	outcome := outcomeSuccess
	if err != nil {
		outcome = outcomeError
	}
	adminOperationsTotal.WithLabelValues(op, outcome).Inc()
}

// counterVec is a crudauth_<name> counter with the given labels.
func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "crudauth", Name: name, Help: help}, labels)
}

// RefreshReuse counts a session revoked because a spent refresh token came
// back after the reuse grace (auth.Config.OnReuse).
func RefreshReuse() { refreshReuseTotal.Inc() }

// Endpoints is what internal/endpoints counts, as its Metrics takes it.
func Endpoints() endpoints.Metrics {
	return endpoints.Metrics{
		LoginSuccess:          loginSuccess.Inc,
		LoginFailure:          loginFailure.Inc,
		LoginBusy:             loginBusy.Inc,
		LoginThrottled:        loginThrottled.Inc,
		RefreshSuccess:        refreshSuccess.Inc,
		RefreshFailure:        refreshFailure.Inc,
		PasswordChangeSuccess: passwordChangeSuccess.Inc,
		PasswordChangeFailure: passwordChangeFailure.Inc,
		// Resolved at the first logout of each kind: a series appears in
		// /metrics only once it counted.
		LogoutSession: func() { logoutsTotal.WithLabelValues("session").Inc() },
		LogoutAll:     func() { logoutsTotal.WithLabelValues("all").Inc() },
	}
}
