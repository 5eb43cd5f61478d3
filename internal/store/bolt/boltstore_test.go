package bolt

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/storetest"
)

func openAt(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openTemp(t testing.TB, opts Options) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "users.db"), opts)
}

// backend runs the conformance suite on a file per test with opts. A bbolt
// file admits one open handle (its lock), so the suite's two-handle tests
// close one before they open the other; within a process, gateways share a
// file through one handle (caddymodule's store pool), never two.
func backend(opts Options) storetest.Backend {
	return storetest.Backend{
		New: func(t *testing.T) func() (store.Store, error) {
			path := filepath.Join(t.TempDir(), "users.db")
			return func() (store.Store, error) { return Open(path, opts) }
		},
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, backend(Options{}))
}

func TestConformanceNoCache(t *testing.T) {
	storetest.Run(t, backend(Options{CacheSize: -1}))
}

func TestConformanceTinyCache(t *testing.T) {
	// Constant eviction exercises the fill/evict/invalidate interplay.
	storetest.Run(t, backend(Options{CacheSize: 2}))
}

func TestFileModeAndDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "dir", "users.db")
	s := openAt(t, path, Options{})
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		t.Errorf("file mode %v, want 0600", m)
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if m := di.Mode().Perm(); m&0o077 != 0 {
		t.Errorf("directory mode %v, want 0700", m)
	}
}

