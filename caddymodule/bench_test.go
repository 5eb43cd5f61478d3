package caddymodule

// In-process benchmarks of the gateway's per-request work, run by
// `make bench` (scripts/bench.sh), which turns them into BENCHMARKS.md.
//
// The handler is built the way Caddy builds it (Provision on a caddy.Context)
// with the configuration the end-to-end benchmark uses: a secret from the
// config, body-mode refresh, and one scope rule (`require /api/* api:read`),
// so a passing request pays for the token check, the rule, the epoch lookup
// and the identity headers. The logger is swapped for a production-like one
// (JSON, info level, discarded) so that debug checks cost what they cost in a
// real Caddy.
//
// Baselines measured in the same run, so that figures can be read as ratios
// on a noisy machine: the bare HMAC-SHA256 over a token's signing input, and
// golang-jwt's own HS256 parse of the same token.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

const (
	benchUsers    = 256
	benchPassword = "bench-password-not-secret"
	benchPath     = "/api/items"
)

// benchKey is an obviously fake key that passes the weak-secret check.
var benchKey = "bench-only-hs256-key-0123456789-not-a-secret"

// benchFixture is one provisioned handler shared by every benchmark of the
// binary: provisioning hashes a password and creating users costs an fsync
// each, which would otherwise repeat for every b.N the framework tries.
type benchFixture struct {
	h     *Handler
	users []*store.User
	sids  []string // a live session of each user
}

var benchFixtures = struct {
	sync.Mutex
	m map[string]*benchFixture // by signing algorithm
}{m: map[string]*benchFixture{}}

// benchHandler is the HS256 fixture.
func benchHandler(b *testing.B) *benchFixture { return benchHandlerAlg(b, token.AlgHS256) }

// benchHandlerAlg is the fixture whose handler signs with alg: HS256 with
// benchKey, EdDSA or ES256 with a key pair it generates in its store.
func benchHandlerAlg(b *testing.B, alg string) *benchFixture {
	b.Helper()
	benchFixtures.Lock()
	defer benchFixtures.Unlock()
	if f := benchFixtures.m[alg]; f != nil {
		return f
	}
	f, err := newBenchFixture(alg)
	if err != nil {
		b.Fatal(err)
	}
	benchFixtures.m[alg] = f
	return f
}

func newBenchFixture(alg string) (*benchFixture, error) {
	dir, err := os.MkdirTemp("", "crudauth-bench-")
	if err != nil {
		return nil, err
	}
	// The fixture outlives every single benchmark, so no b.TempDir. Once
	// the store has the file open, the directory is removed: on Linux the
	// open handle keeps working, and nothing is left behind.
	defer os.RemoveAll(dir)
	ctx, _ := caddy.NewContext(caddy.Context{Context: context.Background()})
	h := &Handler{
		RealmSettings:   RealmSettings{DB: filepath.Join(dir, "bench.db"), Secret: benchKey, SigningAlg: alg},
		AccessTTL:       caddy.Duration(time.Hour),
		Refresh:         RefreshModeBody,
		DefaultScopes:   []string{"api:read"},
		GrantableScopes: []string{"api:read", "api:write"},
		Rules: []Rule{{
			MatcherSetsRaw: caddyhttp.RawMatcherSets{{"path": json.RawMessage(`["/api/*"]`)}},
			Scopes:         []string{"api:read"},
		}},
	}
	if alg != token.AlgHS256 {
		h.Secret = ""
	}
	if err := h.Provision(ctx); err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	h.logger = zap.New(zapcore.NewCore(
		zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))

	hash, err := h.realm.hasher.Hash(benchPassword)
	if err != nil {
		return nil, err
	}
	f := &benchFixture{h: h}
	for i := 0; i < benchUsers; i++ {
		u := &store.User{Username: fmt.Sprintf("bench%04d", i), PasswordHash: hash}
		if err := h.realm.store.CreateUser(context.Background(), u); err != nil {
			return nil, err
		}
		f.users = append(f.users, u)
		sid, err := newLiveSession(h.realm.store, u.ID)
		if err != nil {
			return nil, err
		}
		f.sids = append(f.sids, sid)
	}
	return f, nil
}

func (f *benchFixture) mint(b *testing.B, n int) []string {
	b.Helper()
	toks := make([]string, n)
	for i := range toks {
		u := f.users[i%len(f.users)]
		tok, _, err := f.h.tokens.IssueAccess(token.Subject{UserID: u.ID, Scopes: scope.MustNew("api:read"), TokenVersion: u.TokenVersion,
			SessionID: f.sids[i%len(f.users)]})
		if err != nil {
			b.Fatal(err)
		}
		toks[i] = "Bearer " + tok
	}
	return toks
}

