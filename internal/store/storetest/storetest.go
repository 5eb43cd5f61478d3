// Package storetest is the conformance suite every store.Store backend must
// pass. A backend's test calls Run with a Backend that makes fresh, empty
// backing state and opens handles on it:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Backend{
//			New: func(t *testing.T) func() (store.Store, error) {
//				path := filepath.Join(t.TempDir(), "users.db")
//				return func() (store.Store, error) { return bolt.Open(path, bolt.Options{}) }
//			},
//		})
//	}
//
// The suite closes every handle it opens. Besides the single-handle tests it
// runs two-handle tests: what is written through one handle must be read
// through another handle on the same backing state, as one gateway must see
// the revocations another one writes to a shared store. Checks that are
// specific to one backend (its file, its schema) live with the backend.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// Backend describes a store implementation to the suite.
type Backend struct {
	// New makes fresh, empty backing state (a file, a name) that lives
	// until t ends, and returns a function that opens a new handle on it.
	// The suite closes the handles.
	New func(t *testing.T) func() (store.Store, error)

	// ReadersYield makes the readers of the concurrent AuthState test
	// yield the processor after each read. A backend whose write waits
	// on goroutines of its own (etcd: the watch must deliver the write to
	// the handle's cache before it returns) sets it: readers served from
	// memory never block, and on a small machine they would keep those
	// goroutines waiting for preemption at every step, so that the writes
	// crawl. A backend whose write runs on the writer's goroutine leaves
	// it unset: there the spinning readers slow the writers down, which
	// is what makes many reads overlap the writes.
	ReadersYield bool

	// Concurrent says that two handles on the same state may be open at
	// the same time, as two gateways share an etcd cluster, or two
	// memory handles share a name. When false (a bbolt file: its lock
	// admits one handle, and a second Open waits for it), the two-handle
	// tests close one handle before they open the other, so they check
	// what the first one left in the backing state, but not that a handle
	// that stays open notices another's write (a bbolt file is shared
	// within a process through one handle, never two).
	Concurrent bool

	// Propagation is how long a write through one handle may take to show
	// in another handle's AuthState (0: at once). A backend whose
	// AuthState is a local cache fed by a watch (etcd) sees another
	// gateway's write a moment after it committed; the two-handle tests
	// then read the other handle's AuthState until it shows the write or
	// the bound passes. Every other read (GetUser, GetSession, ListUsers,
	// ...) must show the write at once, and a handle must always read its
	// own writes at once.
	Propagation time.Duration
}

// Run runs the conformance suite.
func Run(t *testing.T, b Backend) {
	if b.New == nil {
		t.Fatal("storetest: Backend.New is nil")
	}
	open := func(t *testing.T) store.Store {
		t.Helper()
		return mustOpen(t, b.New(t))
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"CreateAndGet", testCreateAndGet},
		{"CreateReturnsCopy", testCreateReturnsCopy},
		{"DuplicateUsernameAnyCase", testDuplicateUsername},
		{"GeneratedIDsDistinct", testGeneratedIDs},
		{"ExplicitID", testExplicitID},
		{"NotFound", testNotFound},
		{"UpdateUser", testUpdateUser},
		{"UpdateUserRename", testUpdateUserRename},
		{"SetPasswordAndRevokeVisibleAtOnce", testTokenVersionBumps},
		{"ConcurrentReadersNeverSeeAcknowledgedVersionUndone", func(t *testing.T, s store.Store) {
			testConcurrentAuthState(t, s, b.ReadersYield)
		}},
		{"DisabledAndAllowedScopes", testDisabledAndScopes},
		{"DeleteThenRecreate", testDeleteRecreate},
		{"TombstonedIDRefused", testTombstonedID},
		{"ListUsers", testListUsers},
		{"Secret", testSecret},
		{"SecretConcurrent", testSecretConcurrent},
		{"Secrets", testSecrets},
		{"Closed", testClosed},
		{"ConcurrentCreateSameUsername", testConcurrentCreate},
		{"CreateUsersAllOrNothing", testCreateUsers},
		{"HashClassesCoverStoredHashes", testHashClasses},
		{"SessionCreateAndGet", testSessionCreateGet},
		{"SessionsInAuthState", testSessionsInAuthState},
		{"SessionMaxRemovesLeastRecentlyUsed", testSessionMax},
		{"SessionExpiry", testSessionExpiry},
		{"SessionSweepByCallersClock", testSessionSweepByCallersClock},
		{"UpdateSession", testUpdateSession},
		{"SessionNotFound", testSessionNotFound},
		{"SessionRotationRace", testSessionRotationRace},
		{"KeysEmptyAddRead", testKeysEmptyAddRead},
		{"KeysSkipAndAbort", testKeysSkipAndAbort},
		{"KeysRefusals", testKeysRefusals},
		{"KeysConcurrentFirst", testKeysConcurrentFirst},
		{"KeysNoAlias", testKeysNoAlias},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
	t.Run("ExportImportRoundTrip", func(t *testing.T) { testExportImport(t, open(t), open(t)) })
	t.Run("ImportConflicts", func(t *testing.T) { testImportConflicts(t, open(t)) })
	t.Run("ImportKeys", func(t *testing.T) { testImportKeys(t, open(t)) })
	twoHandles := []struct {
		name string
		fn   func(t *testing.T, p *pair)
	}{
		{"RevocationSeenByOther", testTwoRevocation},
		{"PasswordChangeSeenByOther", testTwoPassword},
		{"DisableSeenByOther", testTwoDisable},
		{"DeleteSeenByOther", testTwoDelete},
		{"SecretSeenByOther", testTwoSecret},
		{"CreateSeenByOther", testTwoCreate},
		{"SessionsSeenByOther", testTwoSessions},
		{"KeysSeenByOther", testTwoKeys},
	}
	for _, tc := range twoHandles {
		t.Run("TwoHandles/"+tc.name, func(t *testing.T) {
			tc.fn(t, &pair{t: t, open: b.New(t), concurrent: b.Concurrent, propagation: b.Propagation})
		})
	}
}

