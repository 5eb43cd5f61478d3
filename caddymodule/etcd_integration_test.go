package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/crudauth/caddy-crudauth/internal/keys"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdtest"
	"github.com/crudauth/caddy-crudauth/internal/throttle"
)

// TestEtcdGateway runs the gateway on `store etcd` against a real
// (embedded) member, with a second store handle standing in for another
// gateway on the same cluster: what it writes (a revocation, a session
// ended) is refused by this gateway at once, through the watch, without a
// restart. With the member stopped, bearer checks fail closed with 503 and
// Retry-After once max_staleness has passed, and logins get 503 within
// dial_timeout; with the member back, everything works again.
func TestEtcdGateway(t *testing.T) {
	member := etcdtest.StartMember(t)
	g, other := newEtcdGateway(t, member, 500*time.Millisecond, time.Second)

	g.load(t, gwConfig{auth: "refresh body\n\t\tdefault_scopes me:read"})
	alice := g.addUser(t, "alice", nil)

	// refusedWithin polls until tok is refused and returns how long it took.
	refusedWithin := func(tok string, limit time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			r := g.get(t, "/api", tok)
			if r.status == http.StatusUnauthorized {
				return time.Since(start)
			}
			if r.status != http.StatusOK || time.Since(start) > limit {
				t.Fatalf("after %v: %s, want 401", time.Since(start), r)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}

	lr := g.mustLogin(t, "alice", "")
	wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
	g.backend.wantOne(t)

	// Another gateway revokes: refused here through the watch.
	if _, err := store.Revoke(context.Background(), other, alice.ID); err != nil {
		t.Fatal(err)
	}
	t.Logf("revocation written elsewhere refused here after %v", refusedWithin(lr.access, time.Second))
	wantOAuthError(t, g.refreshJSON(t, lr.refresh), http.StatusBadRequest, "invalid_grant")

	// Another gateway ends one session: only that one is refused.
	a, b := g.mustLogin(t, "alice", ""), g.mustLogin(t, "alice", "")
	sid := claims(t, a.access)["sid"].(string)
	if err := other.DeleteSession(context.Background(), alice.ID, sid); err != nil {
		t.Fatal(err)
	}
	t.Logf("session ended elsewhere refused here after %v", refusedWithin(a.access, time.Second))
	wantStatus(t, g.get(t, "/api", b.access), http.StatusOK)
	g.backend.take()

	// Failed logins counted by another gateway lock the username here
	// too: the throttle lives in the cluster.
	g.addUser(t, "bob", nil)
	lim := other.SharedThrottle(throttle.Config{})
	for range throttle.DefaultUserMaxFailures {
		if _, err := lim.Fail(context.Background(), throttle.IPKey("192.0.2.7"), "bob"); err != nil {
			t.Fatal(err)
		}
	}
	if r := g.login(t, "bob", testPassword, ""); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Errorf("login of a username locked through another gateway: %s, want 429 with Retry-After", r)
	}

	// The cluster goes away: bearer checks go on from the cache for at
	// most max_staleness, then fail closed; a login fails fast.
	member.Stop()
	start := time.Now()
	var r *response
	for {
		r = g.get(t, "/api", b.access)
		if r.status != http.StatusOK || time.Since(start) > 5*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("bearer check with the cluster down: %s (Retry-After %q), want 503 with Retry-After", r, r.header.Get("Retry-After"))
	}
	t.Logf("bearer checks failed closed %v after the member stopped", time.Since(start))
	g.backend.take()
	start = time.Now()
	lr2 := g.login(t, "alice", testPassword, "")
	if lr2.status != http.StatusServiceUnavailable || lr2.header.Get("Retry-After") == "" {
		t.Errorf("login with the cluster down: %s, want 503 with Retry-After", lr2)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("login with the cluster down took %v (dial_timeout 500ms)", d)
	}

	// Back: no restart of Caddy needed.
	member.Restart()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r = g.get(t, "/api", b.access)
		if r.status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway did not recover after the member came back: %s", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.mustLogin(t, "alice", "")
}

// TestEtcdSharedKeys runs an EdDSA gateway on etcd with a second store
// handle standing in for another gateway: the key pair the gateway made
// at start is the one the other sees, a rotation written elsewhere shows
// in this gateway's JWKS, and a retirement written elsewhere refuses the
// retired key's tokens here, through the watch, without a restart.
func TestEtcdSharedKeys(t *testing.T) {
	g, other := newEtcdGateway(t, etcdtest.StartMember(t), 0, 0)

	g.load(t, gwConfig{auth: "refresh body\n\t\tsigning_alg EdDSA\n\t\tkey_publish_delay 1h"})
	g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "")
	kid := decodeSegment(t, strings.Split(lr.access, ".")[0])["kid"].(string)
	waitFor(t, time.Second, func() bool {
		ks, err := other.SigningKeys(context.Background())
		return err == nil && ks.Key(kid) != nil
	})

	k, err := keys.Rotate(context.Background(), other, store.AlgEdDSA, time.Now(), time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, func() bool { return g.jwksOf(t)[k.ID] != nil })

	wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
	g.backend.wantOne(t)
	if _, _, err := keys.Retire(context.Background(), other, kid, time.Now()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, time.Second, func() bool { return g.get(t, "/api", lr.access).status == http.StatusUnauthorized })
	t.Logf("a key retired elsewhere was refused here after %v", time.Since(start))
	g.backend.wantNone(t)
	// The retirement added a replacement (the pending key does not sign
	// yet): logins go on with it.
	fresh := g.mustLogin(t, "alice", "")
	if got := decodeSegment(t, strings.Split(fresh.access, ".")[0])["kid"]; got == kid || got == k.ID {
		t.Fatalf("after the retirement a login was signed by %v", got)
	}
	wantStatus(t, g.get(t, "/api", fresh.access), http.StatusOK)
	g.backend.wantOne(t)
}

// newEtcdGateway makes a gateway on `store etcd` against member, on a
// prefix of its own (dial_timeout and max_staleness when not 0), holding
// the store handle the running gateway uses too; other is a second handle
// on the same prefix, standing in for another gateway.
func newEtcdGateway(t *testing.T, member *etcdtest.Member, dial, stale time.Duration) (g *gateway, other *etcd.Store) {
	t.Helper()
	eps := member.Endpoints()
	prefix := fmt.Sprintf("/crudauth-it-%d/", time.Now().UnixNano())
	lines := fmt.Sprintf("\t\t\tendpoints %s\n\t\t\tprefix %s", strings.Join(eps, " "), prefix)
	if dial != 0 {
		lines += fmt.Sprintf("\n\t\t\tdial_timeout %s", dial)
	}
	if stale != 0 {
		lines += fmt.Sprintf("\n\t\t\tmax_staleness %s", stale)
	}
	g = &gateway{backend: newBackend(t), client: newClient(), etcd: lines}
	mod := &EtcdStore{Endpoints: eps, Prefix: prefix, DialTimeout: caddy.Duration(dial), MaxStaleness: caddy.Duration(stale)}
	st, key, err := acquireStore(mod) // the handle the gateway uses too
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = releaseStore(key) })
	g.st = st
	other, err = etcd.Open(t.Context(), etcd.Options{Endpoints: eps, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	return g, other
}

// waitFor polls cond until it holds or limit passed.
func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