// mintRefresh returns the refresh token of a new session of user i.
func (f *benchFixture) mintRefresh(b *testing.B, i int) string {
	b.Helper()
	u := f.users[i%len(f.users)]
	sid := liveSession(b, f.h.realm.store, u.ID)
	tok, _, err := f.h.tokens.IssueRefresh(token.Subject{UserID: u.ID, Scopes: scope.MustNew("api:read"),
		TokenVersion: u.TokenVersion, SessionID: sid, Generation: 1})
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

// benchRequest is a request as Caddy hands it to a handler: with a replacer
// and the vars map in its context.
func benchRequest(method, target string, body io.Reader) *http.Request {
	r := httptest.NewRequest(method, target, body)
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	return r.WithContext(ctx)
}

// discardWriter is a ResponseWriter that keeps the status and drops the body.
type discardWriter struct {
	hdr    http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.hdr }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }
func (w *discardWriter) reset()                      { clear(w.hdr); w.status = 0 }

var nextOK = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// checkPassed fails b unless r went through with identity headers set.
func checkPassed(b *testing.B, h *Handler, r *http.Request, err error) {
	b.Helper()
	if err != nil {
		b.Fatalf("request refused: %v", err)
	}
	if r.Header.Get(h.UserIDHeader) == "" {
		b.Fatal("identity header not set")
	}
}

// BenchmarkServeHTTPRepeatedToken is the per-request check for a token seen
// before: one request object reused, as a keep-alive client sending the same
// token would present it.
func BenchmarkServeHTTPRepeatedToken(b *testing.B) { benchRepeated(b, benchHandler(b)) }