func TestRelativePathIsMadeAbsolute(t *testing.T) {
	t.Chdir(t.TempDir())
	s := openAt(t, "rel.db", Options{})
	if !filepath.IsAbs(s.Path()) || filepath.Base(s.Path()) != "rel.db" {
		t.Errorf("Path() = %q", s.Path())
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "users.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	u := &store.User{Username: "Persist", PasswordHash: "h", AllowedScopes: []string{}}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Revoke(ctx, s, u.ID); err != nil {
		t.Fatal(err)
	}
	gone := &store.User{Username: "gone"}
	if err := s.CreateUser(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	sec, err := s.Secret(ctx, "hmac", func() ([]byte, error) { return []byte("k1"), nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openAt(t, path, Options{})
	got, err := s2.GetUserByName(ctx, "persist")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != u.ID || got.TokenVersion != 1 || got.AllowedScopes == nil {
		t.Errorf("after reopen: %+v", got)
	}
	sec2, err := s2.Secret(ctx, "hmac", func() ([]byte, error) {
		t.Error("generate called for a persisted secret")
		return []byte("k2"), nil
	})
	if err != nil || string(sec2) != string(sec) {
		t.Errorf("secret after reopen = %q, %v; want %q", sec2, err, sec)
	}
	if err := s2.CreateUser(ctx, &store.User{ID: gone.ID, Username: "again"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("tombstone lost across reopen: %v", err)
	}
	if err := s2.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	s := openTemp(t, Options{})
	const timeout = 200 * time.Millisecond
	start := time.Now()
	s2, err := Open(s.Path(), Options{Timeout: timeout})
	elapsed := time.Since(start)
	if err == nil {
		_ = s2.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("error %v does not wrap ErrLocked", err)
	}
	msg := err.Error()
	for _, want := range []string{"locked by another process", s.Path(), "caddy crudauth"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") || msg != strings.ToLower(msg[:1])+msg[1:] {
		t.Errorf("error %q is not one lowercase line", msg)
	}
	if elapsed < timeout/2 || elapsed > timeout+2*time.Second {
		t.Errorf("second Open failed after %v, want about %v", elapsed, timeout)
	}

	// Once the first holder closes, the file opens.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	openAt(t, s.Path(), Options{Timeout: timeout})
}

func TestOpenRejectsGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "garbage.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a bolt file ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path, Options{Timeout: 200 * time.Millisecond}); err == nil {
		_ = s.Close()
		t.Fatal("Open accepted a file that is not a bolt database")
	}
	if _, err := Open("", Options{}); err == nil {
		t.Error("Open accepted an empty path")
	}
}

func TestBackupRestore(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, Options{})
	want := map[string]*store.User{}
	for i := range 200 {
		u := &store.User{Username: fmt.Sprintf("User%03d", i), PasswordHash: fmt.Sprintf("h%d", i)}
		if i%3 == 0 {
			u.AllowedScopes = []string{"s" + fmt.Sprint(i)}
		}
		if err := s.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 {
			if _, err := store.Revoke(ctx, s, u.ID); err != nil {
				t.Fatal(err)
			}
			u.TokenVersion++
		}
		want[u.ID] = u
	}
	sec, err := s.Secret(ctx, "k", func() ([]byte, error) { return []byte("secret"), nil })
	if err != nil {
		t.Fatal(err)
	}

	backup := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.OpenFile(backup, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.SnapshotFile(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(backup); fi.Size() != n {
		t.Errorf("Backup reported %d bytes, file has %d", n, fi.Size())
	}

	r := openAt(t, backup, Options{})
	if err := r.Check(); err != nil {
		t.Fatalf("Check on restored copy: %v", err)
	}
	seen := 0
	err = r.ListUsers(ctx, func(u *store.User) error {
		seen++
		w, ok := want[u.ID]
		if !ok {
			return fmt.Errorf("unexpected user %+v", u)
		}
		if u.Username != w.Username || u.PasswordHash != w.PasswordHash || u.TokenVersion != w.TokenVersion ||
			(u.AllowedScopes == nil) != (w.AllowedScopes == nil) {
			return fmt.Errorf("restored %+v, want %+v", u, w)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(want) {
		t.Errorf("restored %d users, want %d", seen, len(want))
	}
	for id, w := range want {
		st, err := r.AuthState(ctx, id)
		if err != nil || st.TokenVersion != w.TokenVersion {
			t.Errorf("restored AuthState(%s) = %+v, %v", id, st, err)
		}
	}
	sec2, err := r.Secret(ctx, "k", nil)
	if err != nil || string(sec2) != string(sec) {
		t.Errorf("restored secret = %q, %v", sec2, err)
	}
}

func TestCheck(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, Options{})
	for i := range 50 {
		u := &store.User{Username: fmt.Sprintf("c%d", i)}
		if err := s.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := s.DeleteUser(ctx, u.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Check after Close: %v", err)
	}
}

func TestCacheBounded(t *testing.T) {
	ctx := t.Context()
	const bound = 16
	s := openTemp(t, Options{CacheSize: bound})
	ids := make([]string, 100)
	for i := range ids {
		u := &store.User{Username: fmt.Sprintf("b%d", i)}
		if err := s.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		ids[i] = u.ID
	}
	for round := range 3 {
		for _, id := range ids {
			if _, err := s.AuthState(ctx, id); err != nil {
				t.Fatal(err)
			}
			if n := s.cache.size(); n > bound || n < 1 {
				t.Fatalf("round %d: cache holds %d entries, bound %d", round, n, bound)
			}
		}
	}
	// A hit is served from the cache: the entry is there after a read.
	if _, err := s.AuthState(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.cache.get(ids[0]); !ok {
		t.Error("AuthState did not fill the cache")
	}
	// Writes drop the entry; unknown IDs are not cached.
	if _, err := store.Revoke(ctx, s, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.cache.get(ids[0]); ok {
		t.Error("Revoke left a cache entry")
	}
	if _, err := s.AuthState(ctx, "unknown"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	if _, ok := s.cache.get("unknown"); ok {
		t.Error("negative result cached")
	}
}

func TestCacheDisabled(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, Options{CacheSize: -1})
	u := &store.User{Username: "nocache"}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.AuthState(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.cache.size(); n != 0 {
		t.Errorf("disabled cache holds %d entries", n)
	}
}

// TestStaleFillRefused drives the generation check directly: a fill that
// started before an invalidation must not land.
func TestStaleFillRefused(t *testing.T) {
	var c authCache
	c.init(10)
	gen := c.generation()
	c.invalidate("u1") // a write finishes while the reader is in its View
	c.fill("u1", gen, store.AuthState{TokenVersion: 1})
	if _, ok := c.get("u1"); ok {
		t.Fatal("stale fill was cached")
	}
	gen = c.generation()
	c.fill("u1", gen, store.AuthState{TokenVersion: 2})
	if st, ok := c.get("u1"); !ok || st.TokenVersion != 2 {
		t.Fatalf("fresh fill not cached: %+v %v", st, ok)
	}
}

func TestUpdateUserRejectsEmptyUsername(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, Options{})
	u := &store.User{Username: "x"}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateUser(ctx, u.ID, func(u *store.User) error { u.Username = ""; return nil }); err == nil {
		t.Error("UpdateUser accepted an empty username")
	}
	if err := s.CreateUser(ctx, &store.User{}); err == nil {
		t.Error("CreateUser accepted an empty username")
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

// benchHash is a fake argon2id PHC string of a realistic length.
const benchHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"

func benchStore(b *testing.B) (*Store, *store.User) {
	b.Helper()
	s := openTemp(b, Options{})
	u := &store.User{Username: "bench", PasswordHash: "$argon2id$v=19$m=65536,t=1,p=4$c2FsdA$aGFzaA", AllowedScopes: []string{"read", "write"}}
	if err := s.CreateUser(b.Context(), u); err != nil {
		b.Fatal(err)
	}
	return s, u
}

func BenchmarkAuthState(b *testing.B) {
	s, u := benchStore(b)
	ctx := b.Context()
	if _, err := s.AuthState(ctx, u.ID); err != nil { // warm
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.AuthState(ctx, u.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// authStateV1 is AuthState as schema version 1 had it, kept for comparison
// in benchmarks only: the same cache handling, but a miss decodes the whole
// JSON user for four fields.
func authStateV1(s *Store, id string) (store.AuthState, error) {
	if st, ok := s.cache.get(id); ok {
		return st, nil
	}
	gen := s.cache.generation()
	var st store.AuthState
	err := s.view(func(tx *bolt.Tx) error {
		if id == "" {
			return store.ErrNotFound
		}
		data := tx.Bucket(bucketUsers).Get([]byte(id))
		if data == nil {
			return store.ErrNotFound
		}
		var f authFields
		if err := json.Unmarshal(data, &f); err != nil {
			return err
		}
		st = store.AuthState{Username: f.Username, TokenVersion: f.TokenVersion, Disabled: f.Disabled, AllowedScopes: f.AllowedScopes}
		return nil
	})
	if err != nil {
		return store.AuthState{}, err
	}
	s.cache.fill(id, gen, st)
	return st, nil
}

func BenchmarkAuthStateMiss(b *testing.B) {
	s, u := benchStore(b)
	ctx := b.Context()
	b.Run("known", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.cache.invalidate(u.ID)
			if _, err := s.AuthState(ctx, u.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("known_v1_json", func(b *testing.B) { // the schema 1 miss path, for comparison
		b.ReportAllocs()
		for b.Loop() {
			s.cache.invalidate(u.ID)
			if _, err := authStateV1(s, u.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unknown", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.AuthState(ctx, "unope"); !errors.Is(err, store.ErrNotFound) {
				b.Fatal(err)
			}
		}
	})
	b.Run("unknown_v1_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := authStateV1(s, "unope"); !errors.Is(err, store.ErrNotFound) {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAuthStateMissSpread reads users of a 20000-user file (filled
// as a bulk import would) in a scattered order with the cache off: every
// read walks the B+tree to a different leaf.
func BenchmarkAuthStateMissSpread(b *testing.B) {
	s := openTemp(b, Options{CacheSize: -1})
	ctx := b.Context()
	const n = 20000
	us := make([]*store.User, n)
	ids := make([]string, n)
	for i := range us {
		ids[i] = store.NewID()
	}
	slices.Sort(ids)
	for i := range us {
		us[i] = &store.User{ID: ids[i], Username: fmt.Sprintf("spread%05d", i), PasswordHash: benchHash}
	}
	if err := s.CreateUsers(ctx, us); err != nil {
		b.Fatal(err)
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	b.Run("auth", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := s.AuthState(ctx, ids[i%n]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("v1_json", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := authStateV1(s, ids[i%n]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func BenchmarkAuthStateParallel(b *testing.B) {
	s := openTemp(b, Options{})
	ctx := b.Context()
	ids := make([]string, 64)
	for i := range ids {
		u := &store.User{Username: fmt.Sprintf("p%d", i)}
		if err := s.CreateUser(ctx, u); err != nil {
			b.Fatal(err)
		}
		ids[i] = u.ID
		if _, err := s.AuthState(ctx, u.ID); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Uint32
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1))
		for pb.Next() {
			if _, err := s.AuthState(ctx, ids[i%len(ids)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

func BenchmarkGetUserByName(b *testing.B) {
	s, _ := benchStore(b)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetUserByName(ctx, "BENCH"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUpdateUser(b *testing.B) {
	s, u := benchStore(b)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := store.Revoke(ctx, s, u.ID); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreateUser(b *testing.B) {
	s := openTemp(b, Options{})
	ctx := b.Context()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		u := &store.User{Username: fmt.Sprintf("create%d", i), PasswordHash: "h"}
		i++
		if err := s.CreateUser(ctx, u); err != nil {
			b.Fatal(err)
		}
	}
}
