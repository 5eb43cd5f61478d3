package token

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math/bits"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/scope"
)

func TestCacheHitReturnsSameClaims(t *testing.T) {
	m, _ := newTestManager(t, nil)
	tok, _, _ := m.IssueAccess(Subject{UserID: "u", Scopes: scope.MustNew("read"), TokenVersion: 3})
	if _, err := m.VerifyAccess(tok); err != nil {
		t.Fatal(err)
	}
	if m.cache.len() != 0 {
		t.Fatalf("cached at first sight: cache len = %d", m.cache.len())
	}
	c1, err := m.VerifyAccess(tok)
	if err != nil {
		t.Fatal(err)
	}
	if m.cache.len() != 1 {
		t.Fatalf("not cached at second sight: cache len = %d", m.cache.len())
	}
	c2, err := m.VerifyAccess(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c1 != c2 {
		t.Fatal("third verification did not come from the cache")
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := m.VerifyAccess(tok); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("cache hit allocs = %v", allocs)
	}
}

func TestCacheExpiryViaClock(t *testing.T) {
	m, clk := newTestManager(t, nil)
	tok, exp, _ := m.IssueAccess(Subject{UserID: "u"})
	verifyTwice(t, m, tok)
	clk.Set(exp.Add(-time.Nanosecond))
	if _, err := m.VerifyAccess(tok); err != nil {
		t.Fatalf("just before exp: %v", err)
	}
	if _, _, ok := m.cache.get(tok); !ok {
		t.Fatal("token not cached")
	}
	clk.Set(exp)
	_, err := m.VerifyAccess(tok)
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("cached token after exp: err = %v", err)
	}
	// Same answer as the uncached path.
	_, err2 := m.verify(tok, TypAccess)
	if !errors.Is(err2, ErrExpired) {
		t.Fatalf("uncached: %v", err2)
	}
}

// TestCacheMatchesUncached compares a caching and a non-caching manager at
// many clock readings, leeway included.
func TestCacheMatchesUncached(t *testing.T) {
	for _, leeway := range []time.Duration{0, 5 * time.Second} {
		cached, clk1 := newTestManager(t, func(c *Config) { c.Leeway = leeway })
		plain, clk2 := newTestManager(t, func(c *Config) { c.Leeway = leeway; c.CacheSize = -1 })
		tok, exp, _ := cached.IssueAccess(Subject{UserID: "u"})
		verifyTwice(t, cached, tok)
		for _, at := range []time.Time{
			t0.Add(-leeway - time.Nanosecond), t0.Add(-leeway), t0, exp.Add(-time.Second),
			exp, exp.Add(leeway - time.Nanosecond), exp.Add(leeway), exp.Add(time.Hour),
		} {
			clk1.Set(at)
			clk2.Set(at)
			_, e1 := cached.VerifyAccess(tok)
			_, e2 := plain.VerifyAccess(tok)
			if (e1 == nil) != (e2 == nil) || e1 != nil && kindOf(t, e1) != kindOf(t, e2) {
				t.Errorf("leeway %v at exp%+v: cached %v, uncached %v", leeway, at.Sub(exp), e1, e2)
			}
		}
	}
}

