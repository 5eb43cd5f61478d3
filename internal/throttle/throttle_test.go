package throttle

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTest(cfg Config) (*Memory, *fakeClock) {
	c := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	cfg.Now = c.Now
	return NewMemory(cfg), c
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

func TestScenarios(t *testing.T) {
	const ip, ip2, u, u2 = "192.0.2.1", "192.0.2.2", "alice", "bob"
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"four failures do not lock", Config{},
			seq(fails(4, ip, u), step{op: "check", ip: ip, user: u, want: 0})},
		{"fifth failure locks the pair for a minute", Config{},
			seq(last(fails(5, ip, u), time.Minute),
				step{op: "check", ip: ip, user: u, want: time.Minute},
				step{op: "wait", d: 59 * time.Second},
				step{op: "check", ip: ip, user: u, want: time.Second},
				step{op: "wait", d: time.Second},
				step{op: "check", ip: ip, user: u, want: 0})},
		{"failures outside the window do not add up", Config{},
			seq(fails(4, ip, u), step{op: "wait", d: time.Minute}, fails(4, ip, u),
				step{op: "check", ip: ip, user: u, want: 0})},
		{"each further round doubles up to the cap", Config{MaxLockout: 5 * time.Minute},
			seq(last(fails(5, ip, u), time.Minute), step{op: "wait", d: time.Minute},
				last(fails(5, ip, u), 2*time.Minute), step{op: "wait", d: 2 * time.Minute},
				last(fails(5, ip, u), 4*time.Minute), step{op: "wait", d: 4 * time.Minute},
				last(fails(5, ip, u), 5*time.Minute), step{op: "wait", d: 5 * time.Minute},
				last(fails(5, ip, u), 5*time.Minute))},
		{"default escalation reaches one hour", Config{},
			seq(last(fails(5, ip, u), time.Minute), step{op: "wait", d: time.Minute},
				last(fails(5, ip, u), 2*time.Minute), step{op: "wait", d: 2 * time.Minute},
				last(fails(5, ip, u), 4*time.Minute), step{op: "wait", d: 4 * time.Minute},
				last(fails(5, ip, u), 8*time.Minute), step{op: "wait", d: 8 * time.Minute},
				last(fails(5, ip, u), 16*time.Minute), step{op: "wait", d: 16 * time.Minute},
				last(fails(5, ip, u), 32*time.Minute), step{op: "wait", d: 32 * time.Minute},
				last(fails(5, ip, u), time.Hour), step{op: "wait", d: time.Hour},
				last(fails(5, ip, u), time.Hour))},
		{"escalation is forgotten after a quiet hour", Config{},
			seq(last(fails(5, ip, u), time.Minute), step{op: "wait", d: time.Minute + time.Hour},
				last(fails(5, ip, u), time.Minute))},
		{"success clears the pair", Config{},
			seq(fails(4, ip, u), step{op: "ok", ip: ip, user: u}, fails(4, ip, u),
				step{op: "check", ip: ip, user: u, want: 0})},
		{"success clears the pair's escalation", Config{UserMaxFailures: -1},
			seq(last(fails(5, ip, u), time.Minute), step{op: "wait", d: time.Minute},
				step{op: "ok", ip: ip, user: u},
				last(fails(5, ip, u), time.Minute))},
		{"pair lock does not lock the user for other IPs", Config{},
			seq(last(fails(5, ip, u), time.Minute), step{op: "check", ip: ip2, user: u, want: 0})},
		{"pair lock does not lock the IP for other users", Config{},
			seq(last(fails(5, ip, u), time.Minute), step{op: "check", ip: ip, user: u2, want: 0})},
		{"username locks across IPs", Config{},
			seq(fails(4, ip, u), last(fails(4, ip2, u), 0), fails(1, "192.0.2.3", u),
				last(fails(1, "192.0.2.4", u), time.Minute),
				step{op: "check", ip: "198.51.100.9", user: u, want: time.Minute})},
		{"success does not clear the username counter", Config{},
			seq(fails(4, ip, u), fails(4, ip2, u), step{op: "ok", ip: ip, user: u},
				fails(1, "192.0.2.3", u), last(fails(1, "192.0.2.4", u), time.Minute))},
		{"spraying locks the IP for every username", Config{},
			func() []step {
				var s []step
				for i := 0; i < 20; i++ {
					s = append(s, step{op: "fail", ip: ip, user: fmt.Sprintf("user%d", i)})
				}
				s[19].want = time.Minute
				return append(s, step{op: "check", ip: ip, user: "someone-else", want: time.Minute},
					step{op: "check", ip: ip2, user: "someone-else", want: 0})
			}()},
		{"a disabled key never locks", Config{MaxFailures: -1, UserMaxFailures: -1, IPMaxFailures: -1},
			seq(fails(50, ip, u), step{op: "check", ip: ip, user: u, want: 0})},
		{"custom limits", Config{MaxFailures: 2, BaseLockout: 10 * time.Second},
			seq(fails(1, ip, u), last(fails(1, ip, u), 10*time.Second))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, clk := newTest(tc.cfg)
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

func TestEvictionBound(t *testing.T) {
	for _, max := range []int{1, 3, 100} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			m, _ := newTest(Config{MaxEntries: max})
			for i := 0; i < 10*max+10; i++ {
				if _, err := m.Fail(ctx, fmt.Sprintf("10.0.%d.%d", i/256, i%256), fmt.Sprint("u", i)); err != nil {
					t.Fatal(err)
				}
				if n := m.Len(); n > max {
					t.Fatalf("after %d failures: %d entries, bound %d", i+1, n, max)
				}
			}
			if m.Evicted() == 0 {
				t.Fatal("nothing was evicted")
			}
		})
	}
}

