package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// sameSession compares two sessions field by field; times with Equal.
func sameSession(a, b *store.Session) bool {
	return a.ID == b.ID && a.UserID == b.UserID &&
		(a.Scopes == nil) == (b.Scopes == nil) && slices.Equal(a.Scopes, b.Scopes) &&
		a.Generation == b.Generation && a.RotatedAt.Equal(b.RotatedAt) &&
		a.CreatedAt.Equal(b.CreatedAt) && a.LastUsedAt.Equal(b.LastUsedAt) &&
		a.ExpiresAt.Equal(b.ExpiresAt) && a.UserAgent == b.UserAgent && a.Address == b.Address
}

// newSession is a session of userID that expires in an hour, as a login
// makes it.
func newSession(userID string) *store.Session {
	return &store.Session{
		UserID:     userID,
		Scopes:     []string{"me:read"},
		Generation: 1,
		ExpiresAt:  time.Now().Add(time.Hour).UTC(),
		UserAgent:  "Mozilla/5.0 (test)",
		Address:    "192.0.2.1",
	}
}

func mustSession(t *testing.T, s store.Store, sess *store.Session, max int) []string {
	t.Helper()
	removed, err := s.CreateSession(t.Context(), sess, max)
	if err != nil {
		t.Fatalf("CreateSession(%s): %v", sess.UserID, err)
	}
	return removed
}

func mustGetSession(t *testing.T, s store.Store, userID, sid string) *store.Session {
	t.Helper()
	got, err := s.GetSession(t.Context(), userID, sid)
	if err != nil {
		t.Fatalf("GetSession(%s, %s): %v", userID, sid, err)
	}
	return got
}

// wantSessions checks AuthState.Sessions of id, twice (the second read may
// come from a cache), against want, sorted.
func wantSessions(t *testing.T, s store.Store, id string, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	for round := range 2 {
		st := mustState(t, s, id)
		if !slices.Equal(st.Sessions, want) {
			t.Fatalf("AuthState read %d: sessions %q, want %q", round, st.Sessions, want)
		}
		for _, sid := range want {
			if !st.HasSession(sid) {
				t.Fatalf("HasSession(%s) = false", sid)
			}
		}
		if st.HasSession("snope") {
			t.Fatal("HasSession of an unknown sid = true")
		}
	}
}

