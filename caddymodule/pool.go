package caddymodule

import (
	"fmt"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
)

// dbPool shares one open bbolt handle per file across every site and every
// config in this process. On `caddy reload` the new config is provisioned
// before the old one is cleaned up; bbolt locks its file exclusively, so a
// second Open of the same path would wait for the lock the old config holds.
// With the pool, the new config takes another reference to the same handle,
// and writes made through either config land in the same database.
var dbPool = caddy.NewUsagePool()

// sharedStore is what the pool holds.
type sharedStore struct {
	*bolt.Store
}

// Destruct closes the store when its last user lets go.
func (s sharedStore) Destruct() error { return s.Close() }

// acquireStore returns the shared store for path, opening it on first use,
// and the pool key to release it with. The key is returned only on success,
// so a failed Provision's Cleanup releases nothing it did not take.
func acquireStore(path string) (store.Store, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("db: %w", err)
	}
	val, _, err := dbPool.LoadOrNew(abs, func() (caddy.Destructor, error) {
		st, err := bolt.Open(abs, bolt.Options{})
		if err != nil {
			return nil, err
		}
		return sharedStore{st}, nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("db: %w", err)
	}
	return val.(sharedStore).Store, abs, nil
}

// openStores calls fn for every database open in this process, keyed by
// absolute path. The admin API and the CLI use it to find the running
// gateway's store.
func openStores(fn func(path string, st store.Store) bool) {
	dbPool.Range(func(key, value any) bool {
		return fn(key.(string), value.(sharedStore).Store)
	})
}
