package gatewaystest

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// frozenWatch polls a gateway's bearer path while members are frozen and
// records when it failed closed.
type frozenWatch struct {
	ok, closed int
	closedAt   time.Duration // since the freeze; 0: never
	reopened   int           // 200s after failing closed
	slowest    time.Duration
	sample     string
}

// watchBearer sends bearer requests with access to g every 20ms until
// end, and checks each answer: 200 until the gateway fails closed, then
// 503 with Retry-After, and never 200 again (the cluster cannot confirm
// anything meanwhile).
func watchBearer(t *testing.T, g *gateway, access string, since time.Time, end time.Time) *frozenWatch {
	w := &frozenWatch{}
	for time.Now().Before(end) {
		r := g.bearer(access)
		w.slowest = max(w.slowest, r.took)
		switch {
		case r.status == http.StatusOK && w.closedAt == 0:
			w.ok++
		case r.status == http.StatusOK:
			w.reopened++
		case r.status == http.StatusServiceUnavailable && r.retryAfter():
			if w.closedAt == 0 {
				w.closedAt = time.Since(since)
				w.sample = r.String()
			}
			w.closed++
		default:
			t.Errorf("%s: a bearer request while members are frozen: %s (Retry-After %q), want 200 or 503 with Retry-After",
				g.name, r, r.header.Get("Retry-After"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return w
}

// unavailable reports whether r is the answer of a request that needs the
// cluster while it cannot answer: 503 with Retry-After, within callBound.
func unavailable(r *response) error {
	if r.status != http.StatusServiceUnavailable || !r.retryAfter() {
		return fmt.Errorf("%s (Retry-After %q), want 503 with Retry-After", r, r.header.Get("Retry-After"))
	}
	if r.took > callBound {
		return fmt.Errorf("503 after %v, want within %v (dial_timeout %v)", ms(r.took), callBound, dialTimeout)
	}
	return nil
}

// TestGatewaysQuorumLost freezes two of the three members (SIGSTOP: to
// the third and to the gateways, a partition that leaves no quorum).
// Logins, refreshes and admin writes get 503 with Retry-After within
// about dial_timeout, and none hangs. Bearer requests go on from each
// gateway's cache until max_staleness, then get 503 with Retry-After:
// the gateways fail closed. Once the members run again, everything
// recovers without restarting any Caddy.
func TestGatewaysQuorumLost(t *testing.T) {
	c := needCluster(t)
	prefix := freshPrefix()
	l := newLedger(t)
	gw := allGateways(t, l, prefix)
	gw[0].addUser(t, "carol")
	tks := make([]tokens, len(gw))
	for i, g := range gw {
		tks[i] = g.mustLogin(t, "carol")
	}

	lead, err := c.Leader(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	frozen := []int{lead, (lead + 1) % c.Len()}
	frozeAt := time.Now()
	for _, i := range frozen {
		if err := c.Freeze(i); err != nil {
			t.Fatal(err)
		}
	}
	thawed := false
	thaw := func() {
		if thawed {
			return
		}
		thawed = true
		for _, i := range frozen {
			if err := c.Thaw(i); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(thaw) // the next test needs the cluster whole
	t.Logf("SIGSTOPped %s (the leader) and %s", c.Member(frozen[0]).Name(), c.Member(frozen[1]).Name())

	end := frozeAt.Add(maxStaleness + detect + time.Second)
	watches := make([]*frozenWatch, len(gw))
	type writes struct {
		n                                 int
		slowestLogin, slowestRefresh, adm time.Duration
	}
	wr := make([]writes, len(gw))
	var wg sync.WaitGroup
	for i, g := range gw {
		wg.Go(func() { watches[i] = watchBearer(t, g, tks[(i+1)%3].access, frozeAt, end) })
		wg.Go(func() {
			w := &wr[i]
			for k := 0; time.Now().Before(end); k++ {
				var r *response
				var what string
				switch k % 3 {
				case 0:
					what, r = "login", g.login("carol", password)
					w.slowestLogin = max(w.slowestLogin, r.took)
				case 1:
					what, r = "refresh", g.refresh(tks[i].refresh)
					w.slowestRefresh = max(w.slowestRefresh, r.took)
				case 2:
					what, r = "admin revoke", g.revoke("carol")
					w.adm = max(w.adm, r.took)
				}
				w.n++
				if err := unavailable(r); err != nil {
					t.Errorf("%s: %s without quorum, %v after the freeze: %v", g.name, what, ms(time.Since(frozeAt)), err)
				}
			}
		})
	}
	wg.Wait()
	for i, w := range watches {
		t.Logf("%s without quorum: %d writes (login, refresh, admin revoke), all 503 with Retry-After, slowest %v, %v, %v (dial_timeout %v)",
			gw[i].name, wr[i].n, ms(wr[i].slowestLogin), ms(wr[i].slowestRefresh), ms(wr[i].adm), dialTimeout)
		t.Logf("%s: bearer requests served %d times, then failed closed %v after the freeze (max_staleness %v) and answered 503 %d times, slowest %v; first: %s",
			gw[i].name, w.ok, ms(w.closedAt), maxStaleness, w.closed, ms(w.slowest), w.sample)
		if w.ok == 0 {
			t.Errorf("%s: no bearer request served after the freeze: the cache should serve until max_staleness", gw[i].name)
		}
		// The cache was last confirmed at most max_staleness/4 before
		// the freeze, so it may not fail closed much earlier than
		// max_staleness; and at the latest by max_staleness plus the
		// time the member left running takes to notice it lost its
		// leader.
		if w.closedAt == 0 || w.closedAt < maxStaleness-maxStaleness/4-250*time.Millisecond || w.closedAt > maxStaleness+detect {
			t.Errorf("%s: bearer requests failed closed %v after the freeze (0: never), want between %v and %v",
				gw[i].name, ms(w.closedAt), maxStaleness-maxStaleness/4-250*time.Millisecond, maxStaleness+detect)
		}
		if w.reopened != 0 {
			t.Errorf("%s: %d bearer requests served after failing closed, with no quorum", gw[i].name, w.reopened)
		}
		if w.slowest > time.Second {
			t.Errorf("%s: a bearer request took %v while the cluster was partitioned", gw[i].name, ms(w.slowest))
		}
	}

	// Thaw: each gateway serves again, the same processes.
	thawAt := time.Now()
	thaw()
	for i, g := range gw {
		_, err := eventually(15*time.Second, func() error {
			// The earlier token may have been revoked by an admin write
			// that the frozen leader received before it stopped and
			// committed once it ran again: any answer but 503 is the
			// gateway serving.
			if r := g.bearer(tks[(i+1)%3].access); r.status != http.StatusOK && r.status != http.StatusUnauthorized {
				return fmt.Errorf("bearer: %s", r)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: bearer requests did not recover within 15s of SIGCONT: %v", g.name, err)
		}
		bearerAt := time.Since(thawAt)
		var tk tokens
		_, err = eventually(15*time.Second, func() error {
			r := g.login("carol", password)
			tk, err = r.tokens()
			return err
		})
		if err != nil {
			t.Fatalf("%s: logins did not recover within 15s of SIGCONT: %v", g.name, err)
		}
		loginAt := time.Since(thawAt)
		if r := g.refresh(tk.refresh); r.status != http.StatusOK {
			t.Errorf("%s: refresh after the thaw: %s", g.name, r)
		}
		if r := g.revoke("carol"); r.status != http.StatusOK {
			t.Errorf("%s: admin revoke after the thaw: %s", g.name, r)
		}
		t.Logf("%s after SIGCONT: bearer requests served %v after it, a login %v after it",
			g.name, ms(bearerAt), ms(loginAt))
	}
	// The revocations after the thaw are seen by every gateway.
	tk := gw[0].mustLogin(t, "carol")
	if r := gw[2].revoke("carol"); r.status != http.StatusOK {
		t.Fatalf("gw3: admin revoke: %s", r)
	}
	for _, g := range gw {
		if d, err := eventually(time.Second, func() error {
			if r := g.bearer(tk.access); r.status != http.StatusUnauthorized {
				return fmt.Errorf("%s", r)
			}
			return nil
		}); err != nil {
			t.Errorf("%s: a token revoked through gw3 after the thaw: %v after %v, want 401", g.name, err, ms(d))
		}
	}
}
