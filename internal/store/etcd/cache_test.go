package etcd

import (
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdtest"
	"github.com/crudauth/caddy-crudauth/internal/store/storetest"
)

// waitFor polls cond until it holds or limit passes, and returns how long
// it took.
func waitFor(t *testing.T, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("condition not met within %v", limit)
		}
		time.Sleep(50 * time.Microsecond)
	}
	return time.Since(start)
}

// holdWatch breaks s's watch and keeps it from resuming until release is
// called (at the latest when the test ends): meanwhile nothing reaches s's
// cache but what the test hands it.
func holdWatch(t *testing.T, s *Store) (release func()) {
	t.Helper()
	ch := make(chan struct{})
	hold := func() { <-ch }
	s.cache.beforeWatch.Store(&hold)
	s.cache.breakWatch()
	var once sync.Once
	release = func() { once.Do(func() { s.cache.beforeWatch.Store(nil); close(ch) }) }
	t.Cleanup(release)
	return release
}

// pairWithUser opens two handles on a fresh prefix and creates a user
// named name through the first, once the second has applied it.
func pairWithUser(t *testing.T, endpoints []string, name string) (a, b *Store, u *store.User) {
	t.Helper()
	prefix := freshPrefix()
	a, b = open(t, endpoints, prefix), open(t, endpoints, prefix)
	u = &store.User{Username: name}
	if err := a.CreateUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return b.AppliedRevision() >= a.AppliedRevision() })
	return a, b, u
}

// TestPropagation measures how long a revocation written through handle A
// takes to be refused through handle B's AuthState (B's cache, fed by its
// watch): 500 revocations, alternately an epoch bump and a session end,
// from "A's write returned" to "B's AuthState shows it".
func TestPropagation(t *testing.T) {
	endpoints := etcdtest.Start(t)
	prefix := freshPrefix()
	a, b := open(t, endpoints, prefix), open(t, endpoints, prefix)
	ctx := t.Context()
	u := &store.User{Username: "victim"}
	if err := a.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	const n = 500
	lat := make([]time.Duration, 0, n)
	for i := range n {
		if i%2 == 0 {
			got, err := a.UpdateUser(ctx, u.ID, func(x *store.User) error { x.TokenVersion++; return nil })
			if err != nil {
				t.Fatal(err)
			}
			lat = append(lat, waitFor(t, 5*time.Second, func() bool {
				st, err := b.AuthState(ctx, u.ID)
				return err == nil && st.TokenVersion >= got.TokenVersion
			}))
			continue
		}
		sess := &store.Session{UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}
		if _, err := a.CreateSession(ctx, sess, 0); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, func() bool {
			st, err := b.AuthState(ctx, u.ID)
			return err == nil && st.HasSession(sess.ID)
		})
		if err := a.DeleteSession(ctx, u.ID, sess.ID); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, waitFor(t, 5*time.Second, func() bool {
			st, err := b.AuthState(ctx, u.ID)
			return err == nil && !st.HasSession(sess.ID)
		}))
	}
	slices.Sort(lat)
	p50, p99, worst := lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	t.Logf("revocation propagation over %d revocations: p50 %v, p99 %v, max %v", n, p50, p99, worst)
	if p99 > 100*time.Millisecond {
		t.Errorf("p99 propagation %v, want at most 100ms", p99)
	}
}