func testSessionCreateGet(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{Username: "sess"})
	before := time.Now().Add(-time.Second)
	sess := newSession(u.ID)
	scopes := sess.Scopes
	mustSession(t, s, sess, 0)
	if sess.ID == "" {
		t.Fatal("CreateSession left ID empty")
	}
	for name, at := range map[string]time.Time{"CreatedAt": sess.CreatedAt, "LastUsedAt": sess.LastUsedAt, "RotatedAt": sess.RotatedAt} {
		if at.Before(before) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("%s = %v, want now", name, at)
		}
	}
	got := mustGetSession(t, s, u.ID, sess.ID)
	if !sameSession(got, sess) {
		t.Errorf("GetSession = %+v, CreateSession stored %+v", got, sess)
	}

	// Copies in and out.
	scopes[0] = "mutated"
	got.Scopes[0] = "mutated"
	got.Generation = 99
	if again := mustGetSession(t, s, u.ID, sess.ID); again.Scopes[0] != "me:read" || again.Generation != 1 {
		t.Errorf("GetSession shares memory with a caller: %+v", again)
	}

	// Explicit ID and times are kept (an import); nil and empty scopes
	// stay apart.
	at := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC) // before the others: CreateSession sweeps by CreatedAt
	exp := time.Now().Add(24 * time.Hour).UTC()
	explicit := &store.Session{ID: "sexplicit", UserID: u.ID, Scopes: []string{}, Generation: 7,
		RotatedAt: at.Add(time.Minute), CreatedAt: at, LastUsedAt: at.Add(time.Hour), ExpiresAt: exp}
	want := explicit.Clone()
	mustSession(t, s, explicit, 0)
	if got := mustGetSession(t, s, u.ID, "sexplicit"); !sameSession(got, want) || !sameSession(explicit, want) {
		t.Errorf("explicit session stored as %+v, returned %+v, want %+v", got, explicit, want)
	}
	noScopes := newSession(u.ID)
	noScopes.Scopes = nil
	mustSession(t, s, noScopes, 0)
	if got := mustGetSession(t, s, u.ID, noScopes.ID); got.Scopes != nil {
		t.Errorf("nil scopes stored as %#v", got.Scopes)
	}

	// A taken ID is refused and nothing changes.
	dup := newSession(u.ID)
	dup.ID = "sexplicit"
	if _, err := s.CreateSession(ctx, dup, 0); err == nil {
		t.Error("CreateSession accepted a taken session id")
	}
	if got := mustGetSession(t, s, u.ID, "sexplicit"); !sameSession(got, want) {
		t.Errorf("refused create changed the session: %+v", got)
	}
	// The same sid for another user is another session.
	v := mustCreate(t, s, &store.User{Username: "other"})
	same := newSession(v.ID)
	same.ID = "sexplicit"
	mustSession(t, s, same, 0)
	if got := mustGetSession(t, s, u.ID, "sexplicit"); !sameSession(got, want) {
		t.Errorf("another user's session with the same sid changed this one: %+v", got)
	}

	// Generated IDs are distinct.
	seen := map[string]bool{sess.ID: true}
	for range 20 {
		x := newSession(v.ID)
		mustSession(t, s, x, 0)
		if seen[x.ID] {
			t.Fatalf("generated session id %s repeated", x.ID)
		}
		seen[x.ID] = true
	}

	// Refused: no such user, no user ID, no expiry, nil.
	_, err := s.CreateSession(ctx, newSession("unope"), 0)
	wantErr(t, "CreateSession for an unknown user", err, store.ErrNotFound)
	for name, bad := range map[string]*store.Session{
		"no user id": {ExpiresAt: exp},
		"no expiry":  {UserID: u.ID},
		"nil":        nil,
	} {
		if _, err := s.CreateSession(ctx, bad, 0); err == nil {
			t.Errorf("CreateSession accepted a session with %s", name)
		}
	}
	wantSessions(t, s, u.ID, sess.ID, "sexplicit", noScopes.ID)
}

