package etcd

// Fault tests against a real three-member cluster whose members are
// separate etcd processes, so that a member can be SIGKILLed (a crash) or
// SIGSTOPped (a frozen process: its peers and clients see a partition).
// The in-process members of etcdtest cannot be frozen that way; etcdproc
// runs the processes.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdproc"
)

func openFault(t *testing.T, endpoints []string, prefix string, dial, stale time.Duration) *Store {
	t.Helper()
	return open(t, endpoints, prefix, func(o *Options) {
		o.DialTimeout = dial
		o.MaxStaleness = stale
	})
}

func newFaultSession(uid string) *store.Session {
	now := time.Now().UTC()
	return &store.Session{UserID: uid, Scopes: []string{"read"}, ExpiresAt: now.Add(time.Hour)}
}

// TestFaultKillMemberUnderLoad crashes the leader while three gateways
// revoke tokens and create sessions: every acknowledged write must be
// there afterwards, the gateways keep writing after a short blip and
// their AuthState keeps answering.
func TestFaultKillMemberUnderLoad(t *testing.T) {
	c := etcdproc.StartT(t, 3)
	ctx := t.Context()
	const (
		dial     = time.Second
		stale    = 3 * time.Second
		load     = 5 * time.Second
		killAt   = 1500 * time.Millisecond
		nRevoke  = 12
		nSession = 12
	)
	prefix := freshPrefix()
	gw := []*Store{
		openFault(t, c.Endpoints(), prefix, dial, stale),
		openFault(t, c.Endpoints(), prefix, dial, stale),
		openFault(t, c.Endpoints(), prefix, dial, stale),
	}
	// Revocations and session creates go to disjoint users: a revocation
	// ends the user's sessions, which would make "acknowledged session
	// still there" depend on the order of writes.
	var revUsers, sesUsers []string
	for i := range nRevoke + nSession {
		u := &store.User{Username: fmt.Sprintf("fault%d", i), PasswordHash: "$2a$10$abcdefghijklmnopqrstuv"}
		if err := gw[i%3].CreateUser(ctx, u); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
		if i < nRevoke {
			revUsers = append(revUsers, u.ID)
		} else {
			sesUsers = append(sesUsers, u.ID)
		}
	}

	type result struct {
		okBefore, okAfter, fails int
		lastOK                   time.Time
		maxGap, maxCall          time.Duration
		authOK, authFail         int
		authOKAfter              int
		maxAuth                  time.Duration
	}
	var (
		mu        sync.Mutex
		ackedTV   = map[string]uint64{} // user -> highest acknowledged TokenVersion
		ackedSess = map[string][]string{}
		results   = make([]result, len(gw))
		killedAt  atomic.Int64
		start     = time.Now()
		stop      = start.Add(load)
		wg        sync.WaitGroup
	)
	for g, s := range gw {
		// The writer of gateway g.
		wg.Go(func() {
			r := &results[g]
			r.lastOK = time.Now()
			for i := 0; time.Now().Before(stop); i++ {
				t0 := time.Now()
				var err error
				if i%2 == 0 {
					uid := revUsers[rand.IntN(len(revUsers))]
					var u *store.User
					u, err = store.Revoke(ctx, s, uid)
					if err == nil {
						mu.Lock()
						ackedTV[uid] = max(ackedTV[uid], u.TokenVersion)
						mu.Unlock()
					}
				} else {
					uid := sesUsers[rand.IntN(len(sesUsers))]
					sess := newFaultSession(uid)
					_, err = s.CreateSession(ctx, sess, 0)
					if err == nil {
						mu.Lock()
						ackedSess[uid] = append(ackedSess[uid], sess.ID)
						mu.Unlock()
					}
				}
				d := time.Since(t0)
				r.maxCall = max(r.maxCall, d)
				if err != nil {
					r.fails++
					if !errors.Is(err, store.ErrUnavailable) {
						t.Errorf("gateway %d: write failed with %v, want an error wrapping ErrUnavailable", g, err)
					}
					continue
				}
				now := time.Now()
				r.maxGap = max(r.maxGap, now.Sub(r.lastOK))
				r.lastOK = now
				if k := killedAt.Load(); k != 0 && t0.UnixNano() > k {
					r.okAfter++
				} else {
					r.okBefore++
				}
			}
		})
		// The bearer path of gateway g: AuthState from the cache.
		wg.Go(func() {
			r := &results[g]
			for time.Now().Before(stop) {
				t0 := time.Now()
				_, err := s.AuthState(ctx, revUsers[rand.IntN(len(revUsers))])
				r.maxAuth = max(r.maxAuth, time.Since(t0))
				if err != nil {
					r.authFail++
				} else {
					r.authOK++
					if k := killedAt.Load(); k != 0 && t0.UnixNano() > k {
						r.authOKAfter++
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	time.Sleep(killAt)
	victim, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	killedAt.Store(time.Now().UnixNano())
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILLed leader %s at %v", c.Member(victim).Name(), time.Since(start).Round(time.Millisecond))
	wg.Wait()

	for g, r := range results {
		t.Logf("gateway %d: writes ok %d before kill, %d after, %d failed; longest gap between acknowledged writes %v, longest call %v; AuthState ok %d (%d after kill), failed %d, longest %v",
			g, r.okBefore, r.okAfter, r.fails, r.maxGap.Round(time.Millisecond), r.maxCall.Round(time.Millisecond),
			r.authOK, r.authOKAfter, r.authFail, r.maxAuth.Round(time.Microsecond))
		if r.okBefore == 0 || r.okAfter == 0 {
			t.Errorf("gateway %d: %d writes acknowledged before the kill, %d after: want some in both", g, r.okBefore, r.okAfter)
		}
		if d := stop.Sub(r.lastOK); d > 1500*time.Millisecond {
			t.Errorf("gateway %d: last acknowledged write %v before the end of the load: the gateway did not keep serving", g, d)
		}
		if r.maxGap > 2*dial+time.Second {
			t.Errorf("gateway %d: %v without an acknowledged write, want a blip under %v", g, r.maxGap, 2*dial+time.Second)
		}
		if r.maxCall > 2*dial+time.Second {
			t.Errorf("gateway %d: a write took %v (dial_timeout %v)", g, r.maxCall, dial)
		}
		if r.authFail != 0 || r.authOKAfter == 0 {
			t.Errorf("gateway %d: AuthState failed %d times, answered %d times after the kill: want it answering throughout", g, r.authFail, r.authOKAfter)
		}
	}

	// Bring the crashed member back, then check through a fresh handle
	// that nothing acknowledged was lost.
	t0 := time.Now()
	if err := c.Restart(ctx, victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s restarted and healthy in %v", c.Member(victim).Name(), time.Since(t0).Round(time.Millisecond))
	fresh := openFault(t, c.Endpoints(), prefix, dial, stale)
	var nTV, nSess int
	for uid, tv := range ackedTV {
		u, err := fresh.GetUser(ctx, uid)
		if err != nil {
			t.Fatalf("GetUser %s: %v", uid, err)
		}
		st, err := fresh.AuthState(ctx, uid)
		if err != nil {
			t.Fatalf("AuthState %s: %v", uid, err)
		}
		if u.TokenVersion < tv || st.TokenVersion < tv {
			t.Errorf("user %s: TokenVersion %d (AuthState %d) after an acknowledged revocation to %d: revocation lost", uid, u.TokenVersion, st.TokenVersion, tv)
		}
		nTV++
	}
	for uid, sids := range ackedSess {
		st, err := fresh.AuthState(ctx, uid)
		if err != nil {
			t.Fatalf("AuthState %s: %v", uid, err)
		}
		for _, sid := range sids {
			if _, err := fresh.GetSession(ctx, uid, sid); err != nil {
				t.Errorf("acknowledged session %s of %s: %v", sid, uid, err)
			}
			if !st.HasSession(sid) {
				t.Errorf("acknowledged session %s of %s missing from AuthState", sid, uid)
			}
			nSess++
		}
	}
	t.Logf("verified through a fresh handle: %d users' revocations, %d acknowledged sessions", nTV, nSess)
	if nTV == 0 || nSess == 0 {
		t.Errorf("nothing to verify: %d revocations, %d sessions acknowledged", nTV, nSess)
	}
}

// TestFaultQuorumLost freezes two of three members (SIGSTOP: to the rest
// of the cluster and to clients, a partition). Writes must fail with
// ErrUnavailable within dial_timeout and no call may hang; AuthState
// serves from its cache until max_staleness and then fails closed; once
// the members run again both recover on the same handles.
func TestFaultQuorumLost(t *testing.T) {
	c := etcdproc.StartT(t, 3)
	ctx := t.Context()
	const (
		dial   = time.Second
		stale  = 3 * time.Second
		margin = time.Second
		detect = 3 * time.Second
	)
	prefix := freshPrefix()
	gw := []*Store{
		openFault(t, c.Endpoints(), prefix, dial, stale),
		openFault(t, c.Endpoints(), prefix, dial, stale),
	}
	u := &store.User{Username: "quorum", PasswordHash: "$2a$10$abcdefghijklmnopqrstuv"}
	if err := gw[0].CreateUser(ctx, u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if _, err := store.Revoke(ctx, gw[0], u.ID); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	// Both handles' caches must hold the user before the cluster goes:
	// the other handle learns of gw[0]'s writes through its watch, a
	// moment after they committed, and a freeze in that moment would
	// leave it without the user for the rest of the test.
	for g, s := range gw {
		deadline := time.Now().Add(5 * time.Second)
		for {
			st, err := s.AuthState(ctx, u.ID)
			if err == nil && st.TokenVersion == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway %d never saw the revocation before the freeze: %+v, %v", g, st, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Freeze the leader and one follower, so the member left has neither
	// a leader nor a quorum.
	lead, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	frozen := []int{lead}
	for i := range c.Len() {
		if i != lead && len(frozen) < 2 {
			frozen = append(frozen, i)
		}
	}
	stoppedAt := time.Now()
	for _, i := range frozen {
		if err := c.Freeze(i); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("SIGSTOPped %s (leader) and %s", c.Member(frozen[0]).Name(), c.Member(frozen[1]).Name())

	// Writes and AuthState on both handles at once, until well past
	// max_staleness. Every write must fail, with ErrUnavailable, within
	// dial_timeout (+ margin). AuthState must answer at once throughout,
	// from the cache at first, and fail closed once nothing confirmed the
	// cache current for max_staleness, and stay closed. The member left
	// running confirms the cache (progress notifications) until it notices
	// that it lost its leader, a few election timeouts: hence detect.
	type result struct {
		writes, authOK int
		slowestWrite   time.Duration
		slowestAuth    time.Duration
		closedAt       time.Duration // since the stop; 0: never
		reopened       int           // successes after failing closed
		lastErr        error
	}
	results := make([]result, len(gw))
	end := stoppedAt.Add(stale + detect + margin)
	var wg sync.WaitGroup
	for g, s := range gw {
		wg.Go(func() {
			r := &results[g]
			for i := 0; time.Now().Before(end); i++ {
				t0 := time.Now()
				var err error
				if i%2 == 0 {
					_, err = store.Revoke(ctx, s, u.ID)
				} else {
					_, err = s.CreateSession(ctx, newFaultSession(u.ID), 0)
				}
				d := time.Since(t0)
				r.slowestWrite = max(r.slowestWrite, d)
				r.writes++
				if !errors.Is(err, store.ErrUnavailable) {
					t.Errorf("gateway %d, write %d without quorum: err %v after %v, want an error wrapping ErrUnavailable", g, i, err, d)
				}
				if d > dial+margin {
					t.Errorf("gateway %d, write %d without quorum took %v, want at most dial_timeout %v + %v", g, i, d, dial, margin)
				}
			}
		})
		wg.Go(func() {
			r := &results[g]
			for time.Now().Before(end) {
				t0 := time.Now()
				_, err := s.AuthState(ctx, u.ID)
				r.slowestAuth = max(r.slowestAuth, time.Since(t0))
				switch {
				case err == nil && r.closedAt == 0:
					r.authOK++
				case err == nil:
					r.reopened++
				case r.closedAt == 0:
					r.closedAt = time.Since(stoppedAt)
					r.lastErr = err
					if !errors.Is(err, store.ErrUnavailable) {
						t.Errorf("gateway %d: AuthState failed with %v, want ErrUnavailable", g, err)
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	for g, r := range results {
		t.Logf("gateway %d without quorum: %d writes, all ErrUnavailable, slowest %v (dial_timeout %v); AuthState answered %d times, failed closed %v after the stop (max_staleness %v), slowest call %v: %v",
			g, r.writes, r.slowestWrite.Round(time.Millisecond), dial, r.authOK, r.closedAt.Round(time.Millisecond), stale, r.slowestAuth.Round(time.Microsecond), r.lastErr)
		if r.closedAt == 0 || r.closedAt > stale+detect {
			t.Errorf("gateway %d: AuthState failed closed at %v after the stop (0: never), want by max_staleness %v + %v", g, r.closedAt, stale, detect)
		}
		if r.reopened != 0 {
			t.Errorf("gateway %d: AuthState answered %d times after failing closed, with no quorum", g, r.reopened)
		}
		if r.slowestAuth > 100*time.Millisecond {
			t.Errorf("gateway %d: an AuthState call took %v while the cluster was partitioned", g, r.slowestAuth)
		}
	}

	// Thaw: writes and AuthState recover on the same handles.
	contAt := time.Now()
	for _, i := range frozen {
		if err := c.Thaw(i); err != nil {
			t.Fatal(err)
		}
	}
	for g, s := range gw {
		var (
			ru  *store.User
			err error
		)
		for time.Since(contAt) < 15*time.Second {
			if ru, err = store.Revoke(ctx, s, u.ID); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("gateway %d: writes did not recover within 15s of SIGCONT: %v", g, err)
		}
		writeOK := time.Since(contAt)
		var st store.AuthState
		for time.Since(contAt) < 15*time.Second {
			if st, err = s.AuthState(ctx, u.ID); err == nil && st.TokenVersion >= ru.TokenVersion {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil || st.TokenVersion < ru.TokenVersion {
			t.Fatalf("gateway %d: AuthState did not recover within 15s of SIGCONT: %v (TokenVersion %d, want %d)", g, err, st.TokenVersion, ru.TokenVersion)
		}
		t.Logf("gateway %d: after SIGCONT a write succeeded at %v, AuthState current (TokenVersion %d) at %v",
			g, writeOK.Round(time.Millisecond), st.TokenVersion, time.Since(contAt).Round(time.Millisecond))
	}
	// Each gateway sees the other's revocation too: the watch resumed.
	final, err := gw[0].GetUser(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	for g, s := range gw {
		deadline := time.Now().Add(2 * time.Second)
		for {
			st, err := s.AuthState(ctx, u.ID)
			if err == nil && st.TokenVersion == final.TokenVersion {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway %d: AuthState %+v, %v; want TokenVersion %d", g, st, err, final.TokenVersion)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
