package gatewaystest

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestGatewaysPartitionedMember: gw3's only endpoint is one member, which
// is frozen (SIGSTOP): gw3 is cut off from the cluster as by a network
// partition, while gw1 and gw2, each on one of the other members, still
// reach a quorum. gw3 serves bearer requests from its cache until
// max_staleness (plus the time its member takes to notice it is cut off),
// then fails closed with 503; its logins get 503 within the call bound.
// gw1 and gw2 go on serving everything, a revocation through gw1 included,
// which gw2 refuses at once. Thawed, gw3 recovers by itself and refuses
// the token revoked while it was cut off.
func TestGatewaysPartitionedMember(t *testing.T) {
	c := needCluster(t)
	prefix := freshPrefix()
	l := newLedger(t)
	lead, err := c.Leader(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// A follower is cut off: the majority keeps its leader, so what gw1
	// and gw2 see is the partition alone, not an election.
	victim := (lead + 1) % c.Len()
	other := (lead + 2) % c.Len()
	eps := c.Endpoints()
	gw := startGateways(t, l,
		gwConfig{endpoints: []string{eps[lead]}, prefix: prefix},
		gwConfig{endpoints: []string{eps[other]}, prefix: prefix},
		gwConfig{endpoints: []string{eps[victim]}, prefix: prefix},
	)
	gw[0].addUser(t, "dave")
	gw[0].addUser(t, "erin")
	dave := make([]tokens, 3)
	erin := make([]tokens, 3)
	for i, g := range gw {
		dave[i] = g.mustLogin(t, "dave")
		erin[i] = g.mustLogin(t, "erin")
	}
	// Every gateway knows every session before the cut.
	for _, g := range gw {
		if _, err := eventually(time.Second, func() error {
			for i := range gw {
				if r := g.bearer(dave[i].access); r.status != http.StatusOK {
					return fmt.Errorf("%s", r)
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("%s: a token of another gateway: %v", g.name, err)
		}
	}

	frozeAt := time.Now()
	if err := c.Freeze(victim); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			if err := c.Thaw(victim); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(thaw)
	t.Logf("SIGSTOPped %s, gw3's only endpoint; gw1 on %s (the leader), gw2 on %s",
		c.Member(victim).Name(), c.Member(lead).Name(), c.Member(other).Name())

	end := frozeAt.Add(maxStaleness + detect + time.Second)
	watches := make([]*frozenWatch, len(gw))
	var wg sync.WaitGroup
	for i, g := range gw {
		wg.Go(func() { watches[i] = watchBearer(t, g, dave[(i+1)%3].access, frozeAt, end) })
	}
	// While gw3 is cut off: the others log in and revoke; gw3's logins
	// fail fast.
	time.Sleep(500 * time.Millisecond)
	if r := gw[0].revoke("erin"); r.status != http.StatusOK {
		t.Errorf("gw1: admin revoke with a member cut off: %s", r)
	}
	revokedAt := time.Now()
	if d, err := eventually(maxStaleness, func() error {
		if r := gw[1].bearer(erin[0].access); r.status != http.StatusUnauthorized {
			return fmt.Errorf("%s", r)
		}
		return nil
	}); err != nil || d > maxStaleness/3 {
		t.Errorf("gw2: a token revoked through gw1: %v after %v, want 401 well before max_staleness", err, ms(d))
	} else {
		t.Logf("gw2 refused the token revoked through gw1 after %v", ms(time.Since(revokedAt)))
	}
	for _, g := range gw[:2] {
		tk := g.mustLogin(t, "dave")
		if r := g.refresh(tk.refresh); r.status != http.StatusOK {
			t.Errorf("%s: refresh with a member cut off: %s", g.name, r)
		}
	}
	var slowLogin time.Duration
	for time.Now().Before(end.Add(-dialTimeout - time.Second)) {
		r := gw[2].login("dave", password)
		slowLogin = max(slowLogin, r.took)
		if err := unavailable(r); err != nil {
			t.Errorf("gw3: login while cut off: %v", err)
			break
		}
	}
	wg.Wait()

	for i, w := range watches {
		t.Logf("%s: bearer requests served %d times, then 503 %d times from %v after the freeze (0: never), served again %d times, slowest %v",
			gw[i].name, w.ok, w.closed, ms(w.closedAt), w.reopened, ms(w.slowest))
	}
	t.Logf("gw3: logins while cut off all 503 with Retry-After, slowest %v", ms(slowLogin))
	for i := range gw[:2] {
		if w := watches[i]; w.closed != 0 || w.reopened != 0 {
			t.Errorf("%s: bearer requests refused %d times while it reached a quorum, want served throughout", gw[i].name, w.closed)
		}
	}
	w := watches[2]
	if w.ok == 0 || w.closedAt == 0 || w.closedAt > maxStaleness+detect {
		t.Errorf("gw3: bearer requests served %d times, then failed closed %v after the freeze (0: never), want served, then closed by %v",
			w.ok, ms(w.closedAt), maxStaleness+detect)
	}
	if w.reopened != 0 {
		t.Errorf("gw3: %d bearer requests served after failing closed, while still cut off", w.reopened)
	}

	// Thawed: gw3 serves again, and knows of the revocation it missed.
	thawAt := time.Now()
	thaw()
	if _, err := eventually(15*time.Second, func() error {
		if r := gw[2].bearer(dave[0].access); r.status != http.StatusOK {
			return fmt.Errorf("%s", r)
		}
		return nil
	}); err != nil {
		t.Fatalf("gw3: bearer requests did not recover within 15s of SIGCONT: %v", err)
	}
	recovered := time.Since(thawAt)
	for i := range gw {
		if r := gw[2].bearer(erin[i].access); r.status != http.StatusUnauthorized {
			t.Errorf("gw3 after the thaw: a token of erin (issued by gw%d) revoked while gw3 was cut off: %s, want 401", i+1, r)
		}
	}
	gw[2].mustLogin(t, "erin")
	t.Logf("gw3 served again %v after SIGCONT, refusing the revocation it missed", ms(recovered))
}