// testSessionsInAuthState: AuthState lists a user's sessions, sorted, and
// every write that adds or ends one shows at once, also after the previous
// state was read (and possibly cached).
func testSessionsInAuthState(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{Username: "lister", PasswordHash: "h"})
	bystander := mustCreate(t, s, &store.User{Username: "bystander"})
	other := newSession(bystander.ID)
	mustSession(t, s, other, 0)
	wantSessions(t, s, u.ID)

	var live []string
	create := func() {
		x := newSession(u.ID)
		mustSession(t, s, x, 0)
		live = append(live, x.ID)
	}
	steps := []struct {
		name string
		do   func(t *testing.T)
	}{
		{"create", func(*testing.T) { create() }},
		{"create more", func(*testing.T) { create(); create(); create() }},
		{"delete one", func(t *testing.T) {
			if err := s.DeleteSession(ctx, u.ID, live[1]); err != nil {
				t.Fatal(err)
			}
			live = slices.Delete(live, 1, 2)
		}},
		{"rotate one", func(t *testing.T) {
			if _, err := s.UpdateSession(ctx, u.ID, live[0], func(x *store.Session) error {
				x.Generation++
				x.RotatedAt = time.Now().UTC()
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}},
		{"delete all", func(t *testing.T) {
			n, err := s.DeleteSessions(ctx, u.ID)
			if err != nil || n != len(live) {
				t.Fatalf("DeleteSessions = %d, %v; want %d", n, err, len(live))
			}
			live = nil
			if n, err := s.DeleteSessions(ctx, u.ID); n != 0 || err != nil {
				t.Fatalf("DeleteSessions without sessions = %d, %v", n, err)
			}
		}},
		{"create after delete all", func(*testing.T) { create(); create() }},
		{"revoke", func(t *testing.T) {
			if _, err := store.Revoke(ctx, s, u.ID); err != nil {
				t.Fatal(err)
			}
			live = nil
		}},
		{"create after revoke", func(*testing.T) { create() }},
		{"set password", func(t *testing.T) {
			if _, err := store.SetPassword(ctx, s, u.ID, "h2"); err != nil {
				t.Fatal(err)
			}
			live = nil
		}},
		{"create after set password", func(*testing.T) { create(); create() }},
		{"a user update that is no revocation", func(t *testing.T) {
			if _, err := s.UpdateUser(ctx, u.ID, func(x *store.User) error { x.Disabled = true; return nil }); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, step := range steps {
		mustState(t, s, u.ID) // warm any cache
		step.do(t)
		if t.Failed() {
			t.Fatalf("step %q failed", step.name)
		}
		t.Logf("after %s: %d sessions", step.name, len(live))
		wantSessions(t, s, u.ID, live...)
		for _, sid := range live {
			mustGetSession(t, s, u.ID, sid)
		}
	}
	// Nothing of that touched the other user.
	wantSessions(t, s, bystander.ID, other.ID)

	// DeleteUser ends the sessions: they are not found, and a user created
	// afterwards starts without any.
	if err := s.DeleteUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	for _, sid := range live {
		_, err := s.GetSession(ctx, u.ID, sid)
		wantErr(t, "GetSession of a deleted user's session", err, store.ErrSessionNotFound)
	}
	_, err := s.AuthState(ctx, u.ID)
	wantErr(t, "AuthState of the deleted user", err, store.ErrNotFound)
	fresh := mustCreate(t, s, &store.User{Username: "lister"})
	wantSessions(t, s, fresh.ID)
	wantSessions(t, s, bystander.ID, other.ID)
}

// testSessionMax: past max, the least recently used sessions go, never the
// new one, and their IDs are reported.
func testSessionMax(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{Username: "busy"})
	now := time.Now().UTC()
	// Four sessions, last used in this order: b, d, a, c.
	ids := map[string]string{}
	for name, ago := range map[string]time.Duration{"a": 2, "b": 4, "c": 1, "d": 3} {
		x := newSession(u.ID)
		x.LastUsedAt = now.Add(-ago * time.Minute)
		mustSession(t, s, x, 0) // no limit
		ids[name] = x.ID
	}
	byName := func(names ...string) []string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = ids[n]
		}
		return out
	}
	create := func(name string, lastUsed time.Time, max int) []string {
		x := newSession(u.ID)
		x.LastUsedAt = lastUsed
		removed := mustSession(t, s, x, max)
		ids[name] = x.ID
		return removed
	}

	for _, tc := range []struct {
		name        string
		do          func() []string
		wantRemoved []string
		wantLive    []string
	}{
		{"under the limit removes nothing", func() []string { return create("e", time.Time{}, 6) }, nil, []string{"a", "b", "c", "d", "e"}},
		{"at the limit removes the least recently used", func() []string { return create("f", time.Time{}, 5) }, []string{"b"}, []string{"a", "c", "d", "e", "f"}},
		{"a use moves a session up", func() []string {
			if _, err := s.UpdateSession(ctx, u.ID, ids["d"], func(x *store.Session) error {
				x.LastUsedAt = time.Now().UTC()
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			return create("g", time.Time{}, 5)
		}, []string{"a"}, []string{"c", "d", "e", "f", "g"}},
		{"a lower limit removes several, oldest first", func() []string { return create("h", time.Time{}, 3) }, []string{"c", "e", "f"}, []string{"d", "g", "h"}},
		{"the new session stays even when it is the least recently used", func() []string {
			return create("i", now.Add(-time.Hour), 1)
		}, []string{"d", "g", "h"}, []string{"i"}},
		{"max 1 replaces the one session", func() []string { return create("j", time.Time{}, 1) }, []string{"i"}, []string{"j"}},
	} {
		removed := tc.do()
		if want := byName(tc.wantRemoved...); !slices.Equal(removed, want) {
			t.Errorf("%s: removed %q, want %q", tc.name, removed, want)
		}
		wantSessions(t, s, u.ID, byName(tc.wantLive...)...)
		for _, sid := range byName(tc.wantRemoved...) {
			_, err := s.GetSession(ctx, u.ID, sid)
			wantErr(t, tc.name+": GetSession of a removed session", err, store.ErrSessionNotFound)
		}
	}
}

// testSessionExpiry: expired sessions are still there until something
// removes them (GetSession returns them as stored, AuthState lists them),
// ListSessions hides them, CreateSession removes the user's expired ones
// and reports them, and SweepSessions removes everybody's.
func testSessionExpiry(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{Username: "expiring"})
	v := mustCreate(t, s, &store.User{Username: "other"})
	now := time.Now().UTC()
	mk := func(userID string, created, expires time.Duration) *store.Session {
		x := newSession(userID)
		x.CreatedAt = now.Add(created)
		x.ExpiresAt = now.Add(expires)
		mustSession(t, s, x, 0)
		return x
	}
	// Created long ago, in this order: old (expired), mid (expires in a
	// minute), young (in an hour).
	// The expired ones go in last: a CreateSession after them would
	// remove them.
	young := mk(u.ID, -time.Minute, time.Hour)
	mid := mk(u.ID, -2*time.Hour, time.Minute)
	old := mk(u.ID, -3*time.Hour, -time.Hour)
	vLive := mk(v.ID, -3*time.Hour, time.Hour)
	vOld := mk(v.ID, -3*time.Hour, -time.Second)

	if got := mustGetSession(t, s, u.ID, old.ID); !sameSession(got, old) {
		t.Errorf("GetSession of an expired session = %+v, want it as stored %+v", got, old)
	}
	wantSessions(t, s, u.ID, young.ID, old.ID, mid.ID)

	list := func(userID string, at time.Time) []string {
		t.Helper()
		ss, err := s.ListSessions(ctx, userID, at)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]string, len(ss))
		for i, x := range ss {
			out[i] = x.ID
		}
		return out
	}
	for _, tc := range []struct {
		name string
		at   time.Time
		want []string
	}{
		{"now", now, []string{mid.ID, young.ID}},
		{"at mid's expiry", mid.ExpiresAt, []string{young.ID}},
		{"before old's expiry", old.ExpiresAt.Add(-time.Nanosecond), []string{old.ID, mid.ID, young.ID}},
		{"after all", now.Add(2 * time.Hour), []string{}},
	} {
		if got := list(u.ID, tc.at); !slices.Equal(got, tc.want) {
			t.Errorf("ListSessions %s = %q, want %q (oldest first)", tc.name, got, tc.want)
		}
	}
	ss, err := s.ListSessions(ctx, u.ID, now)
	if err != nil || len(ss) != 2 || !sameSession(ss[0], mid) || !sameSession(ss[1], young) {
		t.Errorf("ListSessions = %+v, %v; want every field of mid and young", ss, err)
	}

	// CreateSession removes u's expired one, not v's.
	fresh := newSession(u.ID)
	removed := mustSession(t, s, fresh, 0)
	if !slices.Equal(removed, []string{old.ID}) {
		t.Errorf("CreateSession removed %q, want the expired %s", removed, old.ID)
	}
	wantSessions(t, s, u.ID, young.ID, mid.ID, fresh.ID)
	wantSessions(t, s, v.ID, vOld.ID, vLive.ID)

	// Sweep at now removes v's expired one; at mid's expiry, mid too.
	for _, tc := range []struct {
		at   time.Time
		want int
	}{{now, 1}, {now, 0}, {mid.ExpiresAt, 1}} {
		n, err := s.SweepSessions(ctx, tc.at)
		if err != nil || n != tc.want {
			t.Errorf("SweepSessions(%v) = %d, %v; want %d", tc.at.Sub(now), n, err, tc.want)
		}
	}
	wantSessions(t, s, u.ID, young.ID, fresh.ID)
	wantSessions(t, s, v.ID, vLive.ID)
	_, err = s.GetSession(ctx, u.ID, mid.ID)
	wantErr(t, "GetSession of a swept session", err, store.ErrSessionNotFound)
	if n, err := s.SweepSessions(ctx, now.Add(10*time.Hour)); err != nil || n != 3 {
		t.Errorf("SweepSessions of everything = %d, %v; want 3", n, err)
	}
	wantSessions(t, s, u.ID)
	wantSessions(t, s, v.ID)
}

