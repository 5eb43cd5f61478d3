package gatewaystest

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// allGateways is three gateways on every member of the cluster.
func allGateways(t *testing.T, l *ledger, prefix string) []*gateway {
	eps := cluster.Endpoints()
	c := gwConfig{endpoints: eps, prefix: prefix}
	return startGateways(t, l, c, c, c)
}

// TestGatewaysShareState: three Caddy processes on one prefix are one
// gateway to their users. A token issued by one works on the others, a
// refresh token rotates on another, a revocation through one's admin API
// is refused by all within moments (well before max_staleness, which
// bounds it only when the cluster cannot be heard), and wrong passwords
// spread over the three lock the account on all three.
func TestGatewaysShareState(t *testing.T) {
	c := needCluster(t)
	prefix := freshPrefix()
	l := newLedger(t)
	// A user added before any gateway starts, with the command line on
	// the store: the gateways find it when they load the prefix.
	cliAddUser(t, c.Endpoints(), prefix, "alice")
	gw := allGateways(t, l, prefix)
	gw[2].addUser(t, "bob") // and one through a running gateway

	tk := gw[0].mustLogin(t, "alice")
	for _, g := range gw {
		if r := g.bearer(tk.access); r.status != http.StatusOK {
			t.Fatalf("%s: a token issued by gw1: %s, want 200", g.name, r)
		}
	}
	// The refresh token gw1 issued rotates on gw2, and the successor's
	// access token works on gw3: a session is the same everywhere.
	r := gw[1].refresh(tk.refresh)
	rot, err := r.tokens()
	if err != nil {
		t.Fatalf("gw2: refresh of gw1's refresh token: %v", err)
	}
	if r := gw[2].bearer(rot.access); r.status != http.StatusOK {
		t.Fatalf("gw3: the access token of gw2's refresh: %s, want 200", r)
	}

	// A client behind a load balancer: its next request after the login
	// reaches another gateway at once, and its refresh a third. Each
	// gateway catches up with the session the other created, rather than
	// refuse a token its cache has not seen yet.
	for i := range 12 {
		tk := gw[i%3].mustLogin(t, "alice")
		if r := gw[(i+1)%3].bearer(tk.access); r.status != http.StatusOK {
			t.Errorf("%s: a token issued by %s a moment ago: %s, want 200", gw[(i+1)%3].name, gw[i%3].name, r)
		}
		if r := gw[(i+2)%3].refresh(tk.refresh); r.status != http.StatusOK {
			t.Errorf("%s: a refresh token issued by %s a moment ago: %s, want 200", gw[(i+2)%3].name, gw[i%3].name, r)
		}
	}

	// Revoke through gw2's admin API; each gateway is polled until it
	// refuses the tokens issued before.
	ack := time.Now()
	if r := gw[1].revoke("alice"); r.status != http.StatusOK {
		t.Fatalf("gw2: revoke through the admin API: %s", r)
	}
	acked := time.Since(ack)
	ack = time.Now()
	refusedAfter := make([]time.Duration, len(gw))
	var wg sync.WaitGroup
	for i, g := range gw {
		wg.Go(func() {
			d, err := eventually(maxStaleness, func() error {
				for _, a := range []string{tk.access, rot.access} {
					r := g.bearer(a)
					if r.status == http.StatusOK {
						return fmt.Errorf("still honoured")
					}
					if r.status != http.StatusUnauthorized {
						t.Errorf("%s: a revoked token: %s, want 401", g.name, r)
					}
				}
				return nil
			})
			refusedAfter[i] = d
			if err != nil {
				t.Errorf("%s: tokens revoked through gw2 still honoured %v after the revocation was acknowledged", g.name, ms(d))
			}
		})
	}
	wg.Wait()
	t.Logf("revocation through gw2's admin API acknowledged in %v; refused on gw1 after %v, gw2 after %v, gw3 after %v (max_staleness %v)",
		ms(acked), refusedAfter[0].Round(10*time.Microsecond), refusedAfter[1].Round(10*time.Microsecond), refusedAfter[2].Round(10*time.Microsecond), maxStaleness)
	for i, d := range refusedAfter {
		// A functional bound, far under max_staleness: the watch delivers
		// the revocation; nothing waits for the cache to go stale.
		if d > maxStaleness/3 {
			t.Errorf("%s refused the revoked tokens only %v after the acknowledgement, want well before max_staleness %v", gw[i].name, d, maxStaleness)
		}
	}
	for _, g := range gw {
		if r := g.refresh(rot.refresh); r.status != http.StatusBadRequest {
			t.Errorf("%s: refresh with a revoked refresh token: %s, want 400 invalid_grant", g.name, r)
		}
	}
	tk2 := gw[2].mustLogin(t, "alice")
	for _, g := range gw {
		if r := g.bearer(tk2.access); r.status != http.StatusOK {
			t.Errorf("%s: a token issued after the revocation: %s, want 200", g.name, r)
		}
	}

	// The throttle is shared: five wrong passwords for bob, spread over
	// the three gateways, lock bob on all three.
	for i := range 5 {
		g := gw[i%3]
		if r := g.login("bob", badPasswd); r.status == http.StatusOK || r.status == http.StatusTooManyRequests {
			t.Fatalf("%s: wrong password %d: %s, want a refusal before the lockout", g.name, i+1, r)
		}
	}
	for _, g := range gw {
		r := g.login("bob", password)
		if r.status != http.StatusTooManyRequests || !r.retryAfter() {
			t.Errorf("%s: the right password after five wrong ones on three gateways: %s (Retry-After %q), want 429 with Retry-After",
				g.name, r, r.header.Get("Retry-After"))
		}
	}
	// alice is not locked by bob's failures.
	gw[0].mustLogin(t, "alice")
}
