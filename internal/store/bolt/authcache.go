package bolt

import (
	"sync"
	"sync/atomic"

	"github.com/maypok86/otter/v2"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// authCache is a bounded read-through cache of AuthState by user ID, an
// otter cache (W-TinyLFU: the users seen most often stay when it is full;
// eviction happens in otter's maintenance, never under a lock that readers
// or writers of the store wait on).
//
// Hits take no lock of ours. Every insertion and invalidation happens
// under mu, and every invalidation bumps gen. A reader that missed records
// gen before its read transaction and inserts only if gen is unchanged
// under mu, so a read that raced a write can never put back state older
// than that write.
type authCache struct {
	c *otter.Cache[string, store.AuthState] // nil: disabled

	mu  sync.Mutex
	gen atomic.Uint64
}

// init sets the bound; size <= 0 disables the cache.
func (c *authCache) init(size int) {
	if size > 0 {
		c.c = otter.Must(&otter.Options[string, store.AuthState]{MaximumSize: size})
	}
}

// get returns a copy of the cached state. Its AllowedScopes is shared.
func (c *authCache) get(id string) (store.AuthState, bool) {
	if c.c == nil {
		return store.AuthState{}, false
	}
	return c.c.GetIfPresent(id)
}

// generation returns the counter a missing reader records before reading.
func (c *authCache) generation() uint64 { return c.gen.Load() }

// fill caches st for id if no invalidation happened since gen was read.
func (c *authCache) fill(id string, gen uint64, st store.AuthState) {
	if c.c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != gen {
		return
	}
	c.c.Set(id, st)
}

// invalidate drops id and bumps the generation. Writers call it after their
// transaction committed and before they return.
func (c *authCache) invalidate(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
	if c.c != nil {
		c.c.Invalidate(id)
	}
}

// clear drops every entry.
func (c *authCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
	if c.c != nil {
		c.c.InvalidateAll()
	}
}

// size returns the number of cached entries once pending evictions are
// done.
func (c *authCache) size() int {
	if c.c == nil {
		return 0
	}
	c.c.CleanUp()
	return c.c.EstimatedSize()
}
