package token

import (
	"strings"
	"time"

	"github.com/maypok86/otter/v2"
)

// verifiedCache remembers access tokens that verified, so that a token seen
// again skips the signature check and JSON parsing.
//
// Why caching is safe: an entry is keyed by the whole token string (a token
// that differs in any byte, a tampered one with a cached prefix included, is
// a miss and is verified in full), only tokens that passed every check are
// stored, and every hit re-checks exp (and nbf/iat) against the Manager's
// clock with the parser's leeway, so a cached token is refused exactly when
// an uncached one would be. Revocation is not this package's concern: the
// caller compares the token_version of the returned Claims with the user's
// current epoch in the store on every request, cached or not, so a revoked
// token is refused exactly as fast as without a cache.
//
// The cache is otter's W-TinyLFU: bounded to Config.CacheSize entries, with
// an admission filter that keeps a token seen once (a crowd of clients each
// sending one request) from displacing the tokens in use, which are seen
// again and again. Each entry is also dropped by otter when its token
// expires, so expired tokens do not hold memory until they are evicted.
//
// Memory: an entry holds a private copy of the token (about 400 bytes for
// ours) plus the Claims, some 670 bytes in all; at the default 16384
// entries (DefaultCacheSize) that is about 11 MB, reached only with that
// many live distinct tokens in use.
type verifiedCache struct {
	c *otter.Cache[string, cacheEntry]
}

// cacheEntry is what a hit needs: the immutable claims and the window in
// which the token is valid, leeway already applied, with the same bounds as
// golang-jwt's validator: valid iff notBefore <= now < notAfter.
type cacheEntry struct {
	kid       string // the key that verified it, still required on a hit
	claims    *Claims
	notBefore time.Time // max(nbf, iat) - leeway
	notAfter  time.Time // exp + leeway
}

// newVerifiedCache builds a cache of at most size entries. now is the
// Manager's clock, from which each entry's remaining lifetime is taken.
func newVerifiedCache(size int, now func() time.Time) *verifiedCache {
	return &verifiedCache{c: otter.Must(&otter.Options[string, cacheEntry]{
		MaximumSize: size,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, cacheEntry]) time.Duration {
			return e.Value.notAfter.Sub(now())
		}),
	})}
}

// get returns the cached entry for tok. ok is false on a miss.
func (c *verifiedCache) get(tok string) (cacheEntry, bool) {
	return c.c.GetIfPresent(tok)
}

// put stores ent, which verified, for tok.
func (c *verifiedCache) put(tok string, ent cacheEntry) {
	c.c.Set(strings.Clone(tok), ent) // do not pin the caller's (larger) string
}

// len returns the number of entries once pending evictions are done (for
// tests).
func (c *verifiedCache) len() int {
	c.c.CleanUp()
	return c.c.EstimatedSize()
}

// capacity returns the bound on len.
func (c *verifiedCache) capacity() int { return int(c.c.GetMaximum()) }
