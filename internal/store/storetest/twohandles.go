package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/password"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// pair hands out two handles, A and B, on one backing state. With a
// concurrent backend both stay open for the whole test, so B reads (and
// may cache) before A writes and must still see the write afterwards: the
// case of two gateways on one store. Otherwise each switch from one handle
// to the other closes the open one first.
type pair struct {
	t           *testing.T
	open        func() (store.Store, error)
	concurrent  bool
	propagation time.Duration // Backend.Propagation

	h   [2]store.Store
	cur int
}

func (p *pair) A() store.Store { return p.get(0) }
func (p *pair) B() store.Store { return p.get(1) }

func (p *pair) get(i int) store.Store {
	p.t.Helper()
	if p.concurrent {
		if p.h[i] == nil {
			p.h[i] = mustOpen(p.t, p.open)
		}
		return p.h[i]
	}
	if p.h[i] != nil && p.cur == i {
		return p.h[i]
	}
	if o := p.h[1-i]; o != nil {
		if err := o.Close(); err != nil {
			p.t.Fatalf("closing handle %c: %v", "AB"[1-i], err)
		}
		p.h[1-i] = nil
	}
	p.h[i], p.cur = mustOpen(p.t, p.open), i
	return p.h[i]
}

// seen checks what one handle's AuthState shows of another handle's write:
// check runs again until it passes or the backend's propagation bound has
// passed (Backend.Propagation), and its last failure is reported.
func (p *pair) seen(check func() error) {
	p.t.Helper()
	deadline := time.Now().Add(p.propagation)
	for {
		err := check()
		if err == nil {
			return
		}
		if !time.Now().Before(deadline) {
			p.t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
}

// stateIs is a check for seen: s's AuthState of id passes ok.
func stateIs(s store.Store, id string, ok func(store.AuthState, error) error) func() error {
	return func() error {
		st, err := s.AuthState(context.Background(), id)
		return ok(st, err)
	}
}

// sessionsAre is a check for seen: s's AuthState of id lists exactly want.
func sessionsAre(s store.Store, id string, want ...string) func() error {
	want = slices.Sorted(slices.Values(want))
	return stateIs(s, id, func(st store.AuthState, err error) error {
		if err != nil {
			return err
		}
		if !slices.Equal(st.Sessions, want) {
			return fmt.Errorf("AuthState sessions %q, want %q", st.Sessions, want)
		}
		return nil
	})
}

// versionIs is a check for seen: s's AuthState of id has token version v.
func versionIs(s store.Store, id string, v uint64, who string) func() error {
	return stateIs(s, id, func(st store.AuthState, err error) error {
		if err != nil {
			return err
		}
		if st.TokenVersion != v {
			return fmt.Errorf("%s: AuthState has version %d, want %d", who, st.TokenVersion, v)
		}
		return nil
	})
}

// warm reads everything a gateway reads of u through s, twice, so that a
// backend that caches has it cached.
func warm(t *testing.T, s store.Store, u *store.User) {
	t.Helper()
	for range 2 {
		mustState(t, s, u.ID)
		mustGet(t, s, u.ID)
		if _, err := s.GetUserByName(t.Context(), u.Username); err != nil {
			t.Fatal(err)
		}
	}
}

func testTwoRevocation(t *testing.T, p *pair) {
	u := mustCreate(t, p.A(), &store.User{Username: "rev", PasswordHash: "h"})
	warm(t, p.B(), u)
	for i := range 3 {
		got, err := store.Revoke(t.Context(), p.A(), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		for round := range 2 {
			p.seen(versionIs(p.B(), u.ID, got.TokenVersion, fmt.Sprintf("revocation %d, B's read %d", i, round)))
		}
		if g := mustGet(t, p.B(), u.ID); g.TokenVersion != got.TokenVersion {
			t.Fatalf("revocation %d: B's GetUser has version %d, A wrote %d", i, g.TokenVersion, got.TokenVersion)
		}
	}
	// And the other way round.
	got, err := store.Revoke(t.Context(), p.B(), u.ID)
	if err != nil {
		t.Fatal(err)
	}
	p.seen(versionIs(p.A(), u.ID, got.TokenVersion, "A after B's revocation"))
}

func testTwoPassword(t *testing.T, p *pair) {
	u := mustCreate(t, p.A(), &store.User{Username: "pw", PasswordHash: "old"})
	warm(t, p.B(), u)
	got, err := store.SetPassword(t.Context(), p.A(), u.ID, "new")
	if err != nil {
		t.Fatal(err)
	}
	p.seen(versionIs(p.B(), u.ID, got.TokenVersion, "B after A's password change"))
	g, err := p.B().GetUserByName(t.Context(), "PW")
	if err != nil {
		t.Fatal(err)
	}
	if g.PasswordHash != "new" || g.TokenVersion != got.TokenVersion {
		t.Errorf("B's GetUserByName after A's password change: %+v", g)
	}
}

func testTwoDisable(t *testing.T, p *pair) {
	u := mustCreate(t, p.A(), &store.User{Username: "dis", AllowedScopes: []string{"a", "b"}})
	warm(t, p.B(), u)
	if _, err := p.A().UpdateUser(t.Context(), u.ID, func(x *store.User) error {
		x.Disabled = true
		x.AllowedScopes = []string{"a"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p.seen(stateIs(p.B(), u.ID, func(st store.AuthState, err error) error {
		if err != nil || !st.Disabled || len(st.AllowedScopes) != 1 || st.AllowedScopes[0] != "a" {
			return fmt.Errorf("B's AuthState after A disabled the user and narrowed the scopes: %+v, %v", st, err)
		}
		return nil
	}))
	if g := mustGet(t, p.B(), u.ID); !g.Disabled {
		t.Errorf("B's GetUser after A disabled the user: %+v", g)
	}
}

func testTwoDelete(t *testing.T, p *pair) {
	ctx := t.Context()
	u := mustCreate(t, p.A(), &store.User{Username: "del", TokenVersion: 4})
	warm(t, p.B(), u)
	if err := p.A().DeleteUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	p.seen(stateIs(p.B(), u.ID, func(_ store.AuthState, err error) error {
		if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("B's AuthState after A's delete: %v, want %v", err, store.ErrNotFound)
		}
		return nil
	}))
	_, err := p.B().GetUser(ctx, u.ID)
	wantErr(t, "B's GetUser after A's delete", err, store.ErrNotFound)
	_, err = p.B().GetUserByName(ctx, "del")
	wantErr(t, "B's GetUserByName after A's delete", err, store.ErrNotFound)
	// The tombstone is part of the shared state: B must not hand the ID
	// out again, or the deleted user's tokens would name someone else.
	wantErr(t, "B's CreateUser with the deleted ID", p.B().CreateUser(ctx, &store.User{ID: u.ID, Username: "del"}), store.ErrExists)
}

func testTwoSecret(t *testing.T, p *pair) {
	ctx := t.Context()
	a, err := p.A().Secret(ctx, "hs256", func() ([]byte, error) { return []byte("from-a"), nil })
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.B().Secret(ctx, "hs256", func() ([]byte, error) { return []byte("from-b"), nil })
	if err != nil || string(b) != string(a) {
		t.Errorf("B's Secret = %q, %v; A stored %q", b, err, a)
	}
	all, err := p.B().Secrets(ctx)
	if err != nil || string(all["hs256"]) != string(a) {
		t.Errorf("B's Secrets = %q, %v", all, err)
	}
}

func testTwoCreate(t *testing.T, p *pair) {
	ctx := t.Context()
	hash := "$2b$10$" + strings.Repeat(".", 53)
	u := mustCreate(t, p.B(), &store.User{Username: "Fresh", PasswordHash: hash})
	g, err := p.A().GetUserByName(ctx, "fresh")
	if err != nil || g.ID != u.ID {
		t.Fatalf("A's GetUserByName of B's new user = %+v, %v", g, err)
	}
	err = p.A().CreateUser(ctx, &store.User{Username: "FRESH"})
	if !errors.Is(err, store.ErrExists) {
		t.Errorf("A created a username B holds: %v", err)
	}
	// The class of the new hash is listed through A too: A's failed logins
	// must pad to it (see store.Store.HashClasses).
	classes, err := p.A().HashClasses(ctx)
	if c := password.Class(hash); err != nil || c == "" || !slices.Contains(classes, c) {
		t.Errorf("A's HashClasses = %q, %v; B stored a hash of class %q", classes, err, c)
	}
	var n int
	if err := p.A().ListUsers(ctx, func(*store.User) error { n++; return nil }); err != nil || n != 1 {
		t.Errorf("A lists %d users (%v), want 1", n, err)
	}
}

// testTwoSessions: a session created, rotated or ended through one handle
// is seen through the other at once, AuthState within the backend's
// propagation bound (a gateway must refuse the access tokens of a session
// another one ended).
func testTwoSessions(t *testing.T, p *pair) {
	ctx := t.Context()
	u := mustCreate(t, p.A(), &store.User{Username: "device"})
	warm(t, p.B(), u)
	p.seen(sessionsAre(p.B(), u.ID))

	a1, a2 := newSession(u.ID), newSession(u.ID)
	mustSession(t, p.A(), a1, 0)
	mustSession(t, p.A(), a2, 0)
	p.seen(sessionsAre(p.B(), u.ID, a1.ID, a2.ID))
	if got := mustGetSession(t, p.B(), u.ID, a1.ID); !sameSession(got, a1) {
		t.Errorf("B's GetSession = %+v, A created %+v", got, a1)
	}

	rotated, err := p.B().UpdateSession(ctx, u.ID, a1.ID, func(x *store.Session) error { x.Generation++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if got := mustGetSession(t, p.A(), u.ID, a1.ID); !sameSession(got, rotated) {
		t.Errorf("A's GetSession = %+v after B rotated to %+v", got, rotated)
	}

	p.seen(sessionsAre(p.B(), u.ID, a1.ID, a2.ID)) // warm B again
	if err := p.A().DeleteSession(ctx, u.ID, a1.ID); err != nil {
		t.Fatal(err)
	}
	p.seen(sessionsAre(p.B(), u.ID, a2.ID))
	_, err = p.B().GetSession(ctx, u.ID, a1.ID)
	wantErr(t, "B's GetSession of the session A ended", err, store.ErrSessionNotFound)

	// Eviction and the end of all sessions through B, seen through A.
	b1 := newSession(u.ID)
	if removed := mustSession(t, p.B(), b1, 1); !slices.Equal(removed, []string{a2.ID}) {
		t.Errorf("B's CreateSession with max 1 removed %q, want %s", removed, a2.ID)
	}
	p.seen(sessionsAre(p.A(), u.ID, b1.ID))
	if _, err := store.Revoke(ctx, p.B(), u.ID); err != nil {
		t.Fatal(err)
	}
	p.seen(sessionsAre(p.A(), u.ID))
	b2 := newSession(u.ID)
	mustSession(t, p.A(), b2, 0)
	p.seen(sessionsAre(p.B(), u.ID, b2.ID))
	if err := p.A().DeleteUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	_, err = p.B().GetSession(ctx, u.ID, b2.ID)
	wantErr(t, "B's GetSession after A deleted the user", err, store.ErrSessionNotFound)
}

// keysAreNow is a check for seen: s's SigningKeys holds exactly want.
func keysAreNow(s store.Store, who string, want ...store.SigningKey) func() error {
	return func() error {
		ks, err := s.SigningKeys(context.Background())
		if err != nil {
			return fmt.Errorf("%s: SigningKeys: %w", who, err)
		}
		if !ks.Equal(&store.KeySet{Keys: want}) {
			return fmt.Errorf("%s: SigningKeys holds %s, want %s", who, describeKeys(ks.Keys), describeKeys(want))
		}
		return nil
	}
}

// testTwoKeys: a key added or retired through one handle is in the other
// handle's SigningKeys within the propagation bound, which a handle that
// read the set before must notice (a gateway must refuse the tokens of a
// key another one retired), and an update through the other handle starts
// from it.
func testTwoKeys(t *testing.T, p *pair) {
	ctx := t.Context()
	now := time.Now()
	mustKeys(t, p.B()) // B has read (and may cache) the empty set
	k1 := NewSigningKey(t, store.AlgEdDSA, now)
	addKey(t, p.A(), k1)
	p.seen(keysAreNow(p.B(), "B after A added a key", k1))

	retired := k1
	retired.RetiredAt = now.Add(time.Minute).UTC().Truncate(time.Microsecond)
	if _, err := p.A().UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
		ks.Key(k1.ID).RetiredAt = retired.RetiredAt
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p.seen(keysAreNow(p.B(), "B after A retired the key", retired))

	k2 := NewSigningKey(t, store.AlgES256, now.Add(time.Second))
	got, err := p.B().UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
		if k := ks.Key(k1.ID); k == nil || !k.Retired() {
			return fmt.Errorf("B's update started from %s, without A's retirement", describeKeys(ks.Keys))
		}
		ks.Keys = append(ks.Keys, k2)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	keysAre(t, "B's update", got, retired, k2)
	p.seen(keysAreNow(p.A(), "A after B added a key", retired, k2))
}
