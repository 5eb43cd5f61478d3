package throttle

import (
	"fmt"
	"hash/maphash"
	"testing"
	"time"
)

// lockVictim locks the username "alice" twice through the username key
// (ten failures from ten addresses, twice), so it holds an active lockout
// of two minutes and one strike of escalation besides.
func lockVictim(t *testing.T, m *Memory, clk *fakeClock) {
	t.Helper()
	for round, want := range []time.Duration{time.Minute, 2 * time.Minute} {
		var got time.Duration
		for i := range DefaultUserMaxFailures {
			got, _ = m.Fail(ctx, fmt.Sprintf("198.51.100.%d", 10*round+i), "alice")
		}
		if got != want {
			t.Fatalf("round %d: the tenth failure locked alice for %v, want %v", round, got, want)
		}
		if round == 0 {
			clk.Advance(want)
		}
	}
}

// floodFresh is an attacker's flood of failures under keys it makes up:
// a fresh address and a fresh username each time.
func floodFresh(m *Memory, n int) {
	for i := range n {
		_, _ = m.Fail(ctx, fmt.Sprintf("2001:db8:%x::", i), fmt.Sprint("made-up-", i))
	}
}

// floodLocks makes up usernames and locks each one (ten failures from ten
// fresh addresses), so that the limiter holds n lockouts of the attacker's
// making besides the victim's.
func floodLocks(m *Memory, n int) {
	for i := range n {
		for j := range DefaultUserMaxFailures {
			_, _ = m.Fail(ctx, fmt.Sprintf("2001:db8:%x:%x::", i, j), fmt.Sprint("locked-", i))
		}
	}
}

// wantVictimLocked asserts that alice is still locked from a fresh address
// for the rest of her two minutes, and that the escalation survived: the
// next round locks her for four.
func wantVictimLocked(t *testing.T, m *Memory, clk *fakeClock, left time.Duration) {
	t.Helper()
	if d, _ := m.Check(ctx, "203.0.113.99", "alice"); d < left {
		t.Fatalf("after the flood alice's lockout shows %v, want at least %v (evicted by made-up keys)", d, left)
	}
	clk.Advance(left)
	var got time.Duration
	for i := range DefaultUserMaxFailures {
		got, _ = m.Fail(ctx, fmt.Sprintf("203.0.113.%d", i), "alice")
	}
	if got < 4*time.Minute {
		t.Fatalf("alice's next lockout is %v, want 4m: her escalation was forgotten", got)
	}
}

// reseedAvoiding gives m a hash seed under which no made-up username of the
// flood shares a spill slot with alice, so that what the test sees of alice
// is her own state and not a collision (which can only lock more).
func reseedAvoiding(t *testing.T, m *Memory, flood []string) {
	t.Helper()
	slotOf := func(user string) uint64 {
		return maphash.Bytes(m.seed, []byte(keyOf(KindUser, "", user))) & uint64(m.spillSize()-1)
	}
	for range 1000 {
		m.seed = maphash.MakeSeed()
		a, clash := slotOf("alice"), false
		for _, u := range flood {
			clash = clash || slotOf(u) == a
		}
		if !clash {
			return
		}
	}
	t.Fatal("no seed keeps alice's spill slot to herself")
}

func madeUp(prefix string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprint(prefix, i)
	}
	return names
}

// TestLockSurvivesFlood: a lockout and its escalation must not be evictable
// by keys an attacker makes up, however many; the tables stay within their
// bounds meanwhile. The capacities are small so the test is quick; the
// mechanism is the same at the default sizes.
func TestLockSurvivesFlood(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flood func(m *Memory, n int)
		names string
		n     int
	}{
		{"fresh counters", floodFresh, "", 2000}, // nothing locks, nothing spills
		{"fresh lockouts", floodLocks, "locked-", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const maxEntries, maxLocks = 80, 20
			m, clk := newTest(Config{MaxEntries: maxEntries, MaxLocks: maxLocks})
			if tc.names != "" {
				reseedAvoiding(t, m, madeUp(tc.names, tc.n))
			}
			lockVictim(t, m, clk)
			clk.Advance(30 * time.Second)
			tc.flood(m, tc.n)
			if c, l := m.lens(); c+l > maxEntries || l > maxLocks {
				t.Errorf("tables hold %d counters and %d lockouts; bounds %d in all, %d lockouts", c, l, maxEntries, maxLocks)
			}
			if n := len(m.spill); n > m.spillSize() {
				t.Errorf("spill of %d slots, bound %d", n, m.spillSize())
			}
			wantVictimLocked(t, m, clk, 90*time.Second)
		})
	}
}

// TestSpillFailsClosed: with room for one lockout, a second one pushes the
// first into the spill, where it still refuses logins for the rest of its
// time and still escalates.
func TestSpillFailsClosed(t *testing.T) {
	m, clk := newTest(Config{MaxFailures: -1, IPMaxFailures: -1, MaxEntries: 4, MaxLocks: 1})
	reseedAvoiding(t, m, []string{"bob"})
	lockVictim(t, m, clk)
	for i := range DefaultUserMaxFailures {
		_, _ = m.Fail(ctx, fmt.Sprint("192.0.2.", i), "bob")
	}
	if d, _ := m.Check(ctx, "203.0.113.1", "bob"); d != time.Minute {
		t.Fatalf("bob: wait %v, want 1m", d)
	}
	if _, l := m.lens(); l > 1 {
		t.Fatalf("%d lockouts held exactly, bound 1", l)
	}
	wantVictimLocked(t, m, clk, 2*time.Minute)
}

// TestSpillSaturated: a flood of lockouts far beyond the spill's slots
// locks more, never less: alice stays locked.
func TestSpillSaturated(t *testing.T) {
	m, clk := newTest(Config{MaxEntries: 8, MaxLocks: 2})
	lockVictim(t, m, clk)
	clk.Advance(30 * time.Second)
	floodLocks(m, 300)
	if _, l := m.lens(); l > 2 {
		t.Fatalf("%d lockouts held exactly, bound 2", l)
	}
	if d, _ := m.Check(ctx, "203.0.113.99", "alice"); d < 90*time.Second {
		t.Fatalf("alice: wait %v, want at least 1m30s", d)
	}
}

// TestLockedTableForgets: lockouts that were forgotten make room without
// going to the spill, so an ordinary day never fills it.
func TestLockedTableForgets(t *testing.T) {
	m, clk := newTest(Config{MaxFailures: -1, IPMaxFailures: -1, MaxEntries: 8, MaxLocks: 2})
	for i := range 50 {
		for j := range DefaultUserMaxFailures {
			_, _ = m.Fail(ctx, fmt.Sprint("192.0.2.", j), fmt.Sprint("user", i))
		}
		clk.Advance(DefaultBaseLockout + DefaultMaxLockout)
	}
	if n := m.Spilled(); n != 0 {
		t.Fatalf("%d forgotten lockouts were spilled", n)
	}
	if m.spill != nil {
		t.Fatal("the spill was allocated without need")
	}
}
