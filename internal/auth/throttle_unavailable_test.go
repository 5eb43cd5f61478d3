package auth

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// downLimiter is a shared login throttle whose cluster cannot answer.
type downLimiter struct{}

var errDown = fmt.Errorf("login throttle: %w: context deadline exceeded", store.ErrUnavailable)

func (downLimiter) Check(context.Context, string, string) (time.Duration, error) { return 0, errDown }
func (downLimiter) Fail(context.Context, string, string) (time.Duration, error)  { return 0, errDown }
func (downLimiter) Succeed(context.Context, string, string) error                { return errDown }

// TestThrottleUnavailableRefusesLogin: a throttle that cannot answer (a
// shared one without its cluster) refuses the login as temporarily
// unavailable with a Retry-After (503), not as throttled (429) and not by
// letting it through unthrottled; no password is hashed.
func TestThrottleUnavailableRefusesLogin(t *testing.T) {
	hashed := false
	s, _ := testService(t, func(c *Config) {
		c.Throttle = downLimiter{}
		c.OnHash = func() func() { hashed = true; return func() {} }
	})
	_, err := s.Login(t.Context(), "alice", testPassword, nil, Client{IP: "192.0.2.1"})
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("login: %v, want an *Error", err)
	}
	if ae.Code != CodeTemporarilyUnavailable || ae.Throttled || ae.RetryAfter <= 0 {
		t.Fatalf("login: code %q, throttled %v, retry after %v; want %q, not throttled, a retry after",
			ae.Code, ae.Throttled, ae.RetryAfter, CodeTemporarilyUnavailable)
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("login: %v does not carry store.ErrUnavailable", err)
	}
	if hashed {
		t.Error("a password was hashed although the throttle could not answer")
	}
}