var errMoved = errors.New("storetest: generation moved")

func testUpdateSession(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{Username: "rotating"})
	sess := newSession(u.ID)
	mustSession(t, s, sess, 0)
	stored := mustGetSession(t, s, u.ID, sess.ID)

	later := time.Now().Add(time.Minute).UTC()
	rotate := func(x *store.Session) {
		x.Generation++
		x.RotatedAt, x.LastUsedAt = later, later
		x.Scopes = []string{"narrowed"}
	}
	rotated := stored.Clone()
	rotate(rotated)

	for _, tc := range []struct {
		name      string
		fn        func(x *store.Session) error
		wantErr   error // as is
		anyErr    bool
		wantOut   *store.Session
		wantAfter *store.Session
	}{
		{"fn error returned as is, nothing stored", func(x *store.Session) error { rotate(x); return errMoved }, errMoved, false, nil, stored},
		{"skip write stores nothing, returns what fn left", func(x *store.Session) error { rotate(x); return store.ErrSkipWrite }, nil, false, rotated, stored},
		{"a changed ID is refused", func(x *store.Session) error { rotate(x); x.ID = "sother"; return nil }, nil, true, nil, stored},
		{"a changed user is refused", func(x *store.Session) error { rotate(x); x.UserID = "uother"; return nil }, nil, true, nil, stored},
		{"a write is stored", func(x *store.Session) error { rotate(x); return nil }, nil, false, rotated, rotated},
	} {
		out, err := s.UpdateSession(ctx, u.ID, sess.ID, tc.fn)
		switch {
		case tc.anyErr:
			if err == nil {
				t.Errorf("%s: UpdateSession succeeded", tc.name)
			}
		case err != tc.wantErr: //nolint:errorlint // returned as is, per the interface
			t.Errorf("%s: UpdateSession error %v, want %v", tc.name, err, tc.wantErr)
		}
		if tc.wantOut != nil && (out == nil || !sameSession(out, tc.wantOut)) {
			t.Errorf("%s: UpdateSession returned %+v, want %+v", tc.name, out, tc.wantOut)
		}
		if got := mustGetSession(t, s, u.ID, sess.ID); !sameSession(got, tc.wantAfter) {
			t.Errorf("%s: stored %+v, want %+v", tc.name, got, tc.wantAfter)
		}
		wantSessions(t, s, u.ID, sess.ID)
	}
	if _, err := s.GetSession(ctx, u.ID, "sother"); !errors.Is(err, store.ErrSessionNotFound) {
		t.Errorf("a refused ID change created a session: %v", err)
	}
}

