package caddymodule

import (
	"context"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestThrottleSharedPerDatabase: handlers on one database with the same
// settings share one budget (two sites cannot be alternated to double an
// attacker's guesses, and a reload keeps the counts); other settings or
// another database get their own.
func TestThrottleSharedPerDatabase(t *testing.T) {
	cfg := &ThrottleConfig{MaxFailures: 2, UserMaxFailures: -1, IPMaxFailures: -1}
	a, keyA, err := acquireThrottle("/db/one", nil, cfg)
	if err != nil || a == nil {
		t.Fatal(err)
	}
	defer throttlePool.Delete(keyA)
	b, keyB, err := acquireThrottle("/db/one", nil, &ThrottleConfig{MaxFailures: 2, UserMaxFailures: -1, IPMaxFailures: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer throttlePool.Delete(keyB)
	if keyA != keyB {
		t.Fatalf("same db and settings, different keys %q %q", keyA, keyB)
	}

	ctx := context.Background()
	// one failure through each "site" reaches the pair's limit of 2
	_, _ = a.Fail(ctx, "192.0.2.1", "alice")
	_, _ = b.Fail(ctx, "192.0.2.1", "alice")
	if wait, err := a.Check(ctx, "192.0.2.1", "alice"); err != nil || wait <= 0 {
		t.Fatalf("two failures split over two handlers did not lock: wait %v, err %v", wait, err)
	}

	other, keyO, err := acquireThrottle("/db/two", nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer throttlePool.Delete(keyO)
	if wait, _ := other.Check(ctx, "192.0.2.1", "alice"); wait != 0 {
		t.Errorf("another database shares the lock: wait %v", wait)
	}
	if _, keyS, _ := acquireThrottle("/db/one", nil, &ThrottleConfig{MaxFailures: 3}); keyS == keyA {
		t.Error("other settings share the counters")
	} else {
		throttlePool.Delete(keyS)
	}

	if l, key, err := acquireThrottle("/db/one", nil, &ThrottleConfig{Off: true}); l != nil || key != "" || err != nil {
		t.Errorf("throttle off: %v %q %v", l, key, err)
	}
}

// TestThrottleConfigValues: every throttle setting reaches internal/throttle
// (lockout as BaseLockout), and no block means the defaults.
func TestThrottleConfigValues(t *testing.T) {
	c := &ThrottleConfig{MaxFailures: 3, UserMaxFailures: -1, IPMaxFailures: 50, Window: caddy.Duration(time.Second),
		Lockout: caddy.Duration(2 * time.Second), MaxLockout: caddy.Duration(time.Minute), MaxEntries: 1000}
	l := c.values()
	if l.MaxFailures != 3 || l.UserMaxFailures != -1 || l.IPMaxFailures != 50 || l.Window != time.Second ||
		l.BaseLockout != 2*time.Second || l.MaxLockout != time.Minute || l.MaxEntries != 1000 {
		t.Errorf("values() = %+v, want every setting carried over (lockout as BaseLockout)", l)
	}
	if (*ThrottleConfig)(nil).values() != nil {
		t.Error("values() of no throttle block is not nil (the defaults)")
	}
}
