package bolt

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// writeSchema1 writes a file the way the schema version 1 code did (no auth
// bucket), with raw bbolt: users as JSON, the username index, tombstones
// and one secret. version is what goes into meta's schema_version.
func writeSchema1(t testing.TB, path, version string, users []store.User, deleted []string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"users", "usernames", "deleted_ids", "meta"} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		meta := tx.Bucket([]byte("meta"))
		if err := meta.Put([]byte("schema_version"), []byte(version)); err != nil {
			return err
		}
		if err := meta.Put([]byte("secret:hmac"), []byte("old-secret")); err != nil {
			return err
		}
		for i := range users {
			data, err := encodeUser(&users[i])
			if err != nil {
				return err
			}
			if err := tx.Bucket([]byte("users")).Put([]byte(users[i].ID), data); err != nil {
				return err
			}
			norm := store.NormalizeUsername(users[i].Username)
			if err := tx.Bucket([]byte("usernames")).Put([]byte(norm), []byte(users[i].ID)); err != nil {
				return err
			}
		}
		for _, id := range deleted {
			if err := tx.Bucket([]byte("deleted_ids")).Put([]byte(id), []byte("2024-01-01T00:00:00Z")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// rawState reads the schema version and whether the auth bucket exists (and
// its root page) straight from the file, which must not be open.
func rawState(t testing.TB, path string) (version string, hasAuth bool, authRoot uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		version = string(tx.Bucket(bucketMeta).Get(keySchemaVersion))
		if b := tx.Bucket(bucketAuth); b != nil {
			hasAuth, authRoot = true, uint64(b.Root())
		}
		return nil
	})
	return version, hasAuth, authRoot
}

func schema1Users(n int) []store.User {
	at := time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)
	us := make([]store.User, n)
	for i := range us {
		u := store.User{
			ID:           fmt.Sprintf("u%05d", i),
			Username:     fmt.Sprintf("Old%d", i),
			PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
			TokenVersion: uint64(i * 37),
			Disabled:     i%4 == 1,
			CreatedAt:    at, UpdatedAt: at, PasswordChangedAt: at,
		}
		switch i % 3 {
		case 1:
			u.AllowedScopes = []string{}
		case 2:
			u.AllowedScopes = []string{"api:read", fmt.Sprintf("s%d", i)}
		}
		us[i] = u
	}
	return us
}

