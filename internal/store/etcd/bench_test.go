package etcd

import (
	"fmt"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdtest"
)

// BenchmarkAuthState is the warm bearer check's store read on etcd, for a
// user with two sessions: the watch-fed cache, no round trip. The bolt
// package's BenchmarkAuthState is the same read on a bbolt file; make
// bench runs both.
func BenchmarkAuthState(b *testing.B) {
	endpoints := etcdtest.Start(b)
	s, err := Open(b.Context(), Options{Endpoints: endpoints, Prefix: freshPrefix()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := b.Context()
	u := &store.User{Username: "alice", PasswordHash: "x", AllowedScopes: []string{"api:read"}}
	if err := s.CreateUser(ctx, u); err != nil {
		b.Fatal(err)
	}
	for i := range 2 {
		x := &store.Session{UserID: u.ID, Scopes: []string{"api:read"}, ExpiresAt: time.Now().Add(time.Hour), UserAgent: fmt.Sprint(i)}
		if _, err := s.CreateSession(ctx, x, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.AuthState(ctx, u.ID); err != nil {
			b.Fatal(err)
		}
	}
}
