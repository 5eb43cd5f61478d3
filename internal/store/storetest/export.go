package storetest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// testExportImport exports one store and imports it into another of the
// same backend: every field of every user, of every session that has not
// expired, and every secret, arrives as it was (the cross-backend round
// trip lives with the backends' tests).
func testExportImport(t *testing.T, src, dst store.Store) {
	ctx := t.Context()
	alice := mustCreate(t, src, &store.User{Username: "Alice", PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g", TokenVersion: 7, AllowedScopes: []string{"b", "a"}})
	bob := mustCreate(t, src, &store.User{Username: "bob", Disabled: true, AllowedScopes: []string{}})
	gone := mustCreate(t, src, &store.User{Username: "carol"})
	mustSession(t, src, newSession(gone.ID), 0)
	if err := src.DeleteUser(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	// Two of Alice's sessions, one rotated, and one of Bob's with every
	// field set apart from the defaults; an expired one stays behind.
	a1, a2, b1 := newSession(alice.ID), newSession(alice.ID), newSession(bob.ID)
	a2.Scopes = nil
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Second).Add(123456789)
	b1.Scopes, b1.Generation, b1.CreatedAt, b1.LastUsedAt, b1.RotatedAt = []string{}, 1<<40, at, at.Add(time.Minute), at.Add(2*time.Minute)
	b1.UserAgent, b1.Address = "Mozilla/5.0 \"quoted\" <b>", "[2001:db8::1]:1234"
	expired := newSession(bob.ID)
	for _, x := range []*store.Session{a1, a2, b1, expired} {
		mustSession(t, src, x, 0)
	}
	if _, err := src.UpdateSession(ctx, alice.ID, a1.ID, func(x *store.Session) error { x.Generation = 5; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := src.UpdateSession(ctx, bob.ID, expired.ID, func(x *store.Session) error {
		x.ExpiresAt = time.Now().Add(-time.Second)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Secret(ctx, "hs256", func() ([]byte, error) { return []byte{0, 1, 2, 0xff, '\n', '"'}, nil }); err != nil {
		t.Fatal(err)
	}
	// A retired key and one that signs from an hour on.
	k1, k2 := NewSigningKey(t, store.AlgES256, time.Now().Add(-time.Hour)), NewSigningKey(t, store.AlgEdDSA, time.Now())
	k1.RetiredAt = time.Now().UTC().Truncate(time.Microsecond)
	k2.SignFrom = k2.CreatedAt.Add(time.Hour)
	if _, err := src.UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
		ks.Keys = append(ks.Keys, k1, k2)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := store.Export(ctx, src, &buf); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(buf.String(), "\n"); lines != 10 {
		t.Errorf("export has %d lines, want header, 2 users, 3 sessions, 1 secret, 2 keys, end", lines)
	}
	stats, err := store.Import(ctx, dst, bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if stats.Users != 2 || stats.Sessions != 3 || stats.Secrets != 1 || stats.SecretsKept != 0 || stats.Keys != 2 || stats.KeysKept != 0 {
		t.Errorf("ImportStats = %+v", stats)
	}
	SameContent(t, src, dst)

	// Importing the same export again fails on the users and changes
	// nothing.
	if _, err := store.Import(ctx, dst, bytes.NewReader(buf.Bytes())); !errors.Is(err, store.ErrExists) {
		t.Errorf("second import: %v, want ErrExists", err)
	}
	SameContent(t, src, dst)
}

// testImportConflicts: a secret stored with another value refuses the whole
// import before any user is written; an equal one is kept.
func testImportConflicts(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.Secret(ctx, "hs256", func() ([]byte, error) { return []byte("mine"), nil }); err != nil {
		t.Fatal(err)
	}
	export := func(secret string) *bytes.Reader {
		var buf bytes.Buffer
		d := &store.Dump{
			Users:   []*store.User{{ID: "uimported", Username: "imported", PasswordHash: "h"}},
			Secrets: map[string][]byte{"hs256": []byte(secret)},
		}
		if err := store.WriteExport(&buf, d); err != nil {
			t.Fatal(err)
		}
		return bytes.NewReader(buf.Bytes())
	}
	if _, err := store.Import(ctx, s, export("theirs")); !errors.Is(err, store.ErrSecretConflict) || !strings.Contains(err.Error(), "hs256") {
		t.Errorf("import with a different secret: %v", err)
	}
	if _, err := s.GetUser(ctx, "uimported"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused import stored its user: %v", err)
	}
	stats, err := store.Import(ctx, s, export("mine"))
	if err != nil || stats.Users != 1 || stats.SecretsKept != 1 || stats.Secrets != 0 {
		t.Errorf("import with the same secret: %+v, %v", stats, err)
	}
}

// testImportKeys: a key whose ID the store holds with other content
// (retirement included) refuses the whole import before any user is
// written; an equal one is kept; the others are added to the set.
func testImportKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	mine := NewSigningKey(t, store.AlgEdDSA, time.Now().Add(-time.Hour))
	addKey(t, s, mine)
	export := func(user string, keys ...store.SigningKey) *bytes.Reader {
		var buf bytes.Buffer
		d := &store.Dump{Users: []*store.User{{ID: "u" + user, Username: user, PasswordHash: "h"}}, Keys: keys}
		if err := store.WriteExport(&buf, d); err != nil {
			t.Fatal(err)
		}
		return bytes.NewReader(buf.Bytes())
	}
	other := mine
	other.Private = NewSigningKey(t, store.AlgEdDSA, time.Now()).Private
	retired := mine
	retired.RetiredAt = time.Now().UTC().Truncate(time.Microsecond)
	for name, k := range map[string]store.SigningKey{"another private key": other, "retired there": retired} {
		_, err := store.Import(ctx, s, export("refused", k))
		if !errors.Is(err, store.ErrKeyConflict) || !strings.Contains(err.Error(), mine.ID) {
			t.Errorf("import of a key with %s: %v, want ErrKeyConflict naming %s", name, err, mine.ID)
		}
		if _, err := s.GetUser(ctx, "urefused"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a refused import stored its user: %v", err)
		}
		keysAre(t, "after a refused import", mustKeys(t, s), mine)
	}

	// Kept, and added in creation order: older is older than mine.
	older, newer := NewSigningKey(t, store.AlgES256, time.Now().Add(-2*time.Hour)), NewSigningKey(t, store.AlgEdDSA, time.Now())
	stats, err := store.Import(ctx, s, export("merged", newer, mine, older))
	if err != nil || stats.Users != 1 || stats.Keys != 2 || stats.KeysKept != 1 {
		t.Fatalf("import with the same key and two new ones: %+v, %v", stats, err)
	}
	keysAre(t, "after the merge", mustKeys(t, s), older, mine, newer)

	// Nothing new: the set is left as it is.
	before := mustKeys(t, s)
	stats, err = store.Import(ctx, s, export("again", mine, newer))
	if err != nil || stats.Keys != 0 || stats.KeysKept != 2 {
		t.Errorf("import of keys all stored: %+v, %v", stats, err)
	}
	if after := mustKeys(t, s); after != before {
		t.Error("an import that added no key changed the set's pointer")
	}
}

// SameContent fails t unless a and b hold the same users (every field,
// IDs and timestamps included, in the same order), the same sessions that
// have not expired (every field), the same secrets and the same signing
// keys. Backends' tests use it for round trips across backends.
func SameContent(t *testing.T, a, b store.Store) {
	t.Helper()
	ctx := t.Context()
	list := func(s store.Store) []*store.User {
		var us []*store.User
		if err := s.ListUsers(ctx, func(u *store.User) error { us = append(us, u); return nil }); err != nil {
			t.Fatal(err)
		}
		return us
	}
	ua, ub := list(a), list(b)
	if len(ua) != len(ub) {
		t.Fatalf("%d users, and %d", len(ua), len(ub))
	}
	for i := range ua {
		if !sameUser(ua[i], ub[i]) {
			t.Errorf("user %d: %+v, and %+v", i, ua[i], ub[i])
		}
		sa, sb := mustState(t, a, ua[i].ID), mustState(t, b, ub[i].ID)
		if sa.TokenVersion != sb.TokenVersion || sa.Disabled != sb.Disabled || sa.Username != sb.Username ||
			(sa.AllowedScopes == nil) != (sb.AllowedScopes == nil) {
			t.Errorf("AuthState of %s: %+v, and %+v", ua[i].ID, sa, sb)
		}
		now := time.Now()
		la, err := a.ListSessions(ctx, ua[i].ID, now)
		if err != nil {
			t.Fatal(err)
		}
		lb, err := b.ListSessions(ctx, ub[i].ID, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(la) != len(lb) {
			t.Errorf("user %s: %d sessions, and %d", ua[i].ID, len(la), len(lb))
			continue
		}
		for k := range la {
			if !sameSession(la[k], lb[k]) {
				t.Errorf("user %s, session %d: %+v, and %+v", ua[i].ID, k, la[k], lb[k])
			}
			if !sb.HasSession(lb[k].ID) {
				t.Errorf("user %s: AuthState does not list session %s", ub[i].ID, lb[k].ID)
			}
		}
	}
	sa, err := a.Secrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Secrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sa) != len(sb) {
		t.Errorf("secrets %q, and %q", sa, sb)
	}
	for k, v := range sa {
		if !bytes.Equal(v, sb[k]) {
			t.Errorf("secret %s: %q, and %q", k, v, sb[k])
		}
	}
	if ka, kb := mustKeys(t, a), mustKeys(t, b); !ka.Equal(kb) {
		t.Errorf("signing keys %s, and %s", describeKeys(ka.Keys), describeKeys(kb.Keys))
	}
}