func TestCacheBound(t *testing.T) {
	for _, size := range []int{1, 3, 64, 100, 1000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			m, _ := newTestManager(t, func(c *Config) { c.CacheSize = size })
			if got := m.cache.capacity(); got > size || got < size/2 {
				t.Fatalf("capacity %d for CacheSize %d", got, size)
			}
			toks := make([]string, 0, 10*size)
			for i := 0; i < 10*size; i++ {
				tok, _, err := m.IssueAccess(Subject{UserID: fmt.Sprint("u", i)})
				if err != nil {
					t.Fatal(err)
				}
				verifyTwice(t, m, tok)
				if n := m.cache.len(); n > size {
					t.Fatalf("after %d inserts the cache holds %d > %d", i+1, n, size)
				}
				toks = append(toks, tok)
			}
			if n := m.cache.len(); n != m.cache.capacity() {
				t.Errorf("cache holds %d, capacity %d", n, m.cache.capacity())
			}
			// Index and slots agree.
			for i := range m.cache.shards {
				s := &m.cache.shards[i]
				for h, j := range s.index {
					if s.slots[j].hash != h || maphash.String(m.cache.seed, s.slots[j].key) != h {
						t.Fatalf("index says %d for a key slot %d does not hold", j, j)
					}
				}
			}
			// Evicted tokens still verify (in full).
			for _, tok := range toks[:10] {
				if _, err := m.VerifyAccess(tok); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestCacheClockKeepsHotEntries: a token used between inserts survives a
// stream of one-off tokens.
func TestCacheClockKeepsHotEntries(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = 1 })
	// One shard of one slot: CLOCK degenerates, but must still bound.
	if m.cache.capacity() != 1 {
		t.Fatal(m.cache.capacity())
	}
	m, _ = newTestManager(t, func(c *Config) { c.CacheSize = 32 * 8 })
	hot, _, _ := m.IssueAccess(Subject{UserID: "hot"})
	want := verifyTwice(t, m, hot)
	for i := 0; i < 32*8*4; i++ {
		tok, _, _ := m.IssueAccess(Subject{UserID: "cold"})
		verifyTwice(t, m, tok) // admitted: it competes for the slots
		got, _ := m.VerifyAccess(hot)
		if got != want {
			t.Fatalf("hot token evicted after %d cold ones", i+1)
		}
	}
}

func TestCacheTamperedPrefixIsMiss(t *testing.T) {
	m, _ := newTestManager(t, nil)
	tok, _, _ := m.IssueAccess(Subject{UserID: "u"})
	verifyTwice(t, m, tok)
	for _, mut := range []string{
		tok + "A",
		tok + ".",
		tok[:len(tok)-1],
		tok[:len(tok)-1] + "A",
		tok[:len(tok)-1] + "B",
		tok + tok,
	} {
		if mut == tok {
			continue
		}
		if _, _, ok := m.cache.get(mut); ok {
			t.Fatal("tampered token is a cache hit")
		}
		if _, err := m.VerifyAccess(mut); err == nil {
			t.Fatal("tampered token verified")
		}
	}
}

func TestCacheOnlySuccessesAndOnlyAccess(t *testing.T) {
	m, clk := newTestManager(t, nil)
	// A refresh token is never cached.
	rt, _, _ := m.IssueRefresh(Subject{UserID: "u"})
	if _, err := m.VerifyRefresh(rt); err != nil {
		t.Fatal(err)
	}
	if _, err := m.VerifyAccess(rt); !errors.Is(err, ErrWrongType) {
		t.Fatal(err)
	}
	// An expired token is not cached.
	at, exp, _ := m.IssueAccess(Subject{UserID: "u"})
	clk.Set(exp)
	if _, err := m.VerifyAccess(at); !errors.Is(err, ErrExpired) {
		t.Fatal(err)
	}
	// A forged one neither.
	if _, err := m.VerifyAccess(at[:len(at)-2] + "AA"); err == nil {
		t.Fatal("forged verified")
	}
	if n := m.cache.len(); n != 0 {
		t.Fatalf("cache holds %d entries after failures only", n)
	}
}

func TestCacheDisabled(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = -1 })
	if m.cache != nil {
		t.Fatal("cache not disabled")
	}
	tok, _, _ := m.IssueAccess(Subject{UserID: "u"})
	c1, err1 := m.VerifyAccess(tok)
	c2, err2 := m.VerifyAccess(tok)
	if err1 != nil || err2 != nil || c1 == c2 {
		t.Fatalf("%v %v %p %p", err1, err2, c1, c2)
	}
}