// TestEvictionLosesOnlyARound: evicting counters under a flood of made-up
// keys keeps the tables within their bound and costs at most the round in
// progress: after a flood a pair still locks within MaxFailures further
// failures, and, once locked, stays locked through the next flood. (Which
// counters go first is the cache's choice, not pinned here.)
func TestEvictionLosesOnlyARound(t *testing.T) {
	const maxEntries, maxLocks = 8, 2
	m, _ := newTest(Config{MaxEntries: maxEntries, MaxLocks: maxLocks, UserMaxFailures: -1, IPMaxFailures: -1})
	flood := func(n int) {
		for i := range n {
			_, _ = m.Fail(ctx, fmt.Sprint("198.51.100.", i%256), fmt.Sprint("made-up-", i))
			if c, l := m.lens(); c+l > maxEntries || l > maxLocks {
				t.Fatalf("tables hold %d counters and %d lockouts; bounds %d in all, %d lockouts", c, l, maxEntries, maxLocks)
			}
		}
	}
	for range DefaultMaxFailures - 1 {
		if d, _ := m.Fail(ctx, "192.0.2.1", "hot"); d != 0 {
			t.Fatalf("locked early: wait %v", d)
		}
	}
	flood(200)
	if m.Evicted() == 0 {
		t.Fatal("the flood evicted nothing: the test does not test eviction")
	}
	var wait time.Duration
	for i := 0; i < DefaultMaxFailures && wait == 0; i++ {
		wait, _ = m.Fail(ctx, "192.0.2.1", "hot")
	}
	if wait != DefaultBaseLockout {
		t.Fatalf("after %d more failures: wait %v, want %v", DefaultMaxFailures, wait, DefaultBaseLockout)
	}
	flood(200)
	if d, _ := m.Check(ctx, "192.0.2.1", "hot"); d != DefaultBaseLockout {
		t.Fatalf("after the second flood: wait %v, want %v", d, DefaultBaseLockout)
	}
}

func TestKeysDoNotCollide(t *testing.T) {
	m, _ := newTest(Config{MaxFailures: 1, UserMaxFailures: -1, IPMaxFailures: -1})
	_, _ = m.Fail(ctx, "1.2.3.4", "5")
	if d, _ := m.Check(ctx, "1.2.3.", "45"); d != 0 {
		t.Fatal("pair keys collide")
	}
}

func TestConcurrent(t *testing.T) {
	m, _ := newTest(Config{MaxEntries: 50})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				ip, u := fmt.Sprint("ip", (g+i)%13), fmt.Sprint("u", i%17)
				switch i % 3 {
				case 0:
					_, _ = m.Fail(ctx, ip, u)
				case 1:
					_, _ = m.Check(ctx, ip, u)
				default:
					_ = m.Succeed(ctx, ip, u)
				}
			}
		}(g)
	}
	wg.Wait()
	if n := m.Len(); n > 50 {
		t.Fatalf("%d entries, bound 50", n)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{{0, 1}, {time.Millisecond, 1}, {time.Second, 1}, {1001 * time.Millisecond, 2}, {time.Hour, 3600}} {
		if got := RetryAfterSeconds(tc.d); got != tc.want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// TestIPKey: IPv6 clients count by their /64, so rotating addresses
// inside one prefix buys no fresh budget; IPv4-mapped addresses count as
// IPv4.
func TestIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":                 "192.0.2.7",
		"::ffff:192.0.2.7":          "192.0.2.7",
		"2001:db8:1:2:aaaa::1":      "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff::9": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":           "2001:db8:1:3::/64",
		"not-an-ip":                 "not-an-ip",
	} {
		if got := IPKey(in); got != want {
			t.Errorf("IPKey(%q) = %q, want %q", in, got, want)
		}
	}
}
