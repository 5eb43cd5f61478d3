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
// Admission: a token enters the cache the second time it verifies, not the
// first. A doorkeeper (a fixed bitset of token hashes, cleared whenever it
// has taken in as many tokens as the cache holds) remembers the first
// sighting. Clients use a token for many requests, so their tokens are
// cached from the second request on; a stream of tokens each used once
// (a crowd of clients each sending one request) neither pays for an
// insert nor flushes the tokens that are in use. A bit set by a hash
// collision only admits a token early, which costs nothing but the insert.
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
	door   doorkeeper
}

// doorkeeper is a Bloom filter of the hashes of tokens seen once: two bits
// per token, taken from the low and the middle bits of the hash (the shard
// takes the high ones). It has at least 32 bits per cache entry (1024 at
// least) and is cleared after taking in one token per 32 bits (so at least
// as many tokens as the cache holds): at most one bit in 16 is set, so a
// token seen for the first time is admitted at once with a chance of at
// most 1 in 256 (both its bits already set).
type doorkeeper struct {
	words []atomic.Uint64
	mask  uint64 // number of bits - 1
	added atomic.Int64
	limit int64
}

func newDoorkeeper(size int) doorkeeper {
	nbits := 1024
	for nbits < 32*size {
		nbits *= 2
	}
	return doorkeeper{
		words: make([]atomic.Uint64, nbits/64),
		mask:  uint64(nbits - 1),
		limit: int64(nbits / 32),
	}
}

// seenBefore records h and reports whether it was already recorded.
func (d *doorkeeper) seenBefore(h uint64) bool {
	i, j := h&d.mask, (h>>24)&d.mask
	wi, bi := &d.words[i>>6], uint64(1)<<(i&63)
	wj, bj := &d.words[j>>6], uint64(1)<<(j&63)
	if wi.Load()&bi != 0 && wj.Load()&bj != 0 {
		return true
	}
	wi.Or(bi)
	wj.Or(bj)
	if n := d.added.Add(1); n >= d.limit && d.added.CompareAndSwap(n, 0) {
		// Forget every first sighting. Racing setters may lose a bit or
		// keep one: either only moves an admission by one sighting.
		for j := range d.words {
			d.words[j].Store(0)
		}
	}
	return false
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
		door:   newDoorkeeper(size),
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
func (c *verifiedCache) get(tok string) (ent cacheEntry, h uint64, ok bool) {
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
	return ent, h, ok
}

// admit stores ent for tok if tok verified before (see Admission above).
// h is tok's hash, as get returned it on the miss.
func (c *verifiedCache) admit(h uint64, tok string, ent cacheEntry, now time.Time) {
	s := &c.shards[h>>c.shift]
	if s.limit == 0 || !c.door.seenBefore(h) {
		return
	}
	c.store(s, h, tok, ent, now)
}

// store puts ent for tok (hashed to h, in shard s) into the cache. now is
// used to prefer evicting expired entries.
func (c *verifiedCache) store(s *cacheShard, h uint64, tok string, ent cacheEntry, now time.Time) {
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