// benchRepeated runs f's handler on one token, again and again.
func benchRepeated(b *testing.B, f *benchFixture) {
	r := benchRequest(http.MethodGet, benchPath, nil)
	auth := []string{f.mint(b, 1)[0]}
	r.Header["Authorization"] = auth
	w := &discardWriter{hdr: http.Header{}}
	checkPassed(b, f.h, r, f.h.ServeHTTP(w, r, nextOK))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Set again each time: the handler removes it before the request
		// goes upstream (forward_token off, the default).
		r.Header["Authorization"] = auth
		if err := f.h.ServeHTTP(w, r, nextOK); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServeHTTPRepeatedTokenParallel is the same on every core, with
// 1024 tokens in rotation: contention on the caches' locks shows here.
func BenchmarkServeHTTPRepeatedTokenParallel(b *testing.B) {
	f := benchHandler(b)
	toks := f.mint(b, 1024)
	for _, t := range toks {
		r := benchRequest(http.MethodGet, benchPath, nil)
		r.Header.Set("Authorization", t)
		checkPassed(b, f.h, r, f.h.ServeHTTP(&discardWriter{hdr: http.Header{}}, r, nextOK))
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := benchRequest(http.MethodGet, benchPath, nil)
		w := &discardWriter{hdr: http.Header{}}
		i := 0
		for pb.Next() {
			r.Header["Authorization"] = []string{toks[i&1023]}
			if err := f.h.ServeHTTP(w, r, nextOK); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkServeHTTPFreshToken is the check for a token never seen before:
// b.N distinct tokens minted beforehand, spread over the fixture's users.
// Past the verified-token cache's bound every call also evicts.
func BenchmarkServeHTTPFreshToken(b *testing.B) { benchFresh(b, benchHandler(b)) }

// benchFresh runs f's handler on b.N tokens it never saw.
func benchFresh(b *testing.B, f *benchFixture) {
	toks := f.mint(b, b.N)
	r := benchRequest(http.MethodGet, benchPath, nil)
	w := &discardWriter{hdr: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Header["Authorization"] = []string{toks[i]}
		if err := f.h.ServeHTTP(w, r, nextOK); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServeHTTPAlg is the per-request check for each signing
// algorithm: a token seen before (a cache hit, whatever signed it) and a
// token never seen before (its signature checked: HMAC, Ed25519 or ECDSA).
func BenchmarkServeHTTPAlg(b *testing.B) {
	for _, alg := range []string{token.AlgHS256, token.AlgEdDSA, token.AlgES256} {
		b.Run(alg+"/repeated", func(b *testing.B) { benchRepeated(b, benchHandlerAlg(b, alg)) })
		b.Run(alg+"/fresh", func(b *testing.B) { benchFresh(b, benchHandlerAlg(b, alg)) })
	}
}

// BenchmarkServeHTTPPublic is the floor of the handler: a request on a
// public route pays only for the header strip and the rule match. It is the
// same handler with a public rule in front.
func BenchmarkServeHTTPPublic(b *testing.B) {
	f := benchHandler(b)
	h := *f.h                        // the provisioned state, shared
	h.Rules = []Rule{{Public: true}} // a rule with no matcher matches everything
	// The gate holds the rules it was built with: build it again.
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := h.provisionRules(ctx); err != nil {
		b.Fatal(err)
	}
	h.gate = h.gate.WithAuth(h.auth)
	r := benchRequest(http.MethodGet, benchPath, nil)
	w := &discardWriter{hdr: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := h.ServeHTTP(w, r, nextOK); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenEndpoint is a login: POST /token with the password grant,
// argon2id verification included (OWASP parameters). The request is built
// inside the loop; its cost is negligible next to the hash.
func BenchmarkTokenEndpoint(b *testing.B) {
	f := benchHandler(b)
	body := url.Values{"username": {f.users[0].Username}, "password": {benchPassword}}.Encode()
	w := &discardWriter{hdr: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := benchRequest(http.MethodPost, f.h.TokenPath, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w.reset()
		if err := f.h.ServeHTTP(w, r, nextOK); err != nil || w.status != http.StatusOK {
			b.Fatalf("login: status %d, err %v", w.status, err)
		}
	}
}

// BenchmarkRefreshEndpoint is POST /refresh with the refresh token in a JSON
// body (refresh body mode), each refresh presenting the successor the one
// before handed out: full verification of the refresh token (never
// cached), the epoch lookup, the session's rotation written to the store
// (a durable write, group-committed with whatever else is in flight), and
// a new pair. The parallel run is many clients refreshing at once, each
// with its own session: what the group commit is for.
func BenchmarkRefreshEndpoint(b *testing.B) {
	f := benchHandler(b)
	b.Run("serial", func(b *testing.B) {
		rc := newRefreshClient(f, f.mintRefresh(b, 0))
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			rc.refresh(b)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var next atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			rc := newRefreshClient(f, f.mintRefresh(b, int(next.Add(1))))
			for pb.Next() {
				rc.refresh(b)
			}
		})
	})
}

// refreshClient refreshes one session again and again, as a client does,
// each time with the refresh token the last refresh handed out.
type refreshClient struct {
	f     *benchFixture
	r     *http.Request
	w     *bodyWriter
	token string
}

func newRefreshClient(f *benchFixture, tok string) *refreshClient {
	r := benchRequest(http.MethodPost, f.h.RefreshPath, nil)
	r.Header.Set("Content-Type", "application/json")
	return &refreshClient{f: f, r: r, w: &bodyWriter{hdr: http.Header{}}, token: tok}
}

func (c *refreshClient) refresh(b *testing.B) {
	body := `{"refresh_token":"` + c.token + `"}`
	c.r.Body = io.NopCloser(strings.NewReader(body))
	c.r.ContentLength = int64(len(body))
	c.w.status, c.w.body = 0, c.w.body[:0]
	if err := c.f.h.ServeHTTP(c.w, c.r, nextOK); err != nil || c.w.status != http.StatusOK {
		b.Fatalf("refresh: status %d, err %v", c.w.status, err)
	}
	var resp struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(c.w.body, &resp); err != nil || resp.RefreshToken == "" {
		b.Fatalf("refresh: no successor in %q", c.w.body)
	}
	c.token = resp.RefreshToken
}

// bodyWriter is a ResponseWriter that keeps the status and the body.
type bodyWriter struct {
	hdr    http.Header
	status int
	body   []byte
}

func (w *bodyWriter) Header() http.Header { return w.hdr }
func (w *bodyWriter) Write(p []byte) (int, error) {
	w.body = append(w.body, p...)
	return len(p), nil
}
func (w *bodyWriter) WriteHeader(s int) { w.status = s }

// BenchmarkBaselineHMAC is the floor of any HS256 check: HMAC-SHA256 over a
// token's signing input and a constant-time compare.
func BenchmarkBaselineHMAC(b *testing.B) {
	f := benchHandler(b)
	tok := strings.TrimPrefix(f.mint(b, 1)[0], "Bearer ")
	dot := strings.LastIndexByte(tok, '.')
	input, want := []byte(tok[:dot]), []byte(tok[dot+1:])
	key := []byte(benchKey)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := hmac.New(sha256.New, key)
		m.Write(input)
		sum := m.Sum(nil)
		if hmac.Equal(sum, want) { // never: want is base64, sum raw
			b.Fatal("unexpected")
		}
	}
}

// BenchmarkBaselineGolangJWTParse is golang-jwt's HS256 parse of one of our
// access tokens into MapClaims, with its default checks only.
func BenchmarkBaselineGolangJWTParse(b *testing.B) {
	f := benchHandler(b)
	tok := strings.TrimPrefix(f.mint(b, 1)[0], "Bearer ")
	kf := func(*jwt.Token) (any, error) { return []byte(benchKey), nil }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := jwt.Parse(tok, kf, jwt.WithValidMethods([]string{"HS256"})); err != nil {
			b.Fatal(err)
		}
	}
}
