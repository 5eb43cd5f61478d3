package gatewaystest

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// chain is one login and the refreshes after it: the refresh token last
// acknowledged (its predecessors are spent by rotation).
type chain struct {
	user    string
	refresh string
}

// opStats counts one gateway's requests of one kind during the load.
type opStats struct {
	okBefore, okAfter, failed int
	lastOK                    time.Time
	maxGap, maxCall           time.Duration
	statuses                  map[int]int // of the failed ones; 0: no answer
	sample                    map[int]string
}

func (s *opStats) record(t0 time.Time, r *response, ok bool, killedAt int64) {
	s.maxCall = max(s.maxCall, r.took)
	if !ok {
		s.failed++
		s.statuses[r.status]++
		if _, ok := s.sample[r.status]; !ok {
			s.sample[r.status] = r.String()
		}
		return
	}
	now := time.Now()
	s.maxGap = max(s.maxGap, now.Sub(s.lastOK))
	s.lastOK = now
	if killedAt != 0 && t0.UnixNano() > killedAt {
		s.okAfter++
	} else {
		s.okBefore++
	}
}

func (s *opStats) String() string {
	return fmt.Sprintf("ok %d before the kill, %d after, failed %d %v; longest gap %v, longest call %v; %v",
		s.okBefore, s.okAfter, s.failed, s.statuses, ms(s.maxGap), ms(s.maxCall), s.sample)
}

