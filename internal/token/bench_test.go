package token

import (
	"fmt"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/crudauth/caddy-crudauth/internal/scope"
)

var benchSubject = Subject{
	UserID:       "u_2c7f1a9e4b",
	Scopes:       scope.MustNew("read", "write", "profile"),
	TokenVersion: 3,
	SessionID:    "s_91ab",
}

// benchManager uses the real clock: a fixed one would make the benchmark
// skip the cost of reading the time.
func benchManager(b *testing.B, cacheSize int) *Manager {
	b.Helper()
	m, err := New(Config{Key: testKey, Issuer: testIss, Audience: testAud, CacheSize: cacheSize, AccessTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func mint(b *testing.B, m *Manager, n int) []string {
	b.Helper()
	toks := make([]string, n)
	for i := range toks {
		var err error
		if toks[i], _, err = m.IssueAccess(benchSubject); err != nil {
			b.Fatal(err)
		}
	}
	return toks
}

func BenchmarkVerifyAccessCached(b *testing.B) {
	m := benchManager(b, 0)
	tok := mint(b, m, 1)[0]
	if _, err := m.VerifyAccess(tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.VerifyAccess(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyAccessCachedParallel(b *testing.B) {
	m := benchManager(b, 0)
	toks := mint(b, m, 1024)
	for _, tok := range toks {
		if _, err := m.VerifyAccess(tok); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := m.VerifyAccess(toks[i&1023]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkVerifyAccessFresh verifies b.N distinct tokens, each once: every
// call is a miss. "nocache" is the bare verification; "cache" is the real
// path, lookup and insert (with eviction once full) included.
func BenchmarkVerifyAccessFresh(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"nocache", -1}, {"cache", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			m := benchManager(b, bc.size)
			toks := mint(b, m, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := m.VerifyAccess(toks[i]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyRefresh(b *testing.B) {
	m := benchManager(b, 0)
	tok, _, _ := m.IssueRefresh(benchSubject)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.VerifyRefresh(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyAccessForged is a token with a bad signature: the cost an
// attacker can impose per request.
func BenchmarkVerifyAccessForged(b *testing.B) {
	m := benchManager(b, 0)
	tok := mint(b, m, 1)[0]
	tok = tok[:len(tok)-2] + "AA"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.VerifyAccess(tok); err == nil {
			b.Fatal("forged token verified")
		}
	}
}

func BenchmarkIssueAccess(b *testing.B) {
	m := benchManager(b, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := m.IssueAccess(benchSubject); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseAuthorization(b *testing.B) {
	m := benchManager(b, 0)
	h := "Bearer " + mint(b, m, 1)[0]
	b.ReportAllocs()
	b.SetBytes(int64(len(h)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ParseAuthorization(h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGolangJWTParse is the baseline: golang-jwt's own jwt.Parse of an
// HS256 token of the same size into MapClaims, with its default checks only.
func BenchmarkGolangJWTParse(b *testing.B) {
	m := benchManager(b, -1)
	tok := mint(b, m, 1)[0]
	kf := func(*jwt.Token) (any, error) { return testKey, nil }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := jwt.Parse(tok, kf, jwt.WithValidMethods([]string{"HS256"})); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCacheMissPut is the cache's cost for a token seen for the first
// time: the failed lookup plus the insert (eviction included once full).
func BenchmarkCacheMissPut(b *testing.B) {
	m := benchManager(b, 0)
	base := mint(b, m, 1)[0]
	ent, err := m.verify(base, TypAccess)
	if err != nil {
		b.Fatal(err)
	}
	c := newVerifiedCache(DefaultCacheSize, time.Now)
	keys := make([]string, b.N) // distinct keys of realistic length
	for i := range keys {
		keys[i] = base[:len(base)-12] + fmt.Sprintf("%012d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := c.get(keys[i]); ok {
			b.Fatal("hit")
		}
		c.put(keys[i], ent)
	}
}

// algManager is a Manager of each signing algorithm, for the algorithm
// comparison benchmarks (*Alg): HS256 with the test key, EdDSA and ES256
// with a generated key.
func algManager(b *testing.B, alg string, cacheSize int) *Manager {
	b.Helper()
	if alg == AlgHS256 {
		return benchManager(b, cacheSize)
	}
	m, err := New(Config{Alg: alg, Issuer: testIss, Audience: testAud, CacheSize: cacheSize, AccessTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	k := newKey(b, alg, "bench")
	if err := m.SetKeys(k.ID, []Key{k}); err != nil {
		b.Fatal(err)
	}
	return m
}

var benchAlgs = []string{AlgHS256, AlgEdDSA, AlgES256}

// BenchmarkVerifyAccessFreshAlg is a token never seen before, verified in
// full (the cache misses), for each algorithm: the signature check is what
// differs.
func BenchmarkVerifyAccessFreshAlg(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(alg, func(b *testing.B) {
			m := algManager(b, alg, -1)
			toks := mint(b, m, min(b.N, 4096))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := m.VerifyAccess(toks[i%len(toks)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyAccessCachedAlg is a token seen before, for each
// algorithm: a cache hit costs the same whatever signed the token.
func BenchmarkVerifyAccessCachedAlg(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(alg, func(b *testing.B) {
			m := algManager(b, alg, 0)
			tok := mint(b, m, 1)[0]
			if _, err := m.VerifyAccess(tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := m.VerifyAccess(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIssueAccessAlg is the signing of an access token, for each
// algorithm (a login and every refresh sign one or two).
func BenchmarkIssueAccessAlg(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(alg, func(b *testing.B) {
			m := algManager(b, alg, 0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := m.IssueAccess(benchSubject); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
