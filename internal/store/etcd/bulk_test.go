package etcd

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdtest"
)

// TestLoadEmpty: what LoadEmpty writes, several transactions at once, a
// store opened on the prefix reads exactly as if CreateUsers and
// CreateSession had written it (users by name, auth state with its
// sessions, every session field, secrets, hash classes); a second load
// into the now filled prefix is refused and changes nothing.
func TestLoadEmpty(t *testing.T) {
	endpoints := etcdtest.Start(t)
	prefix := freshPrefix()
	h, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := h.Hash("pw")
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	d := &store.Dump{Secrets: map[string][]byte{"hs256": []byte("0123456789abcdef0123456789abcdef")}}
	// More users and sessions than one transaction holds, so that the
	// chunks and the parallel writers are exercised.
	for i := range 3*64 + 5 {
		u := &store.User{ID: store.NewID(), Username: fmt.Sprintf("User%04d", i), PasswordHash: hash,
			TokenVersion: uint64(i % 3), AllowedScopes: []string{"api:read"}}
		d.Users = append(d.Users, u)
		for g := range 1 + i%2 {
			d.Sessions = append(d.Sessions, &store.Session{ID: store.NewSessionID(), UserID: u.ID,
				Scopes: []string{"api:read"}, Generation: uint64(g + 1), ExpiresAt: exp, UserAgent: "t", Address: "127.0.0.1"})
		}
	}
	o := Options{Endpoints: endpoints, Prefix: prefix}
	if err := LoadEmpty(t.Context(), o, d, LoadOptions{Parallel: 4}); err != nil {
		t.Fatal(err)
	}

	s := open(t, endpoints, prefix)
	ctx := t.Context()
	for i, u := range d.Users {
		got, err := s.GetUserByName(ctx, u.Username)
		if err != nil {
			t.Fatalf("user %d: %v", i, err)
		}
		if got.ID != u.ID || got.PasswordHash != u.PasswordHash || got.TokenVersion != u.TokenVersion ||
			!slices.Equal(got.AllowedScopes, u.AllowedScopes) || got.CreatedAt.IsZero() {
			t.Fatalf("user %d read back as %+v, want %+v", i, got, u)
		}
		st, err := s.AuthState(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Sessions) != 1+i%2 || st.TokenVersion != u.TokenVersion {
			t.Fatalf("auth state of user %d: %+v", i, st)
		}
	}
	for _, x := range d.Sessions {
		got, err := s.GetSession(ctx, x.UserID, x.ID)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := store.PrepareSession(x, got.CreatedAt)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("session read back as %+v, want %+v", got, want)
		}
	}
	secrets, err := s.Secrets(ctx)
	if err != nil || !reflect.DeepEqual(secrets, d.Secrets) {
		t.Errorf("secrets %v, %v; want those loaded", secrets, err)
	}
	if cs, err := s.HashClasses(ctx); err != nil || !slices.Contains(cs, password.Class(hash)) {
		t.Errorf("hash classes %v, %v; want %s", cs, err, password.Class(hash))
	}
	// The users behave as any others: a revocation goes through.
	if _, err := store.Revoke(ctx, s, d.Users[0].ID); err != nil {
		t.Fatal(err)
	}

	// Not empty any more: refused, and nothing written.
	before := countKeys(t, endpoints, prefix)
	again := &store.Dump{Users: []*store.User{{ID: store.NewID(), Username: "other", PasswordHash: hash}}}
	if err := LoadEmpty(ctx, o, again, LoadOptions{}); err == nil {
		t.Fatal("LoadEmpty into a filled prefix succeeded")
	}
	if after := countKeys(t, endpoints, prefix); after != before {
		t.Errorf("a refused load changed the prefix: %d keys, then %d", before, after)
	}
}