// mustOpen opens a handle and closes it when t ends; a handle the test
// closed itself may fail that second Close.
func mustOpen(t *testing.T, open func() (store.Store, error)) store.Store {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var errStop = errors.New("storetest: stop")

func mustCreate(t *testing.T, s store.Store, u *store.User) *store.User {
	t.Helper()
	if err := s.CreateUser(t.Context(), u); err != nil {
		t.Fatalf("CreateUser(%q): %v", u.Username, err)
	}
	return u
}

func mustGet(t *testing.T, s store.Store, id string) *store.User {
	t.Helper()
	u, err := s.GetUser(t.Context(), id)
	if err != nil {
		t.Fatalf("GetUser(%s): %v", id, err)
	}
	return u
}

func mustState(t *testing.T, s store.Store, id string) store.AuthState {
	t.Helper()
	st, err := s.AuthState(t.Context(), id)
	if err != nil {
		t.Fatalf("AuthState(%s): %v", id, err)
	}
	return st
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got error %v, want %v", what, err, want)
	}
}

// sameUser compares two users; times are compared with Equal.
func sameUser(a, b *store.User) bool {
	return a.ID == b.ID && a.Username == b.Username && a.PasswordHash == b.PasswordHash &&
		a.Disabled == b.Disabled && a.TokenVersion == b.TokenVersion &&
		(a.AllowedScopes == nil) == (b.AllowedScopes == nil) && slices.Equal(a.AllowedScopes, b.AllowedScopes) &&
		a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt) &&
		a.PasswordChangedAt.Equal(b.PasswordChangedAt)
}

func testCreateAndGet(t *testing.T, s store.Store) {
	ctx := t.Context()
	before := time.Now().Add(-time.Second)
	u := mustCreate(t, s, &store.User{
		Username:      "Alice",
		PasswordHash:  "$argon2id$v=19$m=65536,t=1,p=4$c2FsdA$aGFzaA",
		AllowedScopes: []string{"read", "write"},
		TokenVersion:  3,
	})
	if u.ID == "" {
		t.Fatal("CreateUser left ID empty")
	}
	if u.CreatedAt.Before(before) || u.UpdatedAt.Before(before) {
		t.Errorf("timestamps not set to now: created %v updated %v", u.CreatedAt, u.UpdatedAt)
	}

	got := mustGet(t, s, u.ID)
	if !sameUser(got, u) {
		t.Errorf("GetUser = %+v, want %+v", got, u)
	}
	for _, name := range []string{"Alice", "alice", "aLICE", "ALICE"} {
		byName, err := s.GetUserByName(ctx, name)
		if err != nil {
			t.Fatalf("GetUserByName(%q): %v", name, err)
		}
		if !sameUser(byName, u) {
			t.Errorf("GetUserByName(%q) = %+v, want %+v", name, byName, u)
		}
		if byName.Username != "Alice" {
			t.Errorf("stored username = %q, want the original case %q", byName.Username, "Alice")
		}
	}
	st := mustState(t, s, u.ID)
	if st.Username != "Alice" || st.TokenVersion != 3 || st.Disabled || !slices.Equal(st.AllowedScopes, []string{"read", "write"}) {
		t.Errorf("AuthState = %+v", st)
	}

	// Explicit timestamps are kept.
	at := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	v := mustCreate(t, s, &store.User{Username: "bob", CreatedAt: at, UpdatedAt: at, PasswordChangedAt: at})
	if got := mustGet(t, s, v.ID); !got.CreatedAt.Equal(at) || !got.UpdatedAt.Equal(at) || !got.PasswordChangedAt.Equal(at) {
		t.Errorf("explicit timestamps not kept: %+v", got)
	}
}

