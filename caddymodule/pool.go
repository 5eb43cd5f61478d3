package caddymodule

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// storePool shares one open store per backing state (per storeKey) across
// every site and every config in this process. On `caddy reload` the new
// config is provisioned before the old one is cleaned up; bbolt locks its
// file exclusively, so a second Open of the same path would wait for the
// lock the old config holds, and a memory store would start empty. With
// the pool, the new config takes another reference to the same store, and
// writes made through either config land in the same place.
var storePool = caddy.NewUsagePool()

// Keys start with the backend's name, so that the admin API can tell a
// bbolt file (which it names by its path) from the rest.
const (
	boltKeyPrefix   = "bolt:"
	memoryKeyPrefix = "memory:"
)

// sharedStore is what the pool holds: the store, and the sweeper that
// removes its expired sessions while it is open.
type sharedStore struct {
	store.Store
	stopSweep context.CancelFunc
}

// Destruct stops the sweeper and closes the store when its last user lets
// go.
func (s sharedStore) Destruct() error {
	s.stopSweep()
	return s.Close()
}

// sessionSweepInterval is how often expired sessions are removed from an
// open store (CreateSession also removes a user's own at each login).
const sessionSweepInterval = 10 * time.Minute

// acquireStore returns the shared store of o, opening it on first use, and
// the pool key to release it with (releaseStore). The key is returned only
// on success, so a failed Provision's Cleanup releases nothing it did not
// take.
func acquireStore(o storeOpener) (store.Store, string, error) {
	key := o.storeKey()
	val, _, err := storePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		st, err := o.openStore()
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		go store.SweepSessionsEvery(ctx, st, sessionSweepInterval, func() *zap.Logger { return caddy.Log().Named("crudauth") })
		return sharedStore{Store: st, stopSweep: cancel}, nil
	})
	if err != nil {
		return nil, "", err
	}
	return val.(sharedStore).Store, key, nil
}

// acquireBolt is acquireStore of the bbolt file at path.
func acquireBolt(path string) (store.Store, string, error) {
	b := &BoltStore{Path: path}
	if err := b.resolve(); err != nil {
		return nil, "", err
	}
	return acquireStore(b)
}

// releaseStore drops a reference acquireStore returned; the last one
// closes the store.
func releaseStore(key string) error {
	_, err := storePool.Delete(key)
	return err
}

// openStores calls fn for every store open in this process, by key. The
// admin API uses it to find the running gateway's store.
func openStores(fn func(key string, st store.Store) bool) {
	storePool.Range(func(key, value any) bool {
		return fn(key.(string), value.(sharedStore).Store)
	})
}

// storeName is how the admin API and the logs name the store of key: a
// bbolt file by its absolute path (what ?db= has always taken), others by
// their key.
func storeName(key string) string {
	if p, ok := strings.CutPrefix(key, boltKeyPrefix); ok {
		return p
	}
	return key
}

// storeKeyOf is the inverse of storeName; ok is false when name is neither
// an absolute path nor the key of another backend.
func storeKeyOf(name string) (string, bool) {
	if filepath.IsAbs(name) {
		return boltKeyPrefix + filepath.Clean(name), true
	}
	if strings.HasPrefix(name, memoryKeyPrefix) || strings.HasPrefix(name, etcdKeyPrefix) {
		return name, true
	}
	return "", false
}