// testSessionNotFound: every way of naming a session that is not the
// user's is ErrSessionNotFound, and fn never runs for it; per-user calls
// on a user that does not exist are ErrNotFound.
func testSessionNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{Username: "owner"})
	v := mustCreate(t, s, &store.User{Username: "intruder"})
	gone := mustCreate(t, s, &store.User{Username: "gone"})
	mine, theirs, ended, gones := newSession(u.ID), newSession(v.ID), newSession(u.ID), newSession(gone.ID)
	for _, x := range []*store.Session{mine, theirs, ended, gones} {
		mustSession(t, s, x, 0)
	}
	if err := s.DeleteSession(ctx, u.ID, ended.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, user, sid string }{
		{"another user's sid", v.ID, mine.ID},
		{"another user's sid, the other way", u.ID, theirs.ID},
		{"an ended session", u.ID, ended.ID},
		{"an unknown sid", u.ID, "snope"},
		{"an empty sid", u.ID, ""},
		{"an unknown user", "unope", mine.ID},
		{"an empty user", "", mine.ID},
		{"a deleted user's session", gone.ID, gones.ID},
		{"a user id prefix", u.ID[:len(u.ID)-1], mine.ID},
		{"a sid prefix", u.ID, mine.ID[:len(mine.ID)-1]},
	} {
		_, err := s.GetSession(ctx, tc.user, tc.sid)
		wantErr(t, tc.name+": GetSession", err, store.ErrSessionNotFound)
		called := false
		_, err = s.UpdateSession(ctx, tc.user, tc.sid, func(*store.Session) error { called = true; return nil })
		wantErr(t, tc.name+": UpdateSession", err, store.ErrSessionNotFound)
		if called {
			t.Errorf("%s: UpdateSession called fn", tc.name)
		}
		wantErr(t, tc.name+": DeleteSession", s.DeleteSession(ctx, tc.user, tc.sid), store.ErrSessionNotFound)
	}
	for _, id := range []string{"unope", "", gone.ID} {
		_, err := s.DeleteSessions(ctx, id)
		wantErr(t, "DeleteSessions("+id+")", err, store.ErrNotFound)
		_, err = s.ListSessions(ctx, id, time.Now())
		wantErr(t, "ListSessions("+id+")", err, store.ErrNotFound)
	}
	// The real owner's session is untouched by all of it.
	if got := mustGetSession(t, s, u.ID, mine.ID); !sameSession(got, mine) {
		t.Errorf("session changed by calls naming it wrongly: %+v", got)
	}
	wantSessions(t, s, u.ID, mine.ID)
	wantSessions(t, s, v.ID, theirs.ID)
	if ss, err := s.ListSessions(ctx, v.ID, time.Now()); err != nil || len(ss) != 1 || ss[0].ID != theirs.ID {
		t.Errorf("ListSessions(intruder) = %+v, %v", ss, err)
	}
}

