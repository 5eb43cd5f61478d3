package etcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdtest"
	"github.com/crudauth/caddy-crudauth/internal/store/storetest"
)

var prefixes atomic.Int64

// freshPrefix gives every test its own keys on a shared member.
func freshPrefix() string {
	return fmt.Sprintf("/test%d-%d/", time.Now().UnixNano(), prefixes.Add(1))
}

func open(t *testing.T, endpoints []string, prefix string, mod ...func(*Options)) *Store {
	t.Helper()
	o := Options{Endpoints: endpoints, Prefix: prefix, DialTimeout: 2 * time.Second}
	for _, m := range mod {
		m(&o)
	}
	s, err := Open(t.Context(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	endpoints := etcdtest.Start(t)
	storetest.Run(t, storetest.Backend{
		Concurrent: true,
		// The bound a revocation must meet across gateways (at p99).
		Propagation: 100 * time.Millisecond,
		New: func(t *testing.T) func() (store.Store, error) {
			prefix := freshPrefix()
			return func() (store.Store, error) {
				return Open(context.Background(), Options{Endpoints: endpoints, Prefix: prefix})
			}
		},
		ReadersYield: true,
	})
}

// TestOpenUnreachableFailsFast: Open on a cluster that does not answer
// fails with ErrUnavailable within about DialTimeout, without a deadline
// from the caller (the gateway gives none, so that a large first load may
// take its time): the long bound of a range read does not apply before
// the cluster has answered once.
func TestOpenUnreachableFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	start := time.Now()
	s, err := Open(context.Background(), Options{Endpoints: []string{addr}, DialTimeout: 500 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded on a closed port")
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Open: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open took %v to fail (DialTimeout 500ms)", d)
	}
}
