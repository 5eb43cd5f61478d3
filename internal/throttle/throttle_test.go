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
