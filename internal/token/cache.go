package token

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// verifiedCache remembers access tokens that verified, so that a token seen
// again skips the signature check and JSON parsing.
//
// Why caching is safe: an entry is keyed by the whole token string (a token
// that differs in any byte, a tampered one with a cached prefix included, is
// a miss and is verified in full), only tokens that passed every check are
// stored, and every hit re-checks exp (and nbf/iat) against the Manager's
// clock with the parser's leeway, so an entry never outlives its token.
// Revocation is not this package's concern: the caller compares the
// token_version of the returned Claims with the user's current epoch in the
// store on every request, cached or not, so a revoked token is refused
// exactly as fast as without a cache.
//
// Lookup: the token is hashed once with maphash (seeded per Manager). The
// top bits pick the shard and the hash is the key of the shard's index; the
// slot it points to holds a copy of the whole token, which must equal the
// presented one for a hit. Two tokens with the same 64-bit hash simply
// displace each other.
//
// Bound and eviction: the cache is split into a power-of-two number of
// shards (at most 32), each with a fixed number of slots, so it never holds
// more than Config.CacheSize entries.
// A full shard evicts with CLOCK (second chance): a hit sets the slot's
// reference bit, the hand clears set bits and evicts the first slot whose
// bit is clear or whose token has expired.
//
// Concurrency: one RWMutex per shard. A hit takes only the read lock (the
// reference bit is an atomic, written only when it is not yet set); inserts
// take the write lock of one shard.
//
// Memory: an entry holds a private copy of the token (about 400 bytes for
// ours) plus the Claims, some 670 bytes in all (measured); at the default
// 16384 entries (DefaultCacheSize) that is about 11 MB, reached only with
// that many live distinct tokens, plus the slot arrays and index reserved
// by New (untouched zero pages until used).
type verifiedCache struct {
	seed   maphash.Seed
	shift  uint // 64 - log2(len(shards))
	shards []cacheShard
}

type cacheShard struct {
	mu    sync.RWMutex
	index map[uint64]int32 // maphash of the token -> slot
	slots []cacheSlot      // len grows up to cap, then CLOCK reuses slots
	hand  int
	limit int      // cap(slots), immutable: readable without the lock
	_     [64]byte // keep neighbouring shards' locks off one cache line
}

type cacheSlot struct {
	key  string
	hash uint64
	ent  cacheEntry
	ref  atomic.Bool
}

// cacheEntry is what a hit needs: the immutable claims and the window in
// which the token is valid, leeway already applied, with the same bounds as
// golang-jwt's validator: valid iff notBefore <= now < notAfter.
type cacheEntry struct {
	claims    *Claims
	notBefore time.Time // max(nbf, iat) - leeway
	notAfter  time.Time // exp + leeway
}

const maxCacheShards = 32

func newVerifiedCache(size int) *verifiedCache {
	n, bits := 1, uint(0)
	for n*2 <= maxCacheShards && n*2 <= size {
		n *= 2
		bits++
	}
	per := size / n
	c := &verifiedCache{
		seed:   maphash.MakeSeed(),
		shift:  64 - bits,
		shards: make([]cacheShard, n),
	}
	for i := range c.shards {
		// The slot array is allocated once at its final size; large
		// allocations come as zero pages, so memory is touched only as
		// entries arrive.
		c.shards[i].slots = make([]cacheSlot, 0, per)
		c.shards[i].limit = per
		c.shards[i].index = make(map[uint64]int32, per)
	}
	return c
}

func (c *verifiedCache) locate(tok string) (*cacheShard, uint64) {
	h := maphash.String(c.seed, tok)
	// A shift by 64 (one shard) gives 0 in Go.
	return &c.shards[h>>c.shift], h
}

// get returns the cached entry for tok. ok is false on a miss.
func (c *verifiedCache) get(tok string) (ent cacheEntry, ok bool) {
	s, h := c.locate(tok)
	s.mu.RLock()
	i, ok := s.index[h]
	if ok {
		sl := &s.slots[i]
		if ok = sl.key == tok; ok {
			ent = sl.ent
			if !sl.ref.Load() {
				sl.ref.Store(true)
			}
		}
	}
	s.mu.RUnlock()
	return ent, ok
}

// put stores ent for tok. now is used to prefer evicting expired entries.
func (c *verifiedCache) put(tok string, ent cacheEntry, now time.Time) {
	s, h := c.locate(tok)
	if s.limit == 0 {
		return
	}
	key := strings.Clone(tok) // do not pin the caller's (larger) string
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.index[h]; ok {
		// The same token verified concurrently by another request, or
		// (rarely) another token with the same hash: either way the
		// slot now holds this one.
		sl := &s.slots[i]
		sl.key = key
		sl.hash = h
		sl.ent = ent
		return
	}
	var i int
	if n := len(s.slots); n < cap(s.slots) {
		i = n
		s.slots = s.slots[:n+1]
	} else {
		// CLOCK. Ends within one sweep: every bit it passes is cleared.
		for {
			sl := &s.slots[s.hand]
			if sl.ref.Load() && now.Before(sl.ent.notAfter) {
				sl.ref.Store(false)
				s.hand = (s.hand + 1) % n
				continue
			}
			break
		}
		i = s.hand
		s.hand = (s.hand + 1) % n
		delete(s.index, s.slots[i].hash)
	}
	sl := &s.slots[i]
	sl.key = key
	sl.hash = h
	sl.ent = ent
	sl.ref.Store(false)
	s.index[h] = int32(i)
}

// len returns the number of entries (for tests).
func (c *verifiedCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.index)
		s.mu.RUnlock()
	}
	return n
}

// capacity returns the bound on len.
func (c *verifiedCache) capacity() int {
	n := 0
	for i := range c.shards {
		n += c.shards[i].limit
	}
	return n
}
