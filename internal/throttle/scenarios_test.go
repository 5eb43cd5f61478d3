package throttle_test

import (
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/throttle"
	"github.com/crudauth/caddy-crudauth/internal/throttle/throttletest"
)

// TestScenarios runs the policy scenarios that every Limiter shares
// against Memory.
func TestScenarios(t *testing.T) {
	throttletest.Run(t, func(_ *testing.T, cfg throttle.Config) throttle.Limiter {
		return throttle.NewMemory(cfg)
	})
}