func TestCacheConcurrent(t *testing.T) {
	m, clk := newTestManager(t, func(c *Config) { c.CacheSize = 64 })
	toks := make([]string, 256)
	for i := range toks {
		toks[i], _, _ = m.IssueAccess(Subject{UserID: fmt.Sprint("u", i), TokenVersion: uint64(i)})
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, seed))
			for i := 0; i < 2000; i++ {
				j := r.IntN(len(toks))
				c, err := m.VerifyAccess(toks[j])
				if err != nil {
					t.Error(err)
					return
				}
				if c.TokenVersion != uint64(j) {
					t.Errorf("token %d gave claims of %d", j, c.TokenVersion)
					return
				}
				if i%500 == 0 {
					clk.Advance(time.Millisecond)
				}
			}
		}(uint64(g))
	}
	wg.Wait()
	if n := m.cache.len(); n > 64 {
		t.Fatalf("cache holds %d", n)
	}
}

// TestCacheHashCollision simulates two tokens with one 64-bit hash: the
// index points at a slot holding another token, which must be a miss.
func TestCacheHashCollision(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = 1 })
	a, _, _ := m.IssueAccess(Subject{UserID: "a"})
	b, _, _ := m.IssueAccess(Subject{UserID: "b"})
	verifyTwice(t, m, a)
	s := &m.cache.shards[0]
	hb := maphash.String(m.cache.seed, b)
	s.index[hb] = s.index[s.slots[0].hash] // b now "collides" with a
	if _, _, ok := m.cache.get(b); ok {
		t.Fatal("colliding token is a hit")
	}
	verifyTwice(t, m, b)
	c, err := m.VerifyAccess(b)
	if err != nil || c.UserID != "b" {
		t.Fatalf("%+v %v", c, err)
	}
	// The insert of b took over the slot.
	if c2, _ := m.VerifyAccess(b); c2 != c {
		t.Fatal("b not cached after collision")
	}
}

// verifyTwice verifies tok twice, which admits it to the cache, and returns
// the claims of the second verification.
func verifyTwice(tb testing.TB, m *Manager, tok string) *Claims {
	tb.Helper()
	if _, err := m.VerifyAccess(tok); err != nil {
		tb.Fatal(err)
	}
	c, err := m.VerifyAccess(tok)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestCacheAdmission: tokens seen once stay out of the cache (all but the
// doorkeeper's rare false positives), so a stream of one-off tokens neither
// pays for inserts nor displaces the tokens in use; and the doorkeeper's
// memory of first sightings stays bounded however many tokens pass.
func TestCacheAdmission(t *testing.T) {
	const size = 64
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = size })
	hot, _, _ := m.IssueAccess(Subject{UserID: "hot"})
	want := verifyTwice(t, m, hot)
	for i := 0; i < 100*size; i++ {
		if i%100 == 0 { // in use: CLOCK's reference bit is set
			if got, _ := m.VerifyAccess(hot); got != want {
				t.Fatalf("the token in use was displaced after %d one-off tokens", i)
			}
		}
		tok, _, _ := m.IssueAccess(Subject{UserID: fmt.Sprint("once", i)})
		if _, err := m.VerifyAccess(tok); err != nil {
			t.Fatal(err)
		}
		set := 0
		for j := range m.cache.door.words {
			set += bits.OnesCount64(m.cache.door.words[j].Load())
		}
		if int64(set) > 2*m.cache.door.limit {
			t.Fatalf("doorkeeper holds %d first sightings, bound %d", set, m.cache.door.limit)
		}
	}
	// 6400 one-off tokens against a doorkeeper at most 1/16 full (two
	// bits a token): a token is admitted when both its bits are already
	// set, on average (1/16)²/3 = 1 in 768 over a fill cycle, so about 8
	// here (Poisson: more than 32 has odds of about 1e-10), where one bit a
	// token (1 in 48) would admit some 130 and fill the cache.
	if n := m.cache.len() - 1; n > size/2 {
		t.Errorf("%d one-off tokens were admitted into a cache of %d", n, size)
	}
}
