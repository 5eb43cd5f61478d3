package token

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/scope"
)

func TestCacheHitReturnsSameClaims(t *testing.T) {
	m, _ := newTestManager(t, nil)
	tok, _, _ := m.IssueAccess(Subject{UserID: "u", Scopes: scope.MustNew("read"), TokenVersion: 3})
	c1, err := m.VerifyAccess(tok)
	if err != nil {
		t.Fatal(err)
	}
	if m.cache.len() != 1 {
		t.Fatalf("not cached after verifying: cache len = %d", m.cache.len())
	}
	c2, err := m.VerifyAccess(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c1 != c2 {
		t.Fatal("second verification did not come from the cache")
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
	if _, ok := m.cache.get(tok); !ok {
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
			// Evicted tokens still verify (in full).
			for _, tok := range toks[:10] {
				if _, err := m.VerifyAccess(tok); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestCacheKeepsHotEntries: a token used between inserts survives a stream
// of other tokens, each used twice.
func TestCacheKeepsHotEntries(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = 1 })
	if m.cache.capacity() != 1 {
		t.Fatal(m.cache.capacity())
	}
	m, _ = newTestManager(t, func(c *Config) { c.CacheSize = 32 * 8 })
	hot, _, _ := m.IssueAccess(Subject{UserID: "hot"})
	want := verifyTwice(t, m, hot)
	for i := 0; i < 32*8*4; i++ {
		tok, _, _ := m.IssueAccess(Subject{UserID: "cold"})
		verifyTwice(t, m, tok) // it competes for the entries
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
		if _, ok := m.cache.get(mut); ok {
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

// verifyTwice verifies tok twice, so that it is a token in use to the
// cache's admission filter, and returns the claims of the second
// verification.
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

// TestCacheAdmission: a stream of tokens each seen once (a crowd of clients
// each sending one request) neither displaces the tokens in use nor grows
// the cache past its bound. The tokens in use are used again only after
// more one-off tokens than the cache holds, so a cache without admission
// (plain LRU) would have dropped them each time; the first tenth of the
// stream is a warm-up, in which the filter learns which tokens are in use.
func TestCacheAdmission(t *testing.T) {
	const size = 64
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = size })
	hot := make([]string, 8)
	want := make([]*Claims, len(hot))
	for i := range hot {
		hot[i], _, _ = m.IssueAccess(Subject{UserID: fmt.Sprint("hot", i)})
	}
	const warmup = 10 * size
	for i := 0; i < 100*size; i++ {
		if i%100 == 0 { // the tokens in use are used again
			for j, tok := range hot {
				got, err := m.VerifyAccess(tok)
				if err != nil {
					t.Fatal(err)
				}
				if i > warmup && got != want[j] {
					t.Fatalf("token %d in use was displaced after %d one-off tokens", j, i)
				}
				want[j] = got
			}
		}
		tok, _, _ := m.IssueAccess(Subject{UserID: fmt.Sprint("once", i)})
		if _, err := m.VerifyAccess(tok); err != nil {
			t.Fatal(err)
		}
		if i%size == 0 {
			if n := m.cache.len(); n > size {
				t.Fatalf("cache holds %d, bound %d", n, size)
			}
		}
	}
	if n := m.cache.len(); n > size {
		t.Fatalf("cache holds %d, bound %d", n, size)
	}
}