// testCreateReturnsCopy checks that users handed out are not shared with
// the store.
func testCreateReturnsCopy(t *testing.T, s store.Store) {
	scopes := []string{"a"}
	u := mustCreate(t, s, &store.User{Username: "copy", AllowedScopes: scopes})
	scopes[0] = "mutated"
	got := mustGet(t, s, u.ID)
	if got.AllowedScopes[0] != "a" {
		t.Errorf("store shares the caller's slice: %v", got.AllowedScopes)
	}
	got.AllowedScopes[0] = "mutated"
	got.Username = "mutated"
	got.TokenVersion = 99
	again := mustGet(t, s, u.ID)
	if again.AllowedScopes[0] != "a" || again.Username != "copy" || again.TokenVersion != 0 {
		t.Errorf("GetUser result shared with the store: %+v", again)
	}
}

func testDuplicateUsername(t *testing.T, s store.Store) {
	ctx := t.Context()
	orig := mustCreate(t, s, &store.User{Username: "Bob", PasswordHash: "h1"})
	for _, name := range []string{"Bob", "bob", "BOB", "bOb"} {
		u := &store.User{Username: name, PasswordHash: "h2"}
		wantErr(t, "CreateUser("+name+")", s.CreateUser(ctx, u), store.ErrExists)
	}
	got, err := s.GetUserByName(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if !sameUser(got, orig) {
		t.Errorf("failed duplicate create changed the user: %+v", got)
	}
}

func testGeneratedIDs(t *testing.T, s store.Store) {
	seen := map[string]bool{}
	for i := range 50 {
		u := mustCreate(t, s, &store.User{Username: fmt.Sprintf("user%d", i)})
		if u.ID == "" || seen[u.ID] {
			t.Fatalf("generated ID %q empty or repeated", u.ID)
		}
		seen[u.ID] = true
	}
}

func testExplicitID(t *testing.T, s store.Store) {
	u := mustCreate(t, s, &store.User{ID: "ufixed", Username: "fixed"})
	if u.ID != "ufixed" {
		t.Fatalf("explicit ID replaced by %q", u.ID)
	}
	if got := mustGet(t, s, "ufixed"); got.Username != "fixed" {
		t.Errorf("GetUser(ufixed) = %+v", got)
	}
	wantErr(t, "CreateUser with a live ID", s.CreateUser(t.Context(), &store.User{ID: "ufixed", Username: "other"}), store.ErrExists)
	if _, err := s.GetUserByName(t.Context(), "other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("failed create left the name indexed: %v", err)
	}
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreate(t, s, &store.User{Username: "present"})
	for _, id := range []string{"", "unope", "present"} {
		_, err := s.GetUser(ctx, id)
		wantErr(t, "GetUser("+id+")", err, store.ErrNotFound)
		_, err = s.AuthState(ctx, id)
		wantErr(t, "AuthState("+id+")", err, store.ErrNotFound)
		called := false
		_, err = s.UpdateUser(ctx, id, func(*store.User) error { called = true; return nil })
		wantErr(t, "UpdateUser("+id+")", err, store.ErrNotFound)
		if called {
			t.Errorf("UpdateUser(%q) called fn for a missing user", id)
		}
		wantErr(t, "DeleteUser("+id+")", s.DeleteUser(ctx, id), store.ErrNotFound)
		_, err = store.SetPassword(ctx, s, id, "h")
		wantErr(t, "SetPassword("+id+")", err, store.ErrNotFound)
		_, err = store.Revoke(ctx, s, id)
		wantErr(t, "Revoke("+id+")", err, store.ErrNotFound)
	}
	for _, name := range []string{"", "nobody", "presen", "presentx"} {
		_, err := s.GetUserByName(ctx, name)
		wantErr(t, "GetUserByName("+name+")", err, store.ErrNotFound)
	}
}

func testUpdateUser(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{Username: "carol", PasswordHash: "h"})
	mustState(t, s, u.ID) // warm any cache

	// An error from fn aborts; changes fn made are not stored.
	myErr := errors.New("no thanks")
	_, err := s.UpdateUser(ctx, u.ID, func(x *store.User) error {
		x.Disabled = true
		x.TokenVersion = 42
		x.PasswordHash = "changed"
		return myErr
	})
	if err != myErr { //nolint:errorlint // returned as is, per the interface
		t.Errorf("UpdateUser returned %v, want fn's error as is", err)
	}
	if got := mustGet(t, s, u.ID); !sameUser(got, u) {
		t.Errorf("aborted update changed the user: %+v", got)
	}
	if st := mustState(t, s, u.ID); st.Disabled || st.TokenVersion != 0 {
		t.Errorf("aborted update visible in AuthState: %+v", st)
	}

	// Changing the ID is refused and nothing is stored.
	_, err = s.UpdateUser(ctx, u.ID, func(x *store.User) error {
		x.ID = "uother"
		x.PasswordHash = "changed"
		return nil
	})
	if err == nil {
		t.Error("UpdateUser accepted an ID change")
	}
	if got := mustGet(t, s, u.ID); !sameUser(got, u) {
		t.Errorf("refused ID change modified the user: %+v", got)
	}
	if _, err := s.GetUser(ctx, "uother"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("refused ID change created a user: %v", err)
	}

	// A successful update stores fn's changes and sets UpdatedAt.
	time.Sleep(2 * time.Millisecond)
	got, err := s.UpdateUser(ctx, u.ID, func(x *store.User) error {
		x.PasswordHash = "h2"
		x.Disabled = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.PasswordHash != "h2" || !got.Disabled || !got.UpdatedAt.After(u.UpdatedAt) {
		t.Errorf("UpdateUser returned %+v", got)
	}
	if !got.CreatedAt.Equal(u.CreatedAt) {
		t.Errorf("UpdateUser changed CreatedAt: %v -> %v", u.CreatedAt, got.CreatedAt)
	}
	if stored := mustGet(t, s, u.ID); !sameUser(stored, got) {
		t.Errorf("stored %+v, UpdateUser returned %+v", stored, got)
	}
}

func testUpdateUserRename(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{Username: "carol"})
	dave := mustCreate(t, s, &store.User{Username: "Dave"})

	rename := func(to string) (*store.User, error) {
		return s.UpdateUser(ctx, u.ID, func(x *store.User) error { x.Username = to; return nil })
	}
	if _, err := rename("Caroline"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetUserByName(ctx, "CAROLINE"); err != nil || got.ID != u.ID || got.Username != "Caroline" {
		t.Errorf("GetUserByName after rename = %+v, %v", got, err)
	}
	if _, err := s.GetUserByName(ctx, "carol"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old name still indexed: %v", err)
	}
	if st := mustState(t, s, u.ID); st.Username != "Caroline" {
		t.Errorf("AuthState username = %q after rename", st.Username)
	}

	// Case-only rename keeps the index entry.
	if _, err := rename("CAROLINE"); err != nil {
		t.Fatalf("case-only rename: %v", err)
	}
	if got, err := s.GetUserByName(ctx, "caroline"); err != nil || got.Username != "CAROLINE" {
		t.Errorf("after case-only rename: %+v, %v", got, err)
	}

	// A clash with another user's name, in any case, is ErrExists and
	// changes nothing.
	for _, to := range []string{"dave", "DAVE", "Dave"} {
		_, err := rename(to)
		wantErr(t, "rename to "+to, err, store.ErrExists)
	}
	if got, err := s.GetUserByName(ctx, "dave"); err != nil || got.ID != dave.ID {
		t.Errorf("clash changed the index: %+v, %v", got, err)
	}
	if got := mustGet(t, s, u.ID); got.Username != "CAROLINE" {
		t.Errorf("clash changed the user: %+v", got)
	}

	// The freed name can be taken by someone else.
	mustCreate(t, s, &store.User{Username: "carol"})
}

// testTokenVersionBumps checks read-your-write through AuthState many
// times in a row, with reads before and after each write, which is where a
// stale cache entry would show.
func testTokenVersionBumps(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{Username: "erin", PasswordHash: "h0"})
	want := uint64(0)
	for i := range 100 {
		if st := mustState(t, s, u.ID); st.TokenVersion != want {
			t.Fatalf("round %d: AuthState before write: version %d, want %d", i, st.TokenVersion, want)
		}
		var got *store.User
		var err error
		hash := fmt.Sprintf("h%d", i+1)
		if i%2 == 0 {
			got, err = store.SetPassword(ctx, s, u.ID, hash)
		} else {
			got, err = store.Revoke(ctx, s, u.ID)
		}
		if err != nil {
			t.Fatal(err)
		}
		want++
		if got.TokenVersion != want {
			t.Fatalf("round %d: write returned version %d, want %d", i, got.TokenVersion, want)
		}
		if st := mustState(t, s, u.ID); st.TokenVersion != want {
			t.Fatalf("round %d: AuthState right after write: version %d, want %d", i, st.TokenVersion, want)
		}
		if st := mustState(t, s, u.ID); st.TokenVersion != want {
			t.Fatalf("round %d: AuthState second read: version %d, want %d", i, st.TokenVersion, want)
		}
		if i%2 == 0 {
			if stored := mustGet(t, s, u.ID); stored.PasswordHash != hash || stored.PasswordChangedAt.Before(got.CreatedAt) {
				t.Fatalf("round %d: SetPassword stored %+v", i, stored)
			}
		}
	}
}

// testConcurrentAuthState races AuthState readers against writers: no
// reader may observe a TokenVersion lower than one a writer has already
// been told is committed. Run it under -race.
func testConcurrentAuthState(t *testing.T, s store.Store, yield bool) {
	ctx := t.Context()
	const users, writes, readers = 3, 60, 6
	ids := make([]string, users)
	acked := make([]atomic.Uint64, users)
	for i := range ids {
		ids[i] = mustCreate(t, s, &store.User{Username: fmt.Sprintf("race%d", i)}).ID
	}

	var done atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, readers+users)
	for i := range users {
		wg.Go(func() {
			for range writes {
				u, err := store.Revoke(ctx, s, ids[i])
				if err != nil {
					errc <- err
					return
				}
				acked[i].Store(u.TokenVersion)
			}
		})
	}
	var rwg sync.WaitGroup
	for r := range readers {
		rwg.Go(func() {
			for n := 0; !done.Load(); n++ {
				i := (n + r) % users
				floor := acked[i].Load()
				st, err := s.AuthState(ctx, ids[i])
				if err != nil {
					errc <- err
					return
				}
				if st.TokenVersion < floor {
					errc <- fmt.Errorf("user %d: AuthState saw version %d after %d was acknowledged", i, st.TokenVersion, floor)
					return
				}
				if yield {
					runtime.Gosched()
				}
			}
		})
	}
	wg.Wait()
	done.Store(true)
	rwg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for i, id := range ids {
		if st := mustState(t, s, id); st.TokenVersion != writes {
			t.Errorf("user %d: final version %d, want %d", i, st.TokenVersion, writes)
		}
	}
}

