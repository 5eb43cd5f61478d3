package throttle

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestExpiry: from Expiry on, a key's state acts exactly as no state at
// all (the next failure and the wait are the same), so a store that drops
// it then (a lease running out) changes nothing a user sees. Checked over
// random histories of failures and pauses, for each kind.
func TestExpiry(t *testing.T) {
	cfg := Config{MaxFailures: 3, Window: time.Minute, BaseLockout: time.Minute, MaxLockout: 10 * time.Minute}.WithDefaults()
	r := rand.New(rand.NewPCG(1, 2))
	start := time.Unix(1_700_000_000, 0)
	for run := range 2000 {
		k := kinds[run%len(kinds)]
		var s KeyState
		now := start
		for range r.IntN(40) {
			now = now.Add(time.Duration(r.IntN(int(3*time.Minute/time.Second))) * time.Second)
			s, _ = cfg.FailKey(k, s, now)
		}
		exp := cfg.Expiry(s)
		if s == (KeyState{}) {
			if !exp.IsZero() {
				t.Fatalf("run %d: the zero state expires at %v", run, exp)
			}
			continue
		}
		if exp.Before(now) && s.Wait(now) > 0 {
			t.Fatalf("run %d: %+v expired at %v while locked", run, s, exp)
		}
		for _, at := range []time.Time{exp, exp.Add(time.Nanosecond), exp.Add(time.Hour)} {
			if at.Before(now) {
				at = now
			}
			got, gotWait := cfg.FailKey(k, s, at)
			want, wantWait := cfg.FailKey(k, KeyState{}, at)
			if got != want || gotWait != wantWait || s.Wait(at) != 0 {
				t.Fatalf("run %d: %+v at its expiry %v: failure gives %+v (wait %v, wait before %v), a fresh key %+v (wait %v)",
					run, s, at, got, gotWait, s.Wait(at), want, wantWait)
			}
		}
	}
}
