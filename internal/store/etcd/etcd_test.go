package etcd

import (
	"context"
	"fmt"
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
