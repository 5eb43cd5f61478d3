// Package throttletest holds the policy scenarios that every
// throttle.Limiter passes, so that the lockouts a user sees do not depend
// on the backend. Memory runs them in its tests, a shared limiter in its
// own.
package throttletest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/throttle"
)

// Clock is a fake clock for Config.Now, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock at a fixed instant.
func NewClock() *Clock { return &Clock{t: time.Unix(1_700_000_000, 0)} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var ctx = context.Background()

// step is one action of a scenario: a failure, a success, a check or a
// clock advance, with the wait it must report.
type step struct {
	op       string // "fail", "ok", "check", "wait"
	ip, user string
	d        time.Duration // for "wait": how far to advance
	want     time.Duration // wait reported by fail/check
}

func fails(n int, ip, user string) []step {
	var s []step
	for i := 0; i < n; i++ {
		s = append(s, step{op: "fail", ip: ip, user: user})
	}
	return s
}

func seq(parts ...any) []step {
	var out []step
	for _, p := range parts {
		switch v := p.(type) {
		case step:
			out = append(out, v)
		case []step:
			out = append(out, v...)
		}
	}
	return out
}

func last(s []step, want time.Duration) []step {
	s[len(s)-1].want = want
	return s
}

// Run runs every scenario against a limiter that newLimiter makes for it,
// fresh for each scenario, from cfg: the scenario's Config with Now set to
// a fake clock that the scenario advances.
func Run(t *testing.T, newLimiter func(t *testing.T, cfg throttle.Config) throttle.Limiter) {
	const ip, ip2, u, u2 = "192.0.2.1", "192.0.2.2", "alice", "bob"
	tests := []struct {
		name  string
		cfg   throttle.Config
		steps []step
	}{
		{"four failures do not lock", throttle.Config{},
			seq(fails(4, ip, u), step{op: "check", ip: ip, user: u, want: 0})},
		{"fifth failure locks the pair for a minute", throttle.Config{},
			seq(last(fails(5, ip, u), time.Minute),
				step{op: "check", ip: ip, user: u, want: time.Minute},
				step{op: "wait", d: 59 * time.Second},
				step{op: "check", ip: ip, user: u, want: time.Second},
				step{op: "wait", d: time.Second},
				step{op: "check", ip: ip, user: u, want: 0})},
		{"failures outside the window do not add up", throttle.Config{},
			seq(fails(4, ip, u), step{op: "wait", d: time.Minute}, fails(4, ip, u),
				step{op: "check", ip: ip, user: u, want: 0})},
		{"each further round doubles up to the cap", throttle.Config{MaxLockout: 5 * time.Minute},
			seq(last(fails(5, ip, u), time.Minute), step{op: "wait", d: time.Minute},
				last(fails(5, ip, u), 2*time.Minute), step{op: "wait", d: 2 * time.Minute},
				last(fails(5, ip, u), 4*time.Minute), step{op: "wait", d: 4 * time.Minute},
				last(fails(5, ip, u), 5*time.Minute), step{op: "wait", d: 5 * time.Minute},
				last(fails(5, ip, u), 5*time.Minute))},
		{"default escalation reaches one hour", throttle.Config{},
			seq(last(fails(5, ip, u), time.Minute), step{op: "wait", d: time.Minute},
				last(fails(5, ip, u), 2*time.Minute), step{op: "wait", d: 2 * time.Minute},
				last(fails(5, ip, u), 4*time.Minute), step{op: "wait", d: 4 * time.Minute},
				last(fails(5, ip, u), 8*time.Minute), step{op: "wait", d: 8 * time.Minute},
				last(fails(5, ip, u), 16*time.Minute), step{op: "wait", d: 16 * time.Minute},
				last(fails(5, ip, u), 32*time.Minute), step{op: "wait", d: 32 * time.Minute},
				last(fails(5, ip, u), time.Hour), step{op: "wait", d: time.Hour},
				last(fails(5, ip, u), time.Hour))},
		{"escalation is forgotten after a quiet hour", throttle.Config{},
			seq(last(fails(5, ip, u), time.Minute), step{op: "wait", d: time.Minute + time.Hour},
				last(fails(5, ip, u), time.Minute))},
		{"success clears the pair", throttle.Config{},
			seq(fails(4, ip, u), step{op: "ok", ip: ip, user: u}, fails(4, ip, u),
				step{op: "check", ip: ip, user: u, want: 0})},
		{"success clears the pair's escalation", throttle.Config{UserMaxFailures: -1},
			seq(last(fails(5, ip, u), time.Minute), step{op: "wait", d: time.Minute},
				step{op: "ok", ip: ip, user: u},
				last(fails(5, ip, u), time.Minute))},
		{"pair lock does not lock the user for other IPs", throttle.Config{},
			seq(last(fails(5, ip, u), time.Minute), step{op: "check", ip: ip2, user: u, want: 0})},
		{"pair lock does not lock the IP for other users", throttle.Config{},
			seq(last(fails(5, ip, u), time.Minute), step{op: "check", ip: ip, user: u2, want: 0})},
		{"username locks across IPs", throttle.Config{},
			seq(fails(4, ip, u), last(fails(4, ip2, u), 0), fails(1, "192.0.2.3", u),
				last(fails(1, "192.0.2.4", u), time.Minute),
				step{op: "check", ip: "198.51.100.9", user: u, want: time.Minute})},
		{"success does not clear the username counter", throttle.Config{},
			seq(fails(4, ip, u), fails(4, ip2, u), step{op: "ok", ip: ip, user: u},
				fails(1, "192.0.2.3", u), last(fails(1, "192.0.2.4", u), time.Minute))},
		{"spraying locks the IP for every username", throttle.Config{},
			func() []step {
				var s []step
				for i := 0; i < 20; i++ {
					s = append(s, step{op: "fail", ip: ip, user: fmt.Sprintf("user%d", i)})
				}
				s[19].want = time.Minute
				return append(s, step{op: "check", ip: ip, user: "someone-else", want: time.Minute},
					step{op: "check", ip: ip2, user: "someone-else", want: 0})
			}()},
		{"a disabled key never locks", throttle.Config{MaxFailures: -1, UserMaxFailures: -1, IPMaxFailures: -1},
			seq(fails(50, ip, u), step{op: "check", ip: ip, user: u, want: 0})},
		{"custom limits", throttle.Config{MaxFailures: 2, BaseLockout: 10 * time.Second},
			seq(fails(1, ip, u), last(fails(1, ip, u), 10*time.Second))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := NewClock()
			cfg := tc.cfg
			cfg.Now = clk.Now
			m := newLimiter(t, cfg)
			for i, s := range tc.steps {
				var got time.Duration
				var err error
				switch s.op {
				case "fail":
					got, err = m.Fail(ctx, s.ip, s.user)
				case "check":
					got, err = m.Check(ctx, s.ip, s.user)
				case "ok":
					err = m.Succeed(ctx, s.ip, s.user)
				case "wait":
					clk.Advance(s.d)
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got != s.want {
					t.Fatalf("step %d (%s %s %s): wait %v, want %v", i, s.op, s.ip, s.user, got, s.want)
				}
			}
		})
	}
}