// testSessionRotationRace: many refreshes of one session at once, each a
// compare-and-increment of Generation from the same starting generation.
// Exactly one may move it; every other one must see the moved generation
// (no lost update, no fork). Half the losers return ErrSkipWrite (the
// grace path: they get the session as it now is), half an error of their
// own.
func testSessionRotationRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{Username: "racer"})
	sess := newSession(u.ID)
	mustSession(t, s, sess, 0)
	const n = 50
	from := sess.Generation
	type result struct {
		out *store.Session
		err error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			out, err := s.UpdateSession(ctx, u.ID, sess.ID, func(x *store.Session) error {
				if x.Generation != from {
					if i%2 == 0 {
						return store.ErrSkipWrite
					}
					return errMoved
				}
				x.Generation++
				x.UserAgent = fmt.Sprintf("winner %d", i)
				return nil
			})
			results[i] = result{out, err}
		})
	}
	close(start)
	wg.Wait()
	winners := []int{}
	for i, r := range results {
		switch {
		case r.err == nil && r.out.Generation == from+1 && r.out.UserAgent == fmt.Sprintf("winner %d", i):
			winners = append(winners, i)
		case r.err == nil && i%2 == 0 && r.out.Generation == from+1:
			// A loser that skipped: it saw the moved generation.
		case r.err == errMoved && i%2 == 1: //nolint:errorlint // returned as is
		default:
			t.Errorf("refresh %d: %+v, %v", i, r.out, r.err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d refreshes moved the generation (%v), want exactly 1", len(winners), winners)
	}
	got := mustGetSession(t, s, u.ID, sess.ID)
	if got.Generation != from+1 || got.UserAgent != fmt.Sprintf("winner %d", winners[0]) {
		t.Errorf("stored %+v; the winner was %d", got, winners[0])
	}
	for i, r := range results {
		if r.err == nil && i != winners[0] && r.out.UserAgent != got.UserAgent {
			t.Errorf("refresh %d skipped but saw %q, not the winner's write", i, r.out.UserAgent)
		}
	}
}

// testSessionSweepByCallersClock: CreateSession removes the sessions that
// expired by the new session's CreatedAt, the caller's clock, not the
// store's: a session made on a clock far from the store's keeps its
// siblings that are live on that clock.
func testSessionSweepByCallersClock(t *testing.T, s store.Store) {
	u := mustCreate(t, s, &store.User{Username: "clocked"})
	then := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	mk := func(created, expires time.Time) *store.Session {
		x := newSession(u.ID)
		x.CreatedAt, x.LastUsedAt, x.RotatedAt, x.ExpiresAt = created, created, created, expires
		mustSession(t, s, x, 0)
		return x
	}
	a := mk(then, then.Add(time.Hour))
	b := mk(then.Add(time.Minute), then.Add(time.Hour))
	wantSessions(t, s, u.ID, a.ID, b.ID)
	c := mk(then.Add(2*time.Hour), then.Add(3*time.Hour))
	wantSessions(t, s, u.ID, c.ID)
}
