package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdtest"
	"github.com/crudauth/caddy-crudauth/internal/store/storetest"
	"github.com/crudauth/caddy-crudauth/internal/token"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

const migratePassword = "correct horse battery staple"

var (
	migrateHasherOnce sync.Once
	migrateHasher     *password.Hasher
	migrateHash       string
)

func testHasher(t *testing.T) (*password.Hasher, string) {
	t.Helper()
	migrateHasherOnce.Do(func() {
		var err error
		if migrateHasher, err = password.NewHasher(password.DefaultParams); err != nil {
			panic(err)
		}
		if migrateHash, err = migrateHasher.Hash(migratePassword); err != nil {
			panic(err)
		}
	})
	return migrateHasher, migrateHash
}

var etcdPrefixes atomic.Int64

// etcdURL is a store URL on endpoints (the members' client URLs) with a
// prefix of its own.
func etcdURL(endpoints []string) string {
	var hosts []string
	for _, ep := range endpoints {
		hosts = append(hosts, strings.TrimPrefix(ep, "http://"))
	}
	return fmt.Sprintf("etcd://%s/migrate%d-%d/", strings.Join(hosts, ","), time.Now().UnixNano(), etcdPrefixes.Add(1))
}

// gateway is what a gateway builds over a store: the token manager keyed
// with the store's signing secret ("hs256", as the Caddy module names it),
// and the auth service.
func gateway(t *testing.T, st store.Store) *auth.Service {
	t.Helper()
	h, _ := testHasher(t)
	key, err := st.Secret(t.Context(), "hs256", func() ([]byte, error) {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return b, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := token.New(token.Config{Key: key, Issuer: "test", Audience: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return auth.New(auth.Config{
		Store: st, Tokens: mgr, Hasher: h, HashLimit: password.NewLimiter(2, time.Minute),
		Policy: password.DefaultPolicy, Defaults: scope.Set{"read"}, Ceiling: scope.Set{"read", "write"},
		Sessions: auth.SessionPolicy{Rotate: true, ReuseGrace: 10 * time.Second, Max: auth.DefaultMaxSessions},
	})
}

// migrateFixture fills a new bolt file: alice logs in and refreshes once
// (her session is at generation 2) and keeps the tokens; bob is disabled,
// may hold no scope, and has a session at generation 7; carol has no
// per-user limit and was revoked twice; dave was deleted. The key set
// holds a retired ES256 key and an EdDSA key that signs from an hour on.
// It returns the path and alice's tokens.
func migrateFixture(t *testing.T) (string, *auth.Tokens) {
	t.Helper()
	ctx := t.Context()
	_, hash := testHasher(t)
	path := filepath.Join(t.TempDir(), "source.db")
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, u := range []*store.User{
		{Username: "alice", PasswordHash: hash, AllowedScopes: []string{"read", "write"}},
		{Username: "Bob", PasswordHash: hash, Disabled: true, AllowedScopes: []string{}},
		{Username: "carol", PasswordHash: "$2a$10$abcdefghijklmnopqrstuuP4vVQK0pn1nL4GB7lQUm/6hIS8D0lMK"},
		{Username: "dave", PasswordHash: hash},
	} {
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		switch u.Username {
		case "carol":
			for range 2 {
				if _, err := store.Revoke(ctx, st, u.ID); err != nil {
					t.Fatal(err)
				}
			}
		case "dave":
			if err := st.DeleteUser(ctx, u.ID); err != nil {
				t.Fatal(err)
			}
		case "Bob":
			now := time.Now().UTC()
			if _, err := st.CreateSession(ctx, &store.Session{UserID: u.ID, Scopes: []string{}, Generation: 7,
				RotatedAt: now.Add(-time.Minute), CreatedAt: now.Add(-time.Hour), LastUsedAt: now.Add(-time.Minute),
				ExpiresAt: now.Add(time.Hour), UserAgent: "bob's phone", Address: "2001:db8::7"}, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	gw := gateway(t, st)
	cl := auth.Client{IP: "192.0.2.1", UserAgent: "migrate-test"}
	first, err := gw.Login(ctx, "alice", migratePassword, scope.Set{"read", "write"}, cl)
	if err != nil {
		t.Fatal(err)
	}
	second, err := gw.Refresh(ctx, first.Refresh, nil, cl)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := st.GetSession(ctx, second.UserID, second.SessionID); err != nil || s.Generation != 2 {
		t.Fatalf("alice's session after one refresh: %+v, %v", s, err)
	}
	old, next := storetest.NewSigningKey(t, store.AlgES256, time.Now().Add(-time.Hour)), storetest.NewSigningKey(t, store.AlgEdDSA, time.Now())
	old.RetiredAt = time.Now().UTC().Truncate(time.Microsecond)
	next.SignFrom = next.CreatedAt.Add(time.Hour)
	if _, err := st.UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
		ks.Keys = append(ks.Keys, old, next)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return path, second
}

// readAll reads a store's content for comparison, from its own handle.
func readAll(t *testing.T, env *Env, where string) *store.Dump {
	t.Helper()
	var st store.Store
	var err error
	if etcd.IsURL(where) {
		st, _, err = env.openEtcd(t.Context(), where)
	} else {
		st, err = bolt.Open(where, bolt.Options{})
	}
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := dumpOf(t.Context(), st, time.Now().UTC())
	if err != nil {
		t.Fatal(err)
	}
	return canonical(d)
}

// checkTokens: alice's tokens, issued against the source before the
// migration, work against the copy: the access token authenticates, and
// the refresh token rotates her session (its generation came along).
func checkTokens(t *testing.T, env *Env, where string, toks *auth.Tokens) {
	t.Helper()
	var st store.Store
	var err error
	if etcd.IsURL(where) {
		st, _, err = env.openEtcd(t.Context(), where)
	} else {
		st, err = bolt.Open(where, bolt.Options{})
	}
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	before, err := st.Secrets(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	gw := gateway(t, st)
	p, err := gw.Authenticate(t.Context(), toks.Access)
	if err != nil || p.Username != "alice" || p.SessionID != toks.SessionID {
		t.Fatalf("%s: alice's access token from before the migration: %+v, %v", where, p, err)
	}
	if after, _ := st.Secrets(t.Context()); !reflect.DeepEqual(before, after) || len(after) != 1 {
		t.Fatalf("%s: the gateway generated a secret of its own", where)
	}
	// Refresh on a copy of the copy: rotating writes, and the round trip
	// below must start from the state migrated.
	if _, err := gw.Refresh(t.Context(), toks.Refresh, nil, auth.Client{IP: "192.0.2.1"}); err != nil {
		t.Fatalf("%s: alice's refresh token from before the migration: %v", where, err)
	}
}

// TestMigrateRoundTrip: bolt -> etcd -> bolt copies every user, session
// (generation included) and secret exactly; tokens from before each step
// work after it; a target that is not empty is refused.
func TestMigrateRoundTrip(t *testing.T) {
	endpoints := etcdtest.Start(t)
	src, toks := migrateFixture(t)
	want := readAll(t, &Env{}, src)
	if len(want.Users) != 3 || len(want.Sessions) != 2 || len(want.Secrets) != 1 || len(want.Keys) != 2 {
		t.Fatalf("fixture: %s", counts(want))
	}

	var out bytes.Buffer
	env := &Env{Stdout: &out}
	url := etcdURL(endpoints)
	if err := env.Migrate(src, url); err != nil {
		t.Fatalf("bolt -> etcd: %v", err)
	}
	for _, s := range []string{"copied 3 users, 2 sessions, 1 secret and 2 signing keys from " + src, "verified: ", "sha256 "} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output does not say %q:\n%s", s, out.String())
		}
	}
	if diff := compareDumps(want, readAll(t, env, url)); diff != "" {
		t.Fatalf("etcd copy: %s", diff)
	}

	back := filepath.Join(t.TempDir(), "back.db")
	out.Reset()
	if err := env.Migrate(url, back); err != nil {
		t.Fatalf("etcd -> bolt: %v", err)
	}
	if diff := compareDumps(want, readAll(t, env, back)); diff != "" {
		t.Fatalf("bolt copy of the etcd copy: %s", diff)
	}
	if fi, err := os.Stat(back); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the new file: %v, %v (want mode 0600: it holds the signing secret)", fi.Mode(), err)
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(back), ".crudauth-migrate-*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}

	// Now that the copies are compared, use the tokens on them (a refresh
	// writes).
	checkTokens(t, env, url, toks)
	checkTokens(t, env, back, toks)

	// Not into a store that holds users, whichever side it is.
	for _, target := range []string{url, back} {
		err := env.Migrate(src, target)
		if err == nil || !strings.Contains(err.Error(), "already holds 3 users, 1 secret and 2 signing keys: nothing copied") {
			t.Errorf("into the non-empty %s: %v", target, err)
		}
	}
	// Nor into one where a gateway started and generated its secret.
	fresh := etcdURL(endpoints)
	st, _, err := env.openEtcd(t.Context(), fresh)
	if err != nil {
		t.Fatal(err)
	}
	gateway(t, st)
	st.Close()
	err = env.Migrate(src, fresh)
	if err == nil || !strings.Contains(err.Error(), "generated its signing secret") {
		t.Errorf("into a prefix a gateway started on: %v", err)
	}
	if d := readAll(t, env, fresh); len(d.Users) != 0 {
		t.Errorf("users copied into a refused target: %d", len(d.Users))
	}
	// Nor into one where a gateway on an asymmetric algorithm created its
	// first key, and no secret.
	keyed := etcdURL(endpoints)
	if st, _, err = env.openEtcd(t.Context(), keyed); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		ks.Keys = append(ks.Keys, storetest.NewSigningKey(t, store.AlgEdDSA, time.Now()))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	err = env.Migrate(src, keyed)
	if err == nil || !strings.Contains(err.Error(), "already holds 0 users, 0 secrets and 1 signing key") ||
		!strings.Contains(err.Error(), "generated its signing secret or key") {
		t.Errorf("into a prefix where a gateway created a key: %v", err)
	}
	if d := readAll(t, env, keyed); len(d.Users) != 0 || len(d.Keys) != 1 {
		t.Errorf("copied into a refused target: %s", counts(d))
	}
}

// TestMigrateRefusals: a source a running caddy holds, a missing or empty
// source, the same store on both sides, a malformed URL.
func TestMigrateRefusals(t *testing.T) {
	src, _ := migrateFixture(t)
	env := &Env{Stdout: &bytes.Buffer{}, LockWait: 100 * time.Millisecond}
	dir := t.TempDir()

	held, err := bolt.Open(src, bolt.Options{}) // as a running caddy holds it
	if err != nil {
		t.Fatal(err)
	}
	err = env.Migrate(src, filepath.Join(dir, "a.db"))
	held.Close()
	if err == nil || !strings.Contains(err.Error(), "stop caddy") || !strings.Contains(err.Error(), "admin API's backup") {
		t.Errorf("a held source: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.db")); err == nil {
		t.Error("a target file was created for a refused migration")
	}

	empty := filepath.Join(dir, "empty.db")
	if st, err := bolt.Open(empty, bolt.Options{}); err != nil {
		t.Fatal(err)
	} else {
		st.Close()
	}
	for _, tc := range []struct{ from, to, want string }{
		{filepath.Join(dir, "missing.db"), filepath.Join(dir, "b.db"), "no such file"},
		{empty, filepath.Join(dir, "b.db"), "holds no users"},
		{src, src, "same store"},
		{"", filepath.Join(dir, "b.db"), "--from is required"},
		{src, "", "--to is required"},
		{src, "etcd://root:hunter2@127.0.0.1:2379/x/", "CRUDAUTH_ETCD_PASSWORD"},
		{src, "etcd://127.0.0.1:2379/", "root prefix"},
	} {
		err := env.Migrate(tc.from, tc.to)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q -> %q: %v, want %q", tc.from, tc.to, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error repeats the password: %v", err)
		}
	}
}

// TestMigrateDialTimeout: the URL's dial_timeout bounds how long an
// unreachable cluster keeps the migration waiting (the default is 2s).
func TestMigrateDialTimeout(t *testing.T) {
	src, _ := migrateFixture(t)
	env := &Env{Stdout: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	start := time.Now()
	err := env.Migrate(src, "etcd://127.0.0.1:1/crudauth/?dial_timeout=100ms")
	if took := time.Since(start); err == nil || !strings.Contains(err.Error(), "did not answer") || took > 1500*time.Millisecond {
		t.Errorf("into an unreachable cluster: %v after %v (dial_timeout 100ms)", err, took)
	}
}

// TestVerifyFindsDifferences: the check after the copy notices a session
// whose generation did not come along, a user's token version, a secret,
// a missing session; and the digest moves with any of them.
func TestVerifyFindsDifferences(t *testing.T) {
	now := time.Now().UTC()
	base := &store.Dump{
		Users: []*store.User{{ID: "u1", Username: "alice", PasswordHash: "h", TokenVersion: 3, CreatedAt: now}},
		Sessions: []*store.Session{{ID: "s1", UserID: "u1", Generation: 4, ExpiresAt: now.Add(time.Hour)},
			{ID: "s2", UserID: "u1", Generation: 1, ExpiresAt: now.Add(time.Hour)}},
		Secrets: map[string][]byte{"hs256": []byte("0123456789abcdef0123456789abcdef")},
		Keys: []store.SigningKey{
			{ID: "k2", Alg: store.AlgEdDSA, Private: []byte("der 2"), CreatedAt: now, SignFrom: now.Add(time.Hour)},
			{ID: "k1", Alg: store.AlgES256, Private: []byte("der 1"), CreatedAt: now.Add(-time.Hour), SignFrom: now.Add(-time.Hour), RetiredAt: now},
		},
	}
	clone := func() *store.Dump {
		c := canonical(base) // the keys are copies
		c.Secrets = map[string][]byte{"hs256": bytes.Clone(base.Secrets["hs256"])}
		return c
	}
	want := canonical(base)
	sum, _ := digest(want)
	if diff := compareDumps(want, clone()); diff != "" {
		t.Fatalf("equal dumps differ: %s", diff)
	}
	// The same times in another zone are the same instants.
	inZone := clone()
	inZone.Users[0].CreatedAt = now.In(time.FixedZone("X", 3600))
	if diff := compareDumps(want, canonical(inZone)); diff != "" {
		t.Errorf("a time zone counts as a difference: %s", diff)
	}
	for name, mod := range map[string]func(d *store.Dump){
		"generation":    func(d *store.Dump) { d.Sessions[0].Generation = 1 },
		"token version": func(d *store.Dump) { d.Users[0].TokenVersion = 0 },
		"scopes nil/[]": func(d *store.Dump) { d.Users[0].AllowedScopes = []string{} },
		"secret":        func(d *store.Dump) { d.Secrets["hs256"][0] ^= 1 },
		"session gone":  func(d *store.Dump) { d.Sessions = d.Sessions[:1] },
		"expiry":        func(d *store.Dump) { d.Sessions[1].ExpiresAt = d.Sessions[1].ExpiresAt.Add(time.Nanosecond) },
		"key gone":      func(d *store.Dump) { d.Keys = d.Keys[1:] },
		"key private":   func(d *store.Dump) { d.Keys[0].Private[0] ^= 1 },
		// Canonical order: k1 (ES256, retired), then k2 (EdDSA).
		"key retired":   func(d *store.Dump) { d.Keys[1].RetiredAt = now },
		"retired later": func(d *store.Dump) { d.Keys[0].RetiredAt = d.Keys[0].RetiredAt.Add(time.Nanosecond) },
		"key unretired": func(d *store.Dump) { d.Keys[0].RetiredAt = time.Time{} },
		"key sign_from": func(d *store.Dump) { d.Keys[1].SignFrom = d.Keys[1].SignFrom.Add(time.Second) },
		"key alg":       func(d *store.Dump) { d.Keys[1].Alg = store.AlgES256 },
	} {
		d := clone()
		mod(d)
		if diff := compareDumps(want, canonical(d)); diff == "" {
			t.Errorf("%s: no difference found", name)
		}
		if s, _ := digest(canonical(d)); s == sum {
			t.Errorf("%s: same digest", name)
		}
	}
}

// TestStoreFlag runs the user and session commands with --store on an
// etcd member: what they write is in etcd, and the flag excludes the
// others.
func TestStoreFlag(t *testing.T) {
	endpoints := etcdtest.Start(t)
	url := etcdURL(endpoints)
	h, _ := testHasher(t)
	var out, errOut bytes.Buffer
	newEnv := func(stdin string) *Env {
		out.Reset()
		return &Env{Store: url, Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut, Verbose: true,
			PasswordStdin: true, Getenv: func(string) string { return "" },
			Settings: func() (users.Settings, error) { return users.Settings{Hasher: h}, nil }}
	}
	run := func(env *Env, fn func(ctx context.Context, ops Ops) error) string {
		t.Helper()
		if err := env.WithOps(fn); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}

	env := newEnv(migratePassword + "\n")
	if got := run(env, func(ctx context.Context, ops Ops) error { return env.AddUser(ctx, ops, "alice", "", false) }); !strings.Contains(got, "added user alice") {
		t.Errorf("add: %q", got)
	}
	if !strings.Contains(errOut.String(), "using the etcd store "+url+" directly") {
		t.Errorf("--verbose does not say the store: %q", errOut.String())
	}

	// A gateway on the same prefix logs alice in: her session is in etcd.
	st, _, err := env.openEtcd(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	gw := gateway(t, st)
	toks, err := gw.Login(t.Context(), "alice", migratePassword, nil, auth.Client{IP: "192.0.2.1", UserAgent: "curl/8"})
	if err != nil {
		t.Fatal(err)
	}

	env = newEnv("")
	if got := run(env, env.List); !strings.Contains(got, "alice") || !strings.Contains(got, "enabled") {
		t.Errorf("list: %q", got)
	}
	env = newEnv("")
	if got := run(env, func(ctx context.Context, ops Ops) error { return env.ListSessions(ctx, ops, "alice") }); !strings.Contains(got, toks.SessionID) || !strings.Contains(got, "curl/8") {
		t.Errorf("session list: %q", got)
	}
	env = newEnv("")
	if got := run(env, func(ctx context.Context, ops Ops) error { return env.Change(ctx, ops, Mutations[0], "alice") }); !strings.Contains(got, "alice: tokens revoked (token_version 1)") {
		t.Errorf("revoke: %q", got)
	}
	// The gateway's handle refuses the token from now on: the revocation
	// went into etcd, not into a copy of its own.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := gw.Authenticate(t.Context(), toks.Access)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway still honours the token the CLI revoked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	env = newEnv("")
	if got := run(env, func(ctx context.Context, ops Ops) error { return env.ListSessions(ctx, ops, "alice") }); !strings.Contains(got, "no sessions for user alice") {
		t.Errorf("session list after revoke: %q", got)
	}

	// The backup of an etcd store is the export.
	dest := filepath.Join(t.TempDir(), "b.jsonl")
	env = newEnv("")
	if err := env.Backup(dest, "export", false); err != nil || !strings.Contains(out.String(), "backup of 1 users") {
		t.Errorf("backup: %v, %q", err, out.String())
	}
	env = newEnv("")
	if err := env.Backup(dest+".bolt", "bolt", false); err == nil || !strings.Contains(err.Error(), "no file to snapshot") {
		t.Errorf("bolt backup of etcd: %v", err)
	}

	for _, tc := range []struct {
		mod  func(*Env)
		want string
	}{
		{func(e *Env) { e.DB = "x.db" }, "--store or --db, not both"},
		{func(e *Env) { e.Address = "localhost:2019" }, "--address"},
		{func(e *Env) { e.Realm = "main" }, "--realm"},
		{func(e *Env) { e.Store = "/var/lib/crudauth.db" }, "--store takes an etcd store URL"},
		{func(e *Env) { e.Store = "etcd://u:hunter2@h:2379/p/" }, "CRUDAUTH_ETCD_USERNAME"},
		{func(e *Env) {
			e.Getenv = func(k string) string { return map[string]string{EnvEtcdPassword: "hunter2"}[k] }
		}, "CRUDAUTH_ETCD_PASSWORD is set but CRUDAUTH_ETCD_USERNAME is not"},
	} {
		env := newEnv("")
		tc.mod(env)
		err := env.WithOps(env.List)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want %q", err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error repeats the password: %v", err)
		}
	}
}