func TestUpgradeFromSchema1(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "v1.db")
	users := schema1Users(1000)
	writeSchema1(t, path, "1", users, []string{"ugone"})

	s, err := Open(path, Options{CacheSize: -1})
	if err != nil {
		t.Fatalf("Open of a schema 1 file: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check after the upgrade: %v", err)
	}
	for i := range users {
		st, err := s.AuthState(ctx, users[i].ID)
		if err != nil {
			t.Fatalf("AuthState(%s): %v", users[i].ID, err)
		}
		if want := users[i].State(); !sameAuthState(st, want) {
			t.Fatalf("AuthState(%s) = %#v, want %#v", users[i].ID, st, want)
		}
	}
	if _, err := s.AuthState(ctx, "ugone"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AuthState of a tombstoned ID: %v", err)
	}
	// The rest of the file came through: names, tombstones, secrets, and
	// writes keep both buckets in step.
	if u, err := s.GetUserByName(ctx, "OLD7"); err != nil || u.ID != users[7].ID {
		t.Errorf("GetUserByName after upgrade = %+v, %v", u, err)
	}
	if err := s.CreateUser(ctx, &store.User{ID: "ugone", Username: "x"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("tombstone lost in the upgrade: %v", err)
	}
	if sec, err := s.Secret(ctx, "hmac", nil); err != nil || string(sec) != "old-secret" {
		t.Errorf("secret after upgrade = %q, %v", sec, err)
	}
	if _, err := store.Revoke(ctx, s, users[5].ID); err != nil {
		t.Fatal(err)
	}
	if st, err := s.AuthState(ctx, users[5].ID); err != nil || st.TokenVersion != users[5].TokenVersion+1 {
		t.Errorf("AuthState after Revoke = %+v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	version, hasAuth, root := rawState(t, path)
	if version != schemaVersion || !hasAuth {
		t.Fatalf("after upgrade: schema %q, auth bucket %v", version, hasAuth)
	}

	// Reopening does not rebuild auth: its root page stays where it is.
	s = openAt(t, path, Options{})
	if err := s.Check(); err != nil {
		t.Fatalf("Check after reopen: %v", err)
	}
	if st, err := s.AuthState(ctx, users[5].ID); err != nil || st.TokenVersion != users[5].TokenVersion+1 {
		t.Errorf("AuthState after reopen = %+v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v, has, root2 := rawState(t, path); v != schemaVersion || !has || root2 != root {
		t.Errorf("reopen changed the file: schema %q, auth %v, auth root %d -> %d", v, has, root, root2)
	}
}

func TestUpgradeEmptySchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	writeSchema1(t, path, "1", nil, nil)
	s := openAt(t, path, Options{})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	u := &store.User{Username: "first"}
	if err := s.CreateUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if st, err := s.AuthState(t.Context(), u.ID); err != nil || st.Username != "first" {
		t.Errorf("AuthState = %+v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v, has, _ := rawState(t, path); v != schemaVersion || !has {
		t.Errorf("schema %q, auth bucket %v", v, has)
	}
}

func TestNewFileIsCurrentSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	s := openAt(t, path, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v, has, _ := rawState(t, path); v != schemaVersion || !has {
		t.Errorf("new file: schema %q, auth bucket %v", v, has)
	}
}

// TestOpenRefusesAndLeavesFileAlone: a version this build does not know,
// and a schema 1 file it cannot upgrade, fail Open with a clear error and
// are not modified.
func TestOpenRefusesAndLeavesFileAlone(t *testing.T) {
	bad := schema1Users(3)
	for _, tc := range []struct {
		name, version string
		users         []store.User
		want          []string
	}{
		{"newer schema", "6", nil, []string{`unsupported schema version "6"`, `understands "5"`}},
		{"unknown schema", "2-beta", nil, []string{`unsupported schema version "2-beta"`}},
		{"schema 2 without auth", "2", nil, []string{"has no auth bucket"}},
		{"schema 3 without auth", "3", nil, []string{"has no auth bucket"}},
		{"schema 4 without auth", "4", nil, []string{"has no auth bucket"}},
		{"schema 5 without auth", "5", nil, []string{"has no auth bucket"}},
		{"undecodable user", "1", bad, []string{"upgrade to schema version 5", "decode user u00001"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.db")
			writeSchema1(t, path, tc.version, tc.users, nil)
			if tc.name == "undecodable user" {
				db, err := bolt.Open(path, 0o600, nil)
				if err != nil {
					t.Fatal(err)
				}
				_ = db.Update(func(tx *bolt.Tx) error {
					return tx.Bucket(bucketUsers).Put([]byte("u00001"), []byte("{not json"))
				})
				_ = db.Close()
			}
			s, err := Open(path, Options{Timeout: time.Second})
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if v, has, _ := rawState(t, path); v != tc.version || has {
				t.Errorf("refused file was modified: schema %q, auth bucket %v", v, has)
			}
		})
	}
}

// TestCheckAuthBucket damages auth behind the store's back: Check reports
// each kind of mismatch, and AuthState never falls back to users.
func TestCheckAuthBucket(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name   string
		damage func(auth *bolt.Bucket, id []byte) error
		want   string
	}{
		{"missing record", func(a *bolt.Bucket, id []byte) error { return a.Delete(id) }, "has no auth record"},
		{"garbage record", func(a *bolt.Bucket, id []byte) error { return a.Put(id, []byte{9, 9}) }, "decode auth record"},
		{"trailing garbage", func(a *bolt.Bucket, id []byte) error {
			return a.Put(id, append(appendAuthRecord(nil, store.AuthState{Username: "victim"}), 0))
		}, "trailing"},
		{"stale version", func(a *bolt.Bucket, id []byte) error {
			return a.Put(id, appendAuthRecord(nil, store.AuthState{Username: "victim", TokenVersion: 0}))
		}, "the user says"},
		{"nil vs empty scopes", func(a *bolt.Bucket, id []byte) error {
			return a.Put(id, appendAuthRecord(nil, store.AuthState{Username: "victim", TokenVersion: 1, AllowedScopes: []string{}}))
		}, "the user says"},
		{"sid list without the session", func(a *bolt.Bucket, id []byte) error {
			return a.Put(id, appendAuthRecord(nil, store.AuthState{Username: "victim", TokenVersion: 1, Sessions: []string{"sghost"}}))
		}, `lists sessions ["sghost"], the sessions bucket holds []`},
		{"orphan record", func(a *bolt.Bucket, _ []byte) error {
			return a.Put([]byte("unobody"), appendAuthRecord(nil, store.AuthState{Username: "nobody"}))
		}, "auth record unobody has no user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTemp(t, Options{CacheSize: -1})
			u := &store.User{Username: "victim"}
			if err := s.CreateUsers(ctx, []*store.User{u, {Username: "bystander"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := store.Revoke(ctx, s, u.ID); err != nil {
				t.Fatal(err)
			}
			if err := s.Check(); err != nil {
				t.Fatalf("Check before damage: %v", err)
			}
			if err := s.db.Update(func(tx *bolt.Tx) error { return tc.damage(tx.Bucket(bucketAuth), []byte(u.ID)) }); err != nil {
				t.Fatal(err)
			}
			err := s.Check()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check = %v, want an error mentioning %q", err, tc.want)
			}
			st, err := s.AuthState(ctx, u.ID)
			switch tc.name {
			case "missing record":
				if !errors.Is(err, store.ErrNotFound) {
					t.Errorf("AuthState without a record = %+v, %v; want ErrNotFound", st, err)
				}
			case "garbage record", "trailing garbage":
				if !errors.Is(err, errAuthRecord) {
					t.Errorf("AuthState of a bad record = %+v, %v; want errAuthRecord", st, err)
				}
			}
		})
	}
}

// TestWritesKeepAuthInStep runs every write path and checks auth against
// users after each one (Check does the comparison).
func TestWritesKeepAuthInStep(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, Options{})
	check := func(step string) {
		t.Helper()
		if err := s.Check(); err != nil {
			t.Fatalf("after %s: %v", step, err)
		}
	}
	a := &store.User{Username: "a", AllowedScopes: []string{"x"}}
	if err := s.CreateUser(ctx, a); err != nil {
		t.Fatal(err)
	}
	check("CreateUser")
	batch := []*store.User{{Username: "b"}, {ID: "uexplicit", Username: "c", Disabled: true, AllowedScopes: []string{}}}
	if err := s.CreateUsers(ctx, batch); err != nil {
		t.Fatal(err)
	}
	check("CreateUsers")
	if err := s.CreateUsers(ctx, []*store.User{{Username: "d"}, {Username: "A"}}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("failed batch: %v", err)
	}
	check("a failed CreateUsers")
	if _, err := store.SetPassword(ctx, s, a.ID, "h2"); err != nil {
		t.Fatal(err)
	}
	check("SetPassword")
	if _, err := s.UpdateUser(ctx, a.ID, func(u *store.User) error { u.Username = "A2"; u.AllowedScopes = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	check("rename")
	if _, err := s.UpdateUser(ctx, a.ID, func(u *store.User) error { u.PasswordHash = "same-state"; return nil }); err != nil {
		t.Fatal(err)
	}
	check("an update that leaves the auth state alone")
	if _, err := s.UpdateUser(ctx, a.ID, func(u *store.User) error { u.Disabled = true; return errors.New("abort") }); err == nil {
		t.Fatal("aborted update succeeded")
	}
	check("an aborted update")
	if err := s.DeleteUser(ctx, batch[1].ID); err != nil {
		t.Fatal(err)
	}
	check("DeleteUser")
	if _, err := s.AuthState(ctx, batch[1].ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AuthState after delete: %v", err)
	}
	st, err := s.AuthState(ctx, a.ID)
	if err != nil || st.Username != "A2" || st.TokenVersion != 1 || st.AllowedScopes != nil {
		t.Errorf("AuthState = %+v, %v", st, err)
	}
}

func TestAppendsOnly(t *testing.T) {
	s := openTemp(t, Options{})
	if err := s.CreateUsers(t.Context(), []*store.User{{ID: "u5", Username: "five"}}); err != nil {
		t.Fatal(err)
	}
	us := func(ids ...string) []store.User {
		out := make([]store.User, len(ids))
		for i, id := range ids {
			out[i].ID = id
		}
		return out
	}
	for _, tc := range []struct {
		ids  []string
		want bool
	}{
		{nil, false},
		{[]string{"u6", "u7", "u8"}, true},
		{[]string{"u6"}, true},
		{[]string{"u5"}, false},       // equal to the last key
		{[]string{"u4", "u6"}, false}, // starts before it
		{[]string{"u6", "u8", "u7"}, false},
		{[]string{"u6", "u6"}, false},
		{[]string{"u6", ""}, false}, // an ID still to be generated
	} {
		_ = s.db.View(func(tx *bolt.Tx) error {
			if got := appendsOnly(us(tc.ids...), tx.Bucket(bucketUsers), tx.Bucket(bucketAuth)); got != tc.want {
				t.Errorf("appendsOnly(%q) = %v, want %v", tc.ids, got, tc.want)
			}
			return nil
		})
	}
	// An empty bucket takes anything in order.
	_ = s.db.View(func(tx *bolt.Tx) error {
		if !appendsOnly(us("a", "b"), tx.Bucket(bucketDeleted)) {
			t.Error("appendsOnly on an empty bucket = false")
		}
		return nil
	})
}

// TestBulkFillPacksPages: batches appended in ID order fill the pages of
// users and auth to about bulkFillPercent, and stay correct; a batch that
// does not append keeps bbolt's default.
func TestBulkFillPacksPages(t *testing.T) {
	ctx := t.Context()
	fill := func(inOrder bool) (users, auth bolt.BucketStats) {
		s := openTemp(t, Options{})
		const n, batch = 6000, 2000
		ids := make([]string, n)
		for i := range ids {
			ids[i] = store.NewID()
		}
		if inOrder {
			slices.Sort(ids)
		}
		for lo := 0; lo < n; lo += batch {
			us := make([]*store.User, 0, batch)
			for i := lo; i < lo+batch; i++ {
				us = append(us, &store.User{ID: ids[i], Username: fmt.Sprintf("bulk%05d", i), PasswordHash: "h"})
			}
			if err := s.CreateUsers(ctx, us); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Check(); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids[:50] {
			if _, err := s.AuthState(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		_ = s.db.View(func(tx *bolt.Tx) error {
			users, auth = tx.Bucket(bucketUsers).Stats(), tx.Bucket(bucketAuth).Stats()
			return nil
		})
		return users, auth
	}
	fillRatio := func(st bolt.BucketStats) float64 { return float64(st.LeafInuse) / float64(st.LeafAlloc) }
	ou, oa := fill(true)
	ru, ra := fill(false)
	t.Logf("in order: users %.2f full (%d leaf pages), auth %.2f (%d); random: users %.2f (%d), auth %.2f (%d)",
		fillRatio(ou), ou.LeafPageN, fillRatio(oa), oa.LeafPageN, fillRatio(ru), ru.LeafPageN, fillRatio(ra), ra.LeafPageN)
	for name, st := range map[string]bolt.BucketStats{"users": ou, "auth": oa} {
		if r := fillRatio(st); r < bulkFillPercent-0.1 {
			t.Errorf("%s pages %.2f full after in-order batches, want about %.1f", name, r, bulkFillPercent)
		}
	}
	for name, st := range map[string]bolt.BucketStats{"users": ru, "auth": ra} {
		if r := fillRatio(st); r > 0.85 {
			t.Errorf("%s pages %.2f full after random batches: the packing applied where it should not", name, r)
		}
	}
}

// TestUpgradeFromSchema2 builds hash_classes from the users a schema 2 file
// holds: an imported hash stored before the upgrade must pad failed logins
// as much as one stored after it.
func TestUpgradeFromSchema2(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "v2.db")
	users := schema1Users(10)
	imported := "$2b$12$" + strings.Repeat(".", 53)
	users[3].PasswordHash = imported
	users[4].PasswordHash = "not a hash"
	// schema1Users' hashes have a 4-byte salt: not hashes Class accepts.
	users[5].PasswordHash = "$argon2id$v=19$m=19456,t=2,p=1$" + strings.Repeat("A", 22) + "$" + strings.Repeat("A", 43)
	writeSchema1(t, path, "2", users, nil)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(buildAuth); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openAt(t, path, Options{})
	if err := s.Check(); err != nil {
		t.Fatalf("Check after the upgrade: %v", err)
	}
	got, err := s.HashClasses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"argon2id:m=19456,t=2,p=1", "bcrypt:12"}; !slices.Equal(got, want) {
		t.Errorf("HashClasses after the upgrade = %q, want %q", got, want)
	}
	if st, err := s.AuthState(ctx, users[7].ID); err != nil || st.TokenVersion != users[7].TokenVersion {
		t.Errorf("AuthState after the upgrade = %+v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v, has, _ := rawState(t, path); v != schemaVersion || !has {
		t.Errorf("after upgrade: schema %q, auth bucket %v", v, has)
	}
}

// TestCheckHashClasses: Check reports a user whose hash class is missing
// from hash_classes.
func TestCheckHashClasses(t *testing.T) {
	s := openTemp(t, Options{})
	u := &store.User{Username: "imported", PasswordHash: "$2b$12$" + strings.Repeat(".", 53)}
	if err := s.CreateUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check before damage: %v", err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketClasses).Delete([]byte("bcrypt:12")) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err == nil || !strings.Contains(err.Error(), "hash class bcrypt:12 of user "+u.ID) {
		t.Errorf("Check = %v, want the missing class named", err)
	}
}

// TestUpgradeFromSchema3 opens a file as the schema 3 code left it (users,
// auth, hash_classes, no sessions): its users, tombstones and secret come
// through unchanged, sessions work at once and survive a reopen, and the
// file says schema 5.
func TestUpgradeFromSchema3(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "v3.db")
	users := schema1Users(50)
	writeSchema1(t, path, "3", users, []string{"ugone"})
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := buildAuth(tx); err != nil {
			return err
		}
		return buildClasses(tx)
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openAt(t, path, Options{})
	if err := s.Check(); err != nil {
		t.Fatalf("Check after the upgrade: %v", err)
	}
	for i := range users {
		got, err := s.GetUser(ctx, users[i].ID)
		if err != nil || got.Username != users[i].Username || got.PasswordHash != users[i].PasswordHash ||
			got.TokenVersion != users[i].TokenVersion || !got.CreatedAt.Equal(users[i].CreatedAt) {
			t.Fatalf("GetUser(%s) after the upgrade = %+v, %v; want %+v", users[i].ID, got, err, users[i])
		}
		st, err := s.AuthState(ctx, users[i].ID)
		if want := users[i].State(); err != nil || !sameAuthState(st, want) || st.Sessions != nil {
			t.Fatalf("AuthState(%s) = %#v, %v; want %#v without sessions", users[i].ID, st, err, want)
		}
	}
	if err := s.CreateUser(ctx, &store.User{ID: "ugone", Username: "x"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("tombstone lost in the upgrade: %v", err)
	}
	if sec, err := s.Secret(ctx, "hmac", nil); err != nil || string(sec) != "old-secret" {
		t.Errorf("secret after upgrade = %q, %v", sec, err)
	}

	u := users[7].ID
	sess := &store.Session{UserID: u, Generation: 1, ExpiresAt: time.Now().Add(time.Hour)}
	if _, err := s.CreateSession(ctx, sess, 0); err != nil {
		t.Fatalf("CreateSession after the upgrade: %v", err)
	}
	if st, err := s.AuthState(ctx, u); err != nil || !st.HasSession(sess.ID) {
		t.Errorf("AuthState after CreateSession = %+v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v, has, _ := rawState(t, path); v != schemaVersion || !has {
		t.Errorf("after upgrade: schema %q, auth bucket %v", v, has)
	}

	s = openAt(t, path, Options{})
	if err := s.Check(); err != nil {
		t.Fatalf("Check after reopen: %v", err)
	}
	if got, err := s.GetSession(ctx, u, sess.ID); err != nil || got.Generation != 1 || !got.ExpiresAt.Equal(sess.ExpiresAt) {
		t.Errorf("GetSession after reopen = %+v, %v", got, err)
	}
	if st, err := s.AuthState(ctx, u); err != nil || !slices.Equal(st.Sessions, []string{sess.ID}) {
		t.Errorf("AuthState after reopen = %+v, %v", st, err)
	}
}

// writeSchema4 writes a file the way the schema version 4 code left it:
// users, auth records without sid lists (the flag did not exist), hash
// classes, and sessions, all with raw bbolt.
func writeSchema4(t testing.TB, path string, users []store.User, sessions []*store.Session) {
	t.Helper()
	writeSchema1(t, path, "4", users, []string{"ugone"})
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		if err := buildAuth(tx); err != nil {
			return err
		}
		if err := buildClasses(tx); err != nil {
			return err
		}
		b, err := tx.CreateBucket(bucketSessions)
		if err != nil {
			return err
		}
		for _, x := range sessions {
			data, err := encodeSession(x)
			if err != nil {
				return err
			}
			if err := b.Put(sessionKey(x.UserID, x.ID), data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeFromSchema4 opens a file as the schema 4 code left it, with
// sessions but auth records that list none: the upgrade fills each user's
// sid list from the sessions bucket (users whose ID is a prefix of
// another's included), so that bearer tokens of sessions started before
// the upgrade stay valid; the rest of the file comes through, and a reopen
// does not rewrite auth again.
func TestUpgradeFromSchema4(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "v4.db")
	users := schema1Users(30)
	users = append(users, store.User{ID: "u1", Username: "prefix"}, store.User{ID: "u10", Username: "prefixed"})
	at := time.Now().UTC().Truncate(time.Second)
	want := map[string][]string{}
	var sessions []*store.Session
	add := func(uid, sid string) {
		sessions = append(sessions, &store.Session{
			ID: sid, UserID: uid, Generation: 1, Scopes: []string{"me:read"},
			CreatedAt: at, LastUsedAt: at, RotatedAt: at, ExpiresAt: at.Add(time.Hour),
			UserAgent: strings.Repeat("Mozilla ", 40),
		})
		want[uid] = append(want[uid], sid)
	}
	for i := range 30 {
		for k := range i % 3 { // users with 0, 1 and 2 sessions
			add(users[i].ID, fmt.Sprintf("s%02d%d", i, k))
		}
	}
	add("u1", "sone")
	add("u10", "sten")
	add("u10", "sthree")
	writeSchema4(t, path, users, sessions)

	s, err := Open(path, Options{CacheSize: -1})
	if err != nil {
		t.Fatalf("Open of a schema 4 file: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check after the upgrade: %v", err)
	}
	for i := range users {
		id := users[i].ID
		st, err := s.AuthState(ctx, id)
		w := users[i].State()
		w.Sessions = want[id]
		if err != nil || !sameAuthState(st, w) {
			t.Fatalf("AuthState(%s) after the upgrade = %#v, %v; want %#v", id, st, err, w)
		}
	}
	if st, _ := s.AuthState(ctx, "u10"); !st.HasSession("sten") || !st.HasSession("sthree") || st.HasSession("sone") {
		t.Errorf("AuthState(u10) = %+v", st)
	}
	if got, err := s.GetSession(ctx, "u1", "sone"); err != nil || got.UserAgent != sessions[len(sessions)-3].UserAgent {
		t.Errorf("GetSession after the upgrade = %+v, %v", got, err)
	}
	if err := s.CreateUser(ctx, &store.User{ID: "ugone", Username: "x"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("tombstone lost in the upgrade: %v", err)
	}
	if sec, err := s.Secret(ctx, "hmac", nil); err != nil || string(sec) != "old-secret" {
		t.Errorf("secret after upgrade = %q, %v", sec, err)
	}
	// Writes after the upgrade keep the lists in step.
	if err := s.DeleteSession(ctx, "u10", "sten"); err != nil {
		t.Fatal(err)
	}
	if st, err := s.AuthState(ctx, "u10"); err != nil || !slices.Equal(st.Sessions, []string{"sthree"}) {
		t.Errorf("AuthState after DeleteSession = %+v, %v", st, err)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check after a write: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	v, has, root := rawState(t, path)
	if v != schemaVersion || !has {
		t.Fatalf("after upgrade: schema %q, auth bucket %v", v, has)
	}
	s = openAt(t, path, Options{})
	if st, err := s.AuthState(ctx, "u1"); err != nil || !slices.Equal(st.Sessions, []string{"sone"}) {
		t.Errorf("AuthState after reopen = %+v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v2, _, root2 := rawState(t, path); v2 != schemaVersion || root2 != root {
		t.Errorf("reopen changed the file: schema %q, auth root %d -> %d", v2, root, root2)
	}
}

// TestUpgradeFromSchema4Refused: a schema 4 file whose sessions cannot be
// listed in an auth record (a session of a missing user, a malformed key)
// fails Open and is left as it was.
func TestUpgradeFromSchema4Refused(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  []byte
		want string
	}{
		{"orphan session", sessionKey("unobody", "sx"), "session sx belongs to missing user unobody"},
		{"malformed key", []byte("nokey"), "is not user id 0x00 session id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "v4.db")
			users := schema1Users(3)
			writeSchema4(t, path, users, []*store.Session{{ID: "sa", UserID: users[0].ID, ExpiresAt: time.Now().Add(time.Hour)}})
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSessions).Put(tc.key, []byte("{}")) }); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{Timeout: time.Second})
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), "upgrade to schema version 5") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open = %v, want an upgrade error mentioning %q", err, tc.want)
			}
			if v, _, _ := rawState(t, path); v != "4" {
				t.Errorf("refused file was modified: schema %q", v)
			}
		})
	}
}