func testDisabledAndScopes(t *testing.T, s store.Store) {
	ctx := t.Context()
	unrestricted := mustCreate(t, s, &store.User{Username: "nil-scopes"})
	none := mustCreate(t, s, &store.User{Username: "empty-scopes", AllowedScopes: []string{}})

	check := func(label, id string, wantNil bool, want []string, wantDisabled bool) {
		t.Helper()
		for round := range 2 { // the second read may come from a cache
			st := mustState(t, s, id)
			if (st.AllowedScopes == nil) != wantNil || !slices.Equal(st.AllowedScopes, want) || st.Disabled != wantDisabled {
				t.Errorf("%s: AuthState read %d = scopes %#v disabled %v, want %#v (nil %v) disabled %v",
					label, round, st.AllowedScopes, st.Disabled, want, wantNil, wantDisabled)
			}
		}
		u := mustGet(t, s, id)
		if (u.AllowedScopes == nil) != wantNil || !slices.Equal(u.AllowedScopes, want) || u.Disabled != wantDisabled {
			t.Errorf("%s: GetUser = scopes %#v disabled %v, want %#v (nil %v) disabled %v",
				label, u.AllowedScopes, u.Disabled, want, wantNil, wantDisabled)
		}
	}
	check("created with nil scopes", unrestricted.ID, true, nil, false)
	check("created with empty scopes", none.ID, false, []string{}, false)

	set := func(id string, scopes []string, disabled bool) {
		t.Helper()
		if _, err := s.UpdateUser(ctx, id, func(u *store.User) error {
			u.AllowedScopes = scopes
			u.Disabled = disabled
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	set(unrestricted.ID, []string{"b", "a"}, true)
	check("scopes set, disabled", unrestricted.ID, false, []string{"b", "a"}, true)
	set(unrestricted.ID, []string{}, false)
	check("scopes emptied, enabled", unrestricted.ID, false, []string{}, false)
	set(unrestricted.ID, nil, true)
	check("scopes back to nil, disabled", unrestricted.ID, true, nil, true)
	set(none.ID, nil, false)
	check("empty to nil", none.ID, true, nil, false)

	// ListUsers preserves the distinction too.
	set(none.ID, []string{}, false)
	err := s.ListUsers(ctx, func(u *store.User) error {
		if (u.AllowedScopes == nil) != (u.ID == unrestricted.ID) {
			t.Errorf("ListUsers: %s has scopes %#v", u.Username, u.AllowedScopes)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testDeleteRecreate(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := mustCreate(t, s, &store.User{Username: "Eve", TokenVersion: 7})
	mustState(t, s, old.ID) // warm any cache
	if err := s.DeleteUser(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	gone := func(label string) {
		t.Helper()
		_, err := s.GetUser(ctx, old.ID)
		wantErr(t, label+": GetUser", err, store.ErrNotFound)
		_, err = s.AuthState(ctx, old.ID)
		wantErr(t, label+": AuthState", err, store.ErrNotFound)
		_, err = s.UpdateUser(ctx, old.ID, func(*store.User) error { return nil })
		wantErr(t, label+": UpdateUser", err, store.ErrNotFound)
		wantErr(t, label+": DeleteUser", s.DeleteUser(ctx, old.ID), store.ErrNotFound)
	}
	gone("after delete")
	_, err := s.GetUserByName(ctx, "eve")
	wantErr(t, "GetUserByName after delete", err, store.ErrNotFound)

	fresh := mustCreate(t, s, &store.User{Username: "eve"})
	if fresh.ID == old.ID {
		t.Fatal("re-created user got the deleted user's ID")
	}
	if got, err := s.GetUserByName(ctx, "EVE"); err != nil || got.ID != fresh.ID {
		t.Errorf("GetUserByName after re-create = %+v, %v", got, err)
	}
	if st := mustState(t, s, fresh.ID); st.TokenVersion != 0 {
		t.Errorf("re-created user inherited state: %+v", st)
	}
	gone("after re-create")
}

func testTombstonedID(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{ID: "utomb", Username: "tomb"})
	if err := s.DeleteUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "CreateUser with a deleted ID", s.CreateUser(ctx, &store.User{ID: "utomb", Username: "tomb"}), store.ErrExists)
	wantErr(t, "CreateUser with a deleted ID, new name", s.CreateUser(ctx, &store.User{ID: "utomb", Username: "other"}), store.ErrExists)
	_, err := s.GetUser(ctx, "utomb")
	wantErr(t, "GetUser of the tombstone", err, store.ErrNotFound)
	// The name itself is free again.
	if got := mustCreate(t, s, &store.User{Username: "TOMB"}); got.ID == "utomb" {
		t.Error("generated ID equals the tombstoned one")
	}
}

func testListUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.ListUsers(ctx, func(u *store.User) error {
		t.Errorf("empty store listed %+v", u)
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	names := []string{"delta", "Alpha", "charlie", "Bravo", "echo"}
	for _, n := range names {
		mustCreate(t, s, &store.User{Username: n})
	}
	victim, err := s.GetUserByName(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, victim.ID); err != nil {
		t.Fatal(err)
	}

	var got []string
	if err := s.ListUsers(ctx, func(u *store.User) error {
		if u.ID == "" {
			t.Errorf("listed user without ID: %+v", u)
		}
		got = append(got, u.Username)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"Alpha", "Bravo", "charlie", "delta"}; !slices.Equal(got, want) {
		t.Errorf("ListUsers order = %v, want %v", got, want)
	}

	calls := 0
	err = s.ListUsers(ctx, func(*store.User) error {
		calls++
		if calls == 2 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Errorf("ListUsers returned %v, want fn's error", err)
	}
	if calls != 2 {
		t.Errorf("ListUsers called fn %d times after it failed at 2", calls)
	}
}

func testSecret(t *testing.T, s store.Store) {
	ctx := t.Context()
	calls := 0
	gen := func(v string) func() ([]byte, error) {
		return func() ([]byte, error) { calls++; return []byte(v), nil }
	}
	a, err := s.Secret(ctx, "signing", gen("first"))
	if err != nil || string(a) != "first" || calls != 1 {
		t.Fatalf("first Secret = %q, %v (generate called %d times)", a, err, calls)
	}
	a[0] = 'X' // the caller's copy
	b, err := s.Secret(ctx, "signing", gen("second"))
	if err != nil || string(b) != "first" || calls != 1 {
		t.Fatalf("second Secret = %q, %v (generate called %d times)", b, err, calls)
	}
	c, err := s.Secret(ctx, "other", gen("third"))
	if err != nil || string(c) != "third" || calls != 2 {
		t.Fatalf("Secret(other) = %q, %v (generate called %d times)", c, err, calls)
	}

	genErr := errors.New("entropy ran out")
	_, err = s.Secret(ctx, "failing", func() ([]byte, error) { return nil, genErr })
	if !errors.Is(err, genErr) {
		t.Errorf("Secret with failing generate: %v, want it wrapped", err)
	}
	d, err := s.Secret(ctx, "failing", gen("later"))
	if err != nil || string(d) != "later" {
		t.Errorf("Secret after a failed generate = %q, %v", d, err)
	}
	if _, err := s.Secret(ctx, "", gen("x")); err == nil {
		t.Error("Secret accepted an empty name")
	}
	// Secrets do not collide with users.
	if err := s.ListUsers(ctx, func(u *store.User) error {
		t.Errorf("secret listed as user %+v", u)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func testSecretConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = 20
	var calls atomic.Int32
	results := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.Secret(ctx, "shared", func() ([]byte, error) {
				c := calls.Add(1)
				return fmt.Appendf(nil, "secret-from-call-%d", c), nil
			})
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if !bytes.Equal(results[i], results[0]) {
			t.Errorf("caller %d got %q, caller 0 got %q", i, results[i], results[0])
		}
	}
	if c := calls.Load(); c != 1 {
		t.Errorf("generate called %d times, want 1", c)
	}
}

func testSecrets(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.Secrets(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("Secrets of an empty store = %q, %v", got, err)
	}
	for name, v := range map[string]string{"hs256": "k1", "other": "k2"} {
		if _, err := s.Secret(ctx, name, func() ([]byte, error) { return []byte(v), nil }); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, s, &store.User{Username: "not-a-secret"})
	got, err = s.Secrets(ctx)
	if err != nil || len(got) != 2 || string(got["hs256"]) != "k1" || string(got["other"]) != "k2" {
		t.Fatalf("Secrets = %q, %v", got, err)
	}
	got["hs256"][0] = 'X' // the caller's copy
	if v, _ := s.Secret(ctx, "hs256", nil); string(v) != "k1" {
		t.Errorf("Secrets shares its values with the store: %q", v)
	}
}

func testClosed(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := mustCreate(t, s, &store.User{Username: "closing"})
	sess := newSession(u.ID)
	mustSession(t, s, sess, 0)
	mustState(t, s, u.ID) // a cached entry must not outlive Close
	addKey(t, s, NewSigningKey(t, store.AlgEdDSA, time.Now()))
	mustKeys(t, s) // nor the key set
	if _, err := s.Secret(ctx, "k", func() ([]byte, error) { return []byte("v"), nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	calls := map[string]func() error{
		"CreateUser": func() error { return s.CreateUser(ctx, &store.User{Username: "new"}) },
		"GetUser": func() error {
			_, err := s.GetUser(ctx, u.ID)
			return err
		},
		"GetUserByName": func() error {
			_, err := s.GetUserByName(ctx, "closing")
			return err
		},
		"UpdateUser": func() error {
			_, err := s.UpdateUser(ctx, u.ID, func(*store.User) error { return nil })
			return err
		},
		"DeleteUser": func() error { return s.DeleteUser(ctx, u.ID) },
		"ListUsers":  func() error { return s.ListUsers(ctx, func(*store.User) error { return nil }) },
		"AuthState": func() error {
			_, err := s.AuthState(ctx, u.ID)
			return err
		},
		"AuthState(unknown)": func() error {
			_, err := s.AuthState(ctx, "unope")
			return err
		},
		"Secret": func() error {
			_, err := s.Secret(ctx, "k", func() ([]byte, error) { return []byte("v"), nil })
			return err
		},
		"Secrets": func() error {
			_, err := s.Secrets(ctx)
			return err
		},
		"HashClasses": func() error {
			_, err := s.HashClasses(ctx)
			return err
		},
		"CreateSession": func() error {
			_, err := s.CreateSession(ctx, newSession(u.ID), 0)
			return err
		},
		"GetSession": func() error {
			_, err := s.GetSession(ctx, u.ID, sess.ID)
			return err
		},
		"UpdateSession": func() error {
			_, err := s.UpdateSession(ctx, u.ID, sess.ID, func(*store.Session) error { return nil })
			return err
		},
		"DeleteSession": func() error { return s.DeleteSession(ctx, u.ID, sess.ID) },
		"DeleteSessions": func() error {
			_, err := s.DeleteSessions(ctx, u.ID)
			return err
		},
		"ListSessions": func() error {
			_, err := s.ListSessions(ctx, u.ID, time.Now())
			return err
		},
		"SweepSessions": func() error {
			_, err := s.SweepSessions(ctx, time.Now())
			return err
		},
		"SigningKeys": func() error {
			_, err := s.SigningKeys(ctx)
			return err
		},
		"UpdateSigningKeys": func() error {
			_, err := s.UpdateSigningKeys(ctx, func(*store.KeySet) error { return nil })
			return err
		},
	}
	for name, call := range calls {
		wantErr(t, name+" after Close", call(), store.ErrClosed)
	}
	_ = s.Close() // a second Close must not panic; its result is backend-defined
}

func testConcurrentCreate(t *testing.T, s store.Store) {
	const n = 100
	errs := make([]error, n)
	users := make([]*store.User, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			name := "zed"
			if i%2 == 1 {
				name = strings.ToUpper(name)
			}
			users[i] = &store.User{Username: name}
			<-start
			errs[i] = s.CreateUser(context.Background(), users[i])
		})
	}
	close(start)
	wg.Wait()
	winners := 0
	var winner *store.User
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
			winner = users[i]
		case !errors.Is(err, store.ErrExists):
			t.Errorf("creator %d: %v, want nil or ErrExists", i, err)
		}
	}
	if winners != 1 {
		t.Fatalf("%d concurrent creates of the same username succeeded, want 1", winners)
	}
	got, err := s.GetUserByName(t.Context(), "Zed")
	if err != nil || got.ID != winner.ID {
		t.Errorf("GetUserByName = %+v, %v; winner %s", got, err, winner.ID)
	}
	n2 := 0
	if err := s.ListUsers(t.Context(), func(*store.User) error { n2++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n2 != 1 {
		t.Errorf("ListUsers found %d users, want 1", n2)
	}
}

// testCreateUsers checks the batch create: all users or none.
func testCreateUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	existing := mustCreate(t, s, &store.User{Username: "Existing"})
	mustState(t, s, existing.ID) // warm any cache

	count := func() int {
		n := 0
		if err := s.ListUsers(ctx, func(*store.User) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// A clash with a stored user, with a name repeated inside the batch
	// (any case) and with a live ID: nothing of the batch is stored.
	for name, batch := range map[string][]*store.User{
		"clash with stored": {{Username: "new1"}, {Username: "EXISTING"}, {Username: "new2"}},
		"repeated in batch": {{Username: "dup"}, {Username: "other"}, {Username: "DUP"}},
		"live id":           {{Username: "new3"}, {ID: existing.ID, Username: "new4"}},
		"empty username":    {{Username: "new5"}, {Username: ""}},
		"nil user":          {{Username: "new6"}, nil},
	} {
		err := s.CreateUsers(ctx, batch)
		if err == nil {
			t.Errorf("%s: CreateUsers succeeded", name)
		}
		if name != "empty username" && name != "nil user" && !errors.Is(err, store.ErrExists) {
			t.Errorf("%s: got %v, want ErrExists", name, err)
		}
		if n := count(); n != 1 {
			t.Fatalf("%s: %d users after a failed batch, want 1", name, n)
		}
		for _, u := range batch {
			if u != nil && u.Username != "" {
				if _, err := s.GetUserByName(ctx, u.Username); !errors.Is(err, store.ErrNotFound) && !strings.EqualFold(u.Username, "existing") {
					t.Errorf("%s: %q stored by a failed batch (%v)", name, u.Username, err)
				}
			}
		}
	}
	if st := mustState(t, s, existing.ID); st.Username != "Existing" || st.TokenVersion != 0 {
		t.Errorf("existing user changed by failed batches: %+v", st)
	}

	at := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
	batch := []*store.User{
		{Username: "Imported1", PasswordHash: "h1", AllowedScopes: []string{"a"}},
		{Username: "imported2", PasswordHash: "h2", Disabled: true, CreatedAt: at},
		{ID: "uimported3", Username: "imported3", PasswordHash: "h3", AllowedScopes: []string{}},
	}
	if err := s.CreateUsers(ctx, batch); err != nil {
		t.Fatalf("CreateUsers: %v", err)
	}
	if n := count(); n != 4 {
		t.Fatalf("%d users after the batch, want 4", n)
	}
	ids := map[string]bool{}
	for _, u := range batch {
		if u.ID == "" || ids[u.ID] || u.UpdatedAt.IsZero() {
			t.Fatalf("batch user not filled in: %+v", u)
		}
		ids[u.ID] = true
		got := mustGet(t, s, u.ID)
		if !sameUser(got, u) {
			t.Errorf("stored %+v, returned %+v", got, u)
		}
		if st := mustState(t, s, u.ID); st.Username != u.Username || st.Disabled != u.Disabled {
			t.Errorf("AuthState(%s) = %+v", u.Username, st)
		}
	}
	if batch[2].ID != "uimported3" || !batch[1].CreatedAt.Equal(at) {
		t.Errorf("explicit ID or timestamp not kept: %+v %+v", batch[2], batch[1])
	}
	if got := mustGet(t, s, batch[2].ID); got.AllowedScopes == nil || len(got.AllowedScopes) != 0 {
		t.Errorf("empty allowed list not kept as empty: %#v", got.AllowedScopes)
	}
	if err := s.CreateUsers(ctx, nil); err != nil {
		t.Errorf("empty batch: %v", err)
	}
}

// testHashClasses: once a write that stores a password hash returns,
// HashClasses lists its class, whichever write it was. Logins pad every
// failure to the classes listed, so a class missing from the list would
// let its users be told apart from unknown names by timing. Listing a class
// no user holds any more is allowed (it only costs work).
func testHashClasses(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Well-formed hashes of four classes (zero salts and keys: the store
	// never verifies them, and classes do not depend on them).
	zeros := func(n int) string { return strings.Repeat("A", (n*8+5)/6) }
	argon := func(m, t, p int) string {
		return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, t, p, zeros(16), zeros(32))
	}
	bcryptOf := func(cost int) string { return fmt.Sprintf("$2b$%02d$%s", cost, strings.Repeat(".", 53)) }
	def, strong := argon(19456, 2, 1), argon(65536, 3, 4)
	bc12, bc5 := bcryptOf(12), bcryptOf(5)
	for _, h := range []string{def, strong, bc12, bc5} {
		if password.Class(h) == "" {
			t.Fatalf("test hash %s has no class", h)
		}
	}
	want := func(step string, hashes ...string) {
		t.Helper()
		got, err := s.HashClasses(ctx)
		if err != nil {
			t.Fatalf("after %s: HashClasses: %v", step, err)
		}
		for _, h := range hashes {
			if c := password.Class(h); !slices.Contains(got, c) {
				t.Errorf("after %s: HashClasses = %q, missing %q", step, got, c)
			}
		}
	}

	a := mustCreate(t, s, &store.User{Username: "argon", PasswordHash: def})
	want("CreateUser", def)
	batch := []*store.User{{Username: "imported", PasswordHash: bc12}, {Username: "nohash", PasswordHash: "not a hash"}}
	if err := s.CreateUsers(ctx, batch); err != nil {
		t.Fatal(err)
	}
	want("CreateUsers", def, bc12)
	if _, err := store.SetPassword(ctx, s, a.ID, bc5); err != nil {
		t.Fatal(err)
	}
	want("SetPassword", bc12, bc5)
	if _, err := s.UpdateUser(ctx, batch[1].ID, func(u *store.User) error { u.PasswordHash = strong; return nil }); err != nil {
		t.Fatal(err)
	}
	want("UpdateUser", bc12, bc5, strong)
	if err := s.DeleteUser(ctx, batch[0].ID); err != nil {
		t.Fatal(err)
	}
	want("DeleteUser of another user", bc5, strong)
	got, err := s.HashClasses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range got {
		if c == "" {
			t.Errorf("HashClasses lists an empty class: %q", got)
		}
	}
}