// TestCompactionForcesReload: while B's watch is down, A writes and the
// history is compacted past B's applied revision; B's resumed watch gets
// ErrCompacted, B loads everything again, and its cache is right.
func TestCompactionForcesReload(t *testing.T) {
	endpoints := etcdtest.Start(t)
	prefix := freshPrefix()
	a, b := open(t, endpoints, prefix), open(t, endpoints, prefix)
	ctx := t.Context()
	keep := &store.User{Username: "keep"}
	gone := &store.User{Username: "gone"}
	if err := a.CreateUsers(ctx, []*store.User{keep, gone}); err != nil {
		t.Fatal(err)
	}
	sess := &store.Session{UserID: keep.ID, ExpiresAt: time.Now().Add(time.Hour)}
	if _, err := a.CreateSession(ctx, sess, 0); err != nil {
		t.Fatal(err)
	}
	k1 := storetest.NewSigningKey(t, store.AlgEdDSA, time.Now())
	if _, err := a.UpdateSigningKeys(ctx, func(ks *store.KeySet) error { ks.Keys = append(ks.Keys, k1); return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return b.AppliedRevision() >= a.AppliedRevision() })
	if ks, err := b.SigningKeys(ctx); err != nil || len(ks.Keys) != 1 {
		t.Fatalf("B's SigningKeys before the reload: %d keys, %v", len(ks.Keys), err)
	}

	// Hold B's watch down.
	release := holdWatch(t, b)
	before := b.cache.reloads.Load()

	revoked, err := store.Revoke(ctx, a, keep.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteUser(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	fresh := &store.User{Username: "fresh"}
	if err := a.CreateUser(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	// A key retired and one added, which B must learn from the reload.
	k2 := storetest.NewSigningKey(t, store.AlgES256, time.Now())
	wantKeys, err := a.UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
		ks.Key(k1.ID).RetiredAt = time.Now().UTC()
		ks.Keys = append(ks.Keys, k2)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Compact(ctx, a.AppliedRevision(), clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	release()

	waitFor(t, 5*time.Second, func() bool { return b.cache.reloads.Load() > before })
	st, err := b.AuthState(ctx, keep.ID)
	if err != nil || st.TokenVersion != revoked.TokenVersion || len(st.Sessions) != 0 {
		t.Errorf("B's AuthState(keep) after reload = %+v, %v; want version %d, no sessions", st, err, revoked.TokenVersion)
	}
	if _, err := b.AuthState(ctx, gone.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("B's AuthState(gone) after reload: %v, want ErrNotFound", err)
	}
	if _, err := b.AuthState(ctx, fresh.ID); err != nil {
		t.Errorf("B's AuthState(fresh) after reload: %v", err)
	}
	if ks, err := b.SigningKeys(ctx); err != nil || !ks.Equal(wantKeys) {
		t.Errorf("B's SigningKeys after reload: %s, %v; want k1 retired and k2", keyIDs(ks), err)
	}
	// And the watch runs again after the reload.
	if _, err := store.Revoke(ctx, a, keep.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool {
		st, err := b.AuthState(ctx, keep.ID)
		return err == nil && st.TokenVersion == revoked.TokenVersion+1
	})
}

// TestStaleness: with the member stopped, AuthState keeps answering from
// the cache only until MaxStaleness has passed without proof that the
// cache is current, then fails closed with ErrUnavailable; writes and
// reads fail with ErrUnavailable within DialTimeout instead of hanging.
// When the member is back, the same Store recovers.
func TestStaleness(t *testing.T) {
	t.Parallel() // on a member of its own; mostly waiting
	m := etcdtest.StartMember(t)
	const maxStale, dial = 1 * time.Second, 500 * time.Millisecond
	prefix := freshPrefix()
	s := open(t, m.Endpoints(), prefix, func(o *Options) {
		o.MaxStaleness, o.DialTimeout = maxStale, dial
	})
	ctx := t.Context()
	u := &store.User{Username: "stale"}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	key := storetest.NewSigningKey(t, store.AlgEdDSA, time.Now())
	if _, err := s.UpdateSigningKeys(ctx, func(ks *store.KeySet) error { ks.Keys = append(ks.Keys, key); return nil }); err != nil {
		t.Fatal(err)
	}
	// Idle for longer than MaxStaleness: progress requests keep it fresh.
	time.Sleep(maxStale + maxStale/2)
	if _, err := s.AuthState(ctx, u.ID); err != nil {
		t.Fatalf("idle cache: %v", err)
	}
	if _, err := s.SigningKeys(ctx); err != nil {
		t.Fatalf("idle cache, SigningKeys: %v", err)
	}

	begin := time.Now()
	m.Stop()
	stopped := time.Now()
	// The clock starts when the member is gone.
	t.Logf("member stopped in %v", stopped.Sub(begin))
	for _, call := range []struct {
		name string
		do   func() error
	}{
		{"UpdateUser", func() error {
			_, err := s.UpdateUser(ctx, u.ID, func(x *store.User) error { x.TokenVersion++; return nil })
			return err
		}},
		{"GetUser", func() error { _, err := s.GetUser(ctx, u.ID); return err }},
		{"CreateSession", func() error {
			_, err := s.CreateSession(ctx, &store.Session{UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}, 0)
			return err
		}},
	} {
		start := time.Now()
		err := call.do()
		took := time.Since(start)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with the member down: %v, want ErrUnavailable", call.name, err)
		}
		if took > dial+250*time.Millisecond {
			t.Errorf("%s took %v with the member down, want at most DialTimeout %v (+250ms)", call.name, took, dial)
		}
	}
	// AuthState fails closed once MaxStaleness passed since the last
	// proof, which came at most MaxStaleness/8 before the stop.
	deadline := stopped.Add(maxStale + 500*time.Millisecond)
	for {
		_, err := s.AuthState(ctx, u.ID)
		if errors.Is(err, store.ErrUnavailable) {
			t.Logf("AuthState failed closed %v after the stop", time.Since(stopped))
			// The key set is held to the same bound: a key another
			// gateway retired must not keep verifying past it.
			if _, err := s.SigningKeys(ctx); !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("SigningKeys once AuthState failed closed: %v, want ErrUnavailable", err)
			}
			break
		}
		if err != nil {
			t.Fatalf("AuthState: %v", err)
		}
		if _, err := s.SigningKeys(ctx); err != nil && !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("SigningKeys: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("AuthState still answering %v after the stop (MaxStaleness %v)", time.Since(stopped), maxStale)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A key set write fails like the others (after the loop above, so
	// that the loop starts before its deadline).
	began := time.Now()
	_, err := s.UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
		ks.Keys = append(ks.Keys, storetest.NewSigningKey(t, store.AlgEdDSA, time.Now()))
		return nil
	})
	if took := time.Since(began); !errors.Is(err, store.ErrUnavailable) || took > dial+250*time.Millisecond {
		t.Errorf("UpdateSigningKeys with the member down: %v after %v, want ErrUnavailable within DialTimeout %v (+250ms)", err, took, dial)
	}

	// After the restart the same Store confirms its cache current again
	// within a few seconds, and follows writes made through another
	// handle.
	restarted := time.Now()
	m.Restart()
	waitFor(t, 5*time.Second, func() bool {
		_, err := s.AuthState(ctx, u.ID)
		return err == nil
	})
	t.Logf("AuthState answering again %v after the restart", time.Since(restarted))
	if ks, err := s.SigningKeys(ctx); err != nil || !ks.Equal(&store.KeySet{Keys: []store.SigningKey{key}}) {
		t.Errorf("SigningKeys after the restart: %s, %v; want the one key", keyIDs(ks), err)
	}
	got, err := store.Revoke(ctx, s, u.ID)
	if err != nil {
		t.Fatalf("Revoke after the restart: %v", err)
	}
	if st, err := s.AuthState(ctx, u.ID); err != nil || st.TokenVersion != got.TokenVersion {
		t.Errorf("AuthState after the restart = %+v, %v; want version %d", st, err, got.TokenVersion)
	}
	other := open(t, m.Endpoints(), prefix)
	got, err = store.Revoke(ctx, other, u.ID)
	if err != nil {
		t.Fatalf("Revoke through another handle after the restart: %v", err)
	}
	waitFor(t, 5*time.Second, func() bool {
		st, err := s.AuthState(ctx, u.ID)
		return err == nil && st.TokenVersion == got.TokenVersion
	})
	// And it stays current while idle, past MaxStaleness.
	time.Sleep(maxStale + maxStale/2)
	if _, err := s.AuthState(ctx, u.ID); err != nil {
		t.Errorf("idle cache after the restart: %v", err)
	}
	// The outage left no client watch streams behind: one per handle
	// (s and other) once the abandoned ones wound down.
	start := time.Now()
	for n := watchStreams(); n > 2; n = watchStreams() {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%d client watch streams after the outage, want at most 2 (one per handle)", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watchStreams counts the etcd client's watch streams in this process
// (each runs one goroutine).
func watchStreams() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "etcd/client/v3.(*watchGRPCStream).run(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestIdleAfterOpen: a handle opened on a cluster where nothing is written
// afterwards stays confirmed current past MaxStaleness. Its watch starts
// at the revision it loaded; etcd sends no progress notification to a
// watch that starts above the server's revision.
func TestIdleAfterOpen(t *testing.T) {
	t.Parallel() // on a member of its own; mostly waiting
	m := etcdtest.StartMember(t)
	prefix := freshPrefix()
	const maxStale = time.Second
	seed := open(t, m.Endpoints(), prefix)
	u := &store.User{Username: "idle"}
	if err := seed.CreateUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	s := open(t, m.Endpoints(), prefix, func(o *Options) { o.MaxStaleness = maxStale })
	time.Sleep(maxStale + maxStale/2)
	if _, err := s.AuthState(t.Context(), u.ID); err != nil {
		t.Errorf("idle cache after Open: %v", err)
	}
}

// TestRewoundClusterReloads: a cluster whose revision is below the one the
// cache applied (restored from a backup) is not the history the cache
// follows; the cache loads everything again instead of staying
// unconfirmed. Applied is set ahead by hand to stand for the rewind.
func TestRewoundClusterReloads(t *testing.T) {
	t.Parallel() // on a member of its own; mostly waiting
	m := etcdtest.StartMember(t)
	const maxStale = time.Second
	s := open(t, m.Endpoints(), freshPrefix(), func(o *Options) { o.MaxStaleness = maxStale })
	ctx := t.Context()
	u := &store.User{Username: "rewound"}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	want := s.AppliedRevision()
	before := s.cache.reloads.Load()
	s.cache.applied.Store(want + 100)
	s.cache.breakWatch()
	waitFor(t, 5*time.Second, func() bool { return s.cache.reloads.Load() > before })
	if got := s.AppliedRevision(); got != want {
		t.Errorf("applied revision after the reload = %d, want the cluster's %d", got, want)
	}
	time.Sleep(maxStale + maxStale/2)
	if _, err := s.AuthState(ctx, u.ID); err != nil {
		t.Errorf("AuthState after the reload: %v", err)
	}
}

// TestCatchUp: a session created through A a moment ago, which B's cache
// does not hold yet (its watch held down), is in the state B.CatchUp
// returns: read from the cluster, not waited for. A time the cache was
// proven current after costs no round trip. With the cluster unreachable
// CatchUp gives up with ErrUnavailable within DialTimeout.
func TestCatchUp(t *testing.T) {
	m := etcdtest.StartMember(t)
	endpoints := m.Endpoints()
	prefix := freshPrefix()
	const dial = 500 * time.Millisecond
	a := open(t, endpoints, prefix)
	b := open(t, endpoints, prefix, func(o *Options) { o.DialTimeout, o.MaxStaleness = dial, 2*time.Second })
	ctx := t.Context()
	u := &store.User{Username: "catchup"}
	if err := a.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return b.AppliedRevision() >= a.AppliedRevision() })
	proven := time.Now()
	waitFor(t, 5*time.Second, func() bool { return b.cache.confirmed.Load() > proven.UnixNano() })

	holdWatch(t, b)
	sess := &store.Session{UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}
	if _, err := a.CreateSession(ctx, sess, 0); err != nil {
		t.Fatal(err)
	}
	if st, err := b.AuthState(ctx, u.ID); err != nil || st.HasSession(sess.ID) {
		t.Fatalf("B's AuthState with its watch held = %+v, %v; want it without the new session (the test needs B behind)", st, err)
	}
	// Proven current after proven: the cached state, no round trip.
	if st, err := b.CatchUp(ctx, u.ID, proven); err != nil || st.HasSession(sess.ID) {
		t.Errorf("CatchUp to a time the cache was proven current after = %+v, %v; want the cached state", st, err)
	}
	// After the session: read from the cluster, with the watch still held.
	st, err := b.CatchUp(ctx, u.ID, time.Now())
	if err != nil || !st.HasSession(sess.ID) || st.Username != "catchup" {
		t.Errorf("CatchUp with the watch held = %+v, %v; want the session created through A", st, err)
	}
	if _, err := b.CatchUp(ctx, "no-such-user", time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CatchUp of an unknown user: %v, want ErrNotFound", err)
	}
	m.Stop()
	t0 := time.Now()
	_, err = b.CatchUp(ctx, u.ID, time.Now())
	if d := time.Since(t0); !errors.Is(err, store.ErrUnavailable) || d > dial+250*time.Millisecond {
		t.Errorf("CatchUp with the member stopped: %v after %v, want ErrUnavailable within DialTimeout %v", err, d, dial)
	}
}

// TestConfirmedOnlyByALinearizableRead: the cache counts as current at a
// time only once it holds every revision a linearizable read sent at that
// time found. A progress notification or a watch response carries the
// revision of the member serving the watch, which may lag behind the
// cluster (after a leader change, for a while), and may answer an earlier
// request: on its own it must not confirm the cache past a write it has
// not delivered.
func TestConfirmedOnlyByALinearizableRead(t *testing.T) {
	endpoints := etcdtest.Start(t)
	a, b, u := pairWithUser(t, endpoints, "confirm")
	ctx := t.Context()
	holdWatch(t, b)
	stale := b.cache.applied.Load()

	sess := &store.Session{UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}
	if _, err := a.CreateSession(ctx, sess, 0); err != nil {
		t.Fatal(err)
	}
	written := time.Now() // the session was committed before this
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	sent := time.Now()
	resp, err := cli.Get(ctx, a.o.Prefix, clientv3.WithCountOnly()) // linearizable
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision
	if rev <= stale {
		t.Fatalf("cluster revision %d, B applied %d: the write did not move the revision", rev, stale)
	}
	if b.cache.expect(sent, rev) {
		t.Fatal("expect confirmed a cache that lacks the session")
	}
	// Notifications from a member behind the write: no confirmation.
	b.cache.progress(stale)
	b.cache.progress(rev - 1)
	if got := time.Unix(0, b.cache.confirmed.Load()); !got.Before(written) {
		t.Fatalf("confirmed at %v by notifications below revision %d, after the write at %v that the cache lacks", got, rev, written)
	}
	// The revision the read found: confirmed as of the read.
	b.cache.progress(rev)
	if got := b.cache.confirmed.Load(); got < sent.UnixNano() {
		t.Errorf("confirmed at %v once revision %d was delivered, want at least %v", time.Unix(0, got), rev, sent)
	}
}

// TestEventBehindProgressIsApplied: etcd before 3.4.24 and 3.5.8 may send
// a requested progress notification ahead of events still on their way.
// An event below the revision such a notification moved the cache to is
// applied all the same, not skipped as a resumed watch's overlap: skipping
// it would lose a session, or a revocation, for good.
func TestEventBehindProgressIsApplied(t *testing.T) {
	endpoints := etcdtest.Start(t)
	a, b, u := pairWithUser(t, endpoints, "overtaken")
	ctx := t.Context()
	holdWatch(t, b)

	sess := &store.Session{UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}
	if _, err := a.CreateSession(ctx, sess, 0); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	got, err := cli.Get(ctx, a.sessionKey(u.ID, sess.ID))
	if err != nil || len(got.Kvs) != 1 {
		t.Fatalf("reading the session's key: %v", err)
	}
	kv := got.Kvs[0]
	// The notification first, the event after it.
	b.cache.progress(kv.ModRevision + 3)
	b.cache.apply(&clientv3.WatchResponse{
		Header: &etcdserverpb.ResponseHeader{Revision: kv.ModRevision},
		Events: []*clientv3.Event{{Type: mvccpb.PUT, Kv: kv}},
	})
	st, err := b.cache.get(u.ID)
	if err != nil || !st.HasSession(sess.ID) {
		t.Errorf("B's cached state = %+v, %v; want the session whose event came after a progress notification past it", st, err)
	}
	// The watch resumes after the event, not after the notification.
	if d := b.cache.delivered.Load(); d != kv.ModRevision {
		t.Errorf("delivered %d, want the event's revision %d", d, kv.ModRevision)
	}
}