// TestGatewaysKillMemberUnderLoad crashes the etcd leader (SIGKILL) while
// three Caddy processes serve a write load (logins, refreshes with
// rotation, revocations through their admin APIs) and bearer requests.
// Nothing acknowledged may be lost: every acknowledged revocation is
// refused on all three gateways, every acknowledged login's refresh
// token (or its rotated successor) still refreshes. The gateways keep
// serving: writes pause for at most a bounded window, bearer requests not
// at all. The crashed member then restarts and rejoins.
func TestGatewaysKillMemberUnderLoad(t *testing.T) {
	c := needCluster(t)
	prefix := freshPrefix()
	l := newLedger(t)
	gw := allGateways(t, l, prefix)
	const (
		load   = 6 * time.Second
		killAt = 2 * time.Second
	)
	// Users of chains (logged in and refreshed, never revoked), three per
	// gateway, and users that are revoked; disjoint, so that a revocation
	// says nothing about whether a chain must still refresh.
	chainUser := func(g, k int) string { return fmt.Sprintf("chain%d-%d", g, k) }
	revUser := func(k int) string { return fmt.Sprintf("rev%d", k) }
	const nRev = 3
	for g := range gw {
		for k := range 3 {
			gw[g].addUser(t, chainUser(g, k))
		}
	}
	for k := range nRev {
		gw[k%3].addUser(t, revUser(k))
	}
	// Tokens issued before the load: the revoked users' must be refused
	// after their first acknowledged revocation, the others' must keep
	// being honoured.
	var revTokens []string
	for k := range nRev {
		for _, g := range gw {
			revTokens = append(revTokens, g.mustLogin(t, revUser(k)).access)
		}
	}
	keepTokens := make([]string, len(gw))
	for g := range gw {
		keepTokens[g] = gw[g].mustLogin(t, chainUser(g, 0)).access
	}

	type result struct {
		login, refresh, revoke, bearer opStats
		writes                         opStats // the three write kinds together
	}
	newStats := func() opStats { return opStats{statuses: map[int]int{}, sample: map[int]string{}, lastOK: time.Now()} }
	var (
		mu       sync.Mutex
		chains   []*chain
		revoked  = map[string]bool{} // users with an acknowledged revocation
		results  = make([]*result, len(gw))
		killedAt atomic.Int64
		start    = time.Now()
		stop     = start.Add(load)
		wg       sync.WaitGroup
	)
	for g, gwy := range gw {
		r := &result{login: newStats(), refresh: newStats(), revoke: newStats(), bearer: newStats(), writes: newStats()}
		results[g] = r
		var rmu sync.Mutex // r.writes is shared by two writers
		write := func(s *opStats, t0 time.Time, resp *response, ok bool) {
			rmu.Lock()
			defer rmu.Unlock()
			s.record(t0, resp, ok, killedAt.Load())
			r.writes.record(t0, resp, ok, killedAt.Load())
		}
		// Logins and refreshes: a login, then four refreshes with
		// rotation, then the next user's login.
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				t0 := time.Now()
				resp := gwy.login(chainUser(g, i%3), password)
				tk, err := resp.tokens()
				write(&r.login, t0, resp, resp.status == http.StatusOK && err == nil)
				if err != nil {
					continue
				}
				ch := &chain{user: chainUser(g, i%3), refresh: tk.refresh}
				mu.Lock()
				chains = append(chains, ch)
				mu.Unlock()
				for n := 0; n < 4 && time.Now().Before(stop); {
					t0 := time.Now()
					resp := gw[(g+n+1)%3].refresh(ch.refresh) // on every gateway in turn
					tk, err := resp.tokens()
					write(&r.refresh, t0, resp, resp.status == http.StatusOK && err == nil)
					if err != nil {
						// Not acknowledged: the rotation may or may not
						// have happened. The same token again gets the
						// successor within the reuse grace, either way.
						time.Sleep(20 * time.Millisecond)
						continue
					}
					mu.Lock()
					ch.refresh = tk.refresh
					mu.Unlock()
					n++
				}
			}
		})
		// Revocations through this gateway's admin API.
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				user := revUser((g + i) % nRev)
				t0 := time.Now()
				resp := gwy.revoke(user)
				ok := resp.status == http.StatusOK
				write(&r.revoke, t0, resp, ok)
				if ok {
					mu.Lock()
					revoked[user] = true
					mu.Unlock()
				}
				time.Sleep(30 * time.Millisecond)
			}
		})
		// Bearer requests, served from the gateway's cache.
		wg.Go(func() {
			for time.Now().Before(stop) {
				t0 := time.Now()
				resp := gwy.bearer(keepTokens[(g+1)%3])
				r.bearer.record(t0, resp, resp.status == http.StatusOK, killedAt.Load())
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	time.Sleep(killAt)
	victim, err := c.Leader(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	killedAt.Store(time.Now().UnixNano())
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILLed the leader, %s, at %v", c.Member(victim).Name(), ms(time.Since(start)))
	wg.Wait()

	for g, r := range results {
		t.Logf("%s: writes %v", gw[g].name, &r.writes)
		t.Logf("%s:   logins %v", gw[g].name, &r.login)
		t.Logf("%s:   refreshes %v", gw[g].name, &r.refresh)
		t.Logf("%s:   revocations %v", gw[g].name, &r.revoke)
		t.Logf("%s: bearer %v", gw[g].name, &r.bearer)
		w := &r.writes
		if w.okBefore == 0 || w.okAfter == 0 {
			t.Errorf("%s: %d writes acknowledged before the kill, %d after: want some in both", gw[g].name, w.okBefore, w.okAfter)
		}
		if d := stop.Sub(w.lastOK); d > 1500*time.Millisecond {
			t.Errorf("%s: last acknowledged write %v before the end of the load: the gateway did not keep serving", gw[g].name, ms(d))
		}
		// The error window: a new leader is elected within about a
		// second, and every etcd call is bounded by dial_timeout.
		if w.maxGap > callBound {
			t.Errorf("%s: %v without an acknowledged write, want a window under %v", gw[g].name, ms(w.maxGap), callBound)
		}
		if w.maxCall > callBound {
			t.Errorf("%s: a write took %v (dial_timeout %v), want at most %v", gw[g].name, ms(w.maxCall), dialTimeout, callBound)
		}
		// A write the cluster could not take is 503, retried by the
		// client; never a refusal (a first refresh on another gateway a
		// moment after the login included: its cache catches up).
		for kind, st := range map[string]*opStats{"login": &r.login, "refresh": &r.refresh, "revocation": &r.revoke} {
			for status, n := range st.statuses {
				if status != http.StatusServiceUnavailable {
					t.Errorf("%s: %d %s requests answered %d, want only 503 while a member is down: %s", gw[g].name, n, kind, status, st.sample[status])
				}
			}
		}
		// Bearer requests need no etcd round trip: the kill must not show.
		if r.bearer.failed != 0 || r.bearer.okAfter == 0 {
			t.Errorf("%s: bearer requests failed %d times %v, answered %d times after the kill: want them served throughout",
				gw[g].name, r.bearer.failed, r.bearer.statuses, r.bearer.okAfter)
		}
	}

	verify := func(when string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		// Every acknowledged revocation is refused on all three gateways
		// (the tokens were issued before any revocation).
		nRevoked := 0
		for k := range nRev {
			if !revoked[revUser(k)] {
				continue
			}
			nRevoked++
			for j, a := range revTokens[k*3 : k*3+3] {
				for _, g := range gw {
					if r := g.bearer(a); r.status != http.StatusUnauthorized {
						t.Errorf("%s: %s: a token of %s (issued by gw%d) after an acknowledged revocation: %s, want 401",
							when, g.name, revUser(k), j+1, r)
					}
				}
			}
		}
		// Every acknowledged chain still refreshes, on a gateway other
		// than the one that last rotated it, and its successor's access
		// token works on all three.
		for i, ch := range chains {
			g := gw[i%3]
			r := g.refresh(ch.refresh)
			tk, err := r.tokens()
			if err != nil {
				t.Errorf("%s: %s: chain %d of %s no longer refreshes: %s", when, g.name, i, ch.user, r)
				continue
			}
			ch.refresh = tk.refresh
			if r := gw[(i+1)%3].bearer(tk.access); r.status != http.StatusOK {
				t.Errorf("%s: %s: the access token of chain %d's refresh: %s", when, gw[(i+1)%3].name, i, r)
			}
		}
		t.Logf("%s: %d revoked users' %d tokens refused on all three gateways; %d chains refresh",
			when, nRevoked, 3*nRevoked, len(chains))
		if nRevoked == 0 || len(chains) == 0 {
			t.Errorf("%s: nothing to verify: %d revoked users, %d chains", when, nRevoked, len(chains))
		}
	}
	verify("after the load, the member down")

	// The member restarts on its data and rejoins; the gateways go on.
	t0 := time.Now()
	if err := c.Restart(t.Context(), victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s restarted and healthy (rejoined, a leader committing) in %v", c.Member(victim).Name(), ms(time.Since(t0)))
	verify("after the restart")
}