// TestLoadEmptyRefusesBadDumps: a dump that CreateUsers or CreateSession
// would refuse is refused before anything is written.
func TestLoadEmptyRefusesBadDumps(t *testing.T) {
	endpoints := etcdtest.Start(t)
	exp := time.Now().Add(time.Hour)
	a := &store.User{ID: store.NewID(), Username: "alice"}
	for name, tc := range map[string]struct {
		d    *store.Dump
		want error
	}{
		"same name once normalized": {&store.Dump{Users: []*store.User{a, {ID: store.NewID(), Username: "ALICE"}}}, store.ErrExists},
		"same id":                   {&store.Dump{Users: []*store.User{a, {ID: a.ID, Username: "bob"}}}, store.ErrExists},
		"user without id":           {&store.Dump{Users: []*store.User{{Username: "bob"}}}, nil},
		"session of an unknown user": {&store.Dump{Users: []*store.User{a},
			Sessions: []*store.Session{{ID: store.NewSessionID(), UserID: store.NewID(), ExpiresAt: exp}}}, store.ErrNotFound},
		"session without id": {&store.Dump{Users: []*store.User{a},
			Sessions: []*store.Session{{UserID: a.ID, ExpiresAt: exp}}}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			prefix := freshPrefix()
			err := LoadEmpty(t.Context(), Options{Endpoints: endpoints, Prefix: prefix}, tc.d, LoadOptions{})
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("LoadEmpty = %v, want an error (%v)", err, tc.want)
			}
			if n := countKeys(t, endpoints, prefix); n != 0 {
				t.Errorf("%d keys written by a refused load", n)
			}
		})
	}
}

func countKeys(t *testing.T, endpoints []string, prefix string) int64 {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// TestKeysHolding: after a timed-out batch, the keys are read back to
// tell a batch that committed (every key with its value) from one that
// did not (none) and from a clash (some, or another value).
func TestKeysHolding(t *testing.T) {
	endpoints := etcdtest.Start(t)
	prefix := freshPrefix()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := t.Context()
	kvs := []bulkKV{{prefix + "a", "1"}, {prefix + "b", "2"}, {prefix + "c", "3"}}
	if n, err := keysHolding(ctx, cli, kvs); n != 0 || err != nil {
		t.Errorf("none written: %d, %v; want 0, nil", n, err)
	}
	if _, err := cli.Put(ctx, prefix+"b", "2"); err != nil {
		t.Fatal(err)
	}
	if n, err := keysHolding(ctx, cli, kvs); n != 1 || err != nil {
		t.Errorf("one written: %d, %v; want 1, nil", n, err)
	}
	if err := createAll(ctx, cli, kvs); !errors.Is(err, store.ErrExists) {
		t.Errorf("createAll over an existing key: %v, want ErrExists", err)
	}
	if _, err := cli.Put(ctx, prefix+"a", "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, prefix+"c", "3"); err != nil {
		t.Fatal(err)
	}
	if n, err := keysHolding(ctx, cli, kvs); n != 3 || err != nil {
		t.Errorf("all written: %d, %v; want 3, nil", n, err)
	}
	if _, err := cli.Put(ctx, prefix+"c", "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := keysHolding(ctx, cli, kvs); !errors.Is(err, store.ErrExists) {
		t.Errorf("a key with another value: %v, want ErrExists", err)
	}
}

// TestCacheLoadPages: the first load of the auth cache reads 12000 users
// and their sessions in two pages each. With pages of a thousand keys it
// took twelve and thirteen reads, and on etcd 3.4, which walks a range to
// its end before applying the limit, a million users then took minutes.
func TestCacheLoadPages(t *testing.T) {
	endpoints := etcdtest.Start(t)
	prefix := freshPrefix()
	d := &store.Dump{}
	exp := time.Now().Add(time.Hour)
	for i := range 12000 {
		u := &store.User{ID: store.NewID(), Username: fmt.Sprintf("u%05d", i), PasswordHash: "x"}
		d.Users = append(d.Users, u)
		d.Sessions = append(d.Sessions, &store.Session{ID: store.NewSessionID(), UserID: u.ID, ExpiresAt: exp})
	}
	if err := LoadEmpty(t.Context(), Options{Endpoints: endpoints, Prefix: prefix}, d, LoadOptions{Parallel: 8}); err != nil {
		t.Fatal(err)
	}
	s := open(t, endpoints, prefix)
	if n := s.pages.Load(); n != 4 {
		t.Errorf("the cache load read %d pages, want 4 (2 of users, 2 of sessions)", n)
	}
	if st, err := s.AuthState(t.Context(), d.Users[11999].ID); err != nil || len(st.Sessions) != 1 {
		t.Errorf("the last user: %+v, %v", st, err)
	}
}
