package caddymodule

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/crudauth/caddy-crudauth/internal/headers"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// Shared fixtures of the integration tests. The in-process Caddy that
// caddytest starts listens on the fixed ports below, so tests that use it
// must not run in parallel.
const (
	gatewayURL    = "http://localhost:9080"
	formType      = "application/x-www-form-urlencoded"
	testPassword  = "test-password-1"
	testPassword2 = "test-password-2"
	// helperDBEnv tells a re-executed test binary (TestHelperProcess) which
	// database to try to open.
	helperDBEnv = "CRUDAUTH_TEST_HELPER_DB"
)

// testGlobalOptions opens the global options block of every test config
// (the caller closes it): caddytest's fixed admin and site ports.
const testGlobalOptions = `{
	skip_install_trust
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns`

// testSecret is an obviously fake HS256 key. It is not a repeated pattern,
// which the secret strength check (config.CheckSecretStrength) refuses.
const testSecret = "test-only-hs256-key-0123456789-not-a-secret"

func TestMain(m *testing.M) {
	// The harness otherwise looks for certificate files these tests do not
	// need (every site is plain http).
	caddytest.Default.Certificates = nil
	if os.Getenv(helperDBEnv) == "" && os.Getenv(crashConfigEnv) == "" {
		// Keep the in-process Caddy's autosaved config and data out of the
		// user's home directory.
		if dir, err := os.MkdirTemp("", "crudauth-it-"); err == nil {
			_ = os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
			_ = os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
			defer os.RemoveAll(dir)
		}
	}
	m.Run()
}

// ---------------------------------------------------------------------------
// The backend: an httptest server that records every request it receives.

type seenRequest struct {
	method, path, rawPath, requestURI string
	header                            http.Header
	cookies                           []*http.Cookie
}

type backend struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []seenRequest
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.reqs = append(b.reqs, seenRequest{
			method:     r.Method,
			path:       r.URL.Path,
			rawPath:    r.URL.RawPath,
			requestURI: r.RequestURI,
			header:     r.Header.Clone(),
			cookies:    r.Cookies(),
		})
		b.mu.Unlock()
		_, _ = io.WriteString(w, "backend ok")
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) addr() string { return strings.TrimPrefix(b.srv.URL, "http://") }

// take returns the requests recorded since the last take and forgets them.
func (b *backend) take() []seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.reqs
	b.reqs = nil
	return out
}

// wantNone asserts that nothing reached the backend since the last take.
func (b *backend) wantNone(t *testing.T) {
	t.Helper()
	if got := b.take(); len(got) != 0 {
		t.Errorf("backend received %d request(s), want none; first: %s %s", len(got), got[0].method, got[0].requestURI)
	}
}

// wantOne asserts that exactly one request reached the backend since the
// last take, and returns it.
func (b *backend) wantOne(t *testing.T) seenRequest {
	t.Helper()
	got := b.take()
	if len(got) != 1 {
		t.Fatalf("backend received %d request(s), want exactly one", len(got))
	}
	return got[0]
}

// identityNames are the normalized forms of the default identity headers.
var identityNames = []string{"x-user-id", "x-user-name", "x-user-scopes"}

// identitySeen groups the headers of h whose names normalize (case, `_` and
// `.` folded to `-`) to an identity header: normalized name -> "Key: value"
// for every value under every spelling.
func identitySeen(h http.Header) map[string][]string {
	out := map[string][]string{}
	for k, vs := range h {
		n := headers.Normalize(k)
		if !slices.Contains(identityNames, n) {
			continue
		}
		for _, v := range vs {
			out[n] = append(out[n], k+": "+v)
		}
	}
	return out
}

// wantIdentity asserts that the backend saw exactly the gateway's identity
// headers: one spelling, one value each.
func wantIdentity(t *testing.T, s seenRequest, id, name, scopes string) {
	t.Helper()
	got := identitySeen(s.header)
	want := map[string][]string{
		"x-user-id":     {"X-User-Id: " + id},
		"x-user-name":   {"X-User-Name: " + name},
		"x-user-scopes": {"X-User-Scopes: " + scopes},
	}
	for _, n := range identityNames {
		if !slices.Equal(got[n], want[n]) {
			t.Errorf("backend saw %s as %q, want %q", n, got[n], want[n])
		}
	}
}

// wantNoIdentity asserts that no identity header in any spelling reached the
// backend.
func wantNoIdentity(t *testing.T, s seenRequest) {
	t.Helper()
	if got := identitySeen(s.header); len(got) != 0 {
		t.Errorf("backend saw identity headers %q, want none", got)
	}
}

// ---------------------------------------------------------------------------
// The gateway: one database, one backend, one config at a time.

type gateway struct {
	db      string
	memory  string // the name of its memory store; "" for the bolt file db
	etcd    string // the body of its `store etcd` block; "" for none
	st      store.Store
	backend *backend
	client  *http.Client
}

// gwConfig is the variable part of the Caddyfile.
type gwConfig struct {
	auth   string // lines inside the crudauth block (db is added)
	site   string // lines of the site block before crudauth
	proxy  string // lines inside the reverse_proxy block
	global string // extra global options
	extra  string // extra site blocks
}

// newGateway makes a database in a fresh temp dir and takes a reference to
// its shared handle, the same one the running Caddy will use, so tests can
// change users underneath the gateway.
func newGateway(t *testing.T) *gateway {
	t.Helper()
	g := &gateway{
		db:      filepath.Join(t.TempDir(), "crudauth.db"),
		backend: newBackend(t),
		client:  newClient(),
	}
	st, key, err := acquireBolt(g.db)
	if err != nil {
		t.Fatalf("opening the test database: %v", err)
	}
	t.Cleanup(func() { _ = releaseStore(key) })
	g.st = st
	return g
}

// startGateway is newGateway plus a first config load.
func startGateway(t *testing.T, c gwConfig) *gateway {
	t.Helper()
	g := newGateway(t)
	g.load(t, c)
	return g
}

func newClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		// No connection reuse: a config reload closes idle connections, and
		// a POST on a stale one would fail instead of being retried.
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (g *gateway) caddyfile(c gwConfig) string {
	proxy := g.backend.addr()
	if c.proxy != "" {
		proxy += " {\n" + c.proxy + "\n\t}"
	}
	return fmt.Sprintf(testGlobalOptions+`
%s
}

http://localhost:9080 {
%s
	crudauth {
		%s
%s
	}
	reverse_proxy %s
}
%s
`, c.global, c.site, g.storeLine(), c.auth, proxy, c.extra)
}

// storeLine is the crudauth block's line that names the gateway's store.
func (g *gateway) storeLine() string {
	if g.etcd != "" {
		return "store etcd {\n" + g.etcd + "\n\t\t}"
	}
	if g.memory != "" {
		return "store memory {\n\t\t\tname " + g.memory + "\n\t\t}"
	}
	return "db " + g.db
}

// load (re)loads Caddy with c through the admin API and returns how long the
// load took, the adapted config's check included.
func (g *gateway) load(t *testing.T, c gwConfig) time.Duration {
	t.Helper()
	start := time.Now()
	caddytest.NewTester(t).InitServer(g.caddyfile(c), "caddyfile")
	d := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}
	return d
}

// loadError POSTs a Caddyfile to the admin API and returns its status and
// body, for configs that must be refused.
func loadError(t *testing.T, caddyfile string) (int, string) {
	t.Helper()
	// Make sure the in-process Caddy runs, so that this test does not
	// depend on an earlier one having started it.
	caddytest.NewTester(t).InitServer(testGlobalOptions+`
}
http://localhost:9080 {
	respond "up"
}`, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	req, err := http.NewRequest(http.MethodPost, "http://localhost:2999/load", strings.NewReader(caddyfile))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := newClient().Do(req)
	if err != nil {
		t.Fatalf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// ---------------------------------------------------------------------------
// Users.

var (
	hasherOnce sync.Once
	testHasher *password.Hasher
	hashMu     sync.Mutex
	hashes     = map[string]string{}
)

// hashFor returns an argon2id hash of pw, computed once per password and
// reused for every user (each hash costs tens of milliseconds).
func hashFor(t *testing.T, pw string) string {
	t.Helper()
	hasherOnce.Do(func() {
		var err error
		testHasher, err = password.NewHasher(password.DefaultParams)
		if err != nil {
			panic(err)
		}
	})
	hashMu.Lock()
	defer hashMu.Unlock()
	if h, ok := hashes[pw]; ok {
		return h
	}
	h, err := testHasher.Hash(pw)
	if err != nil {
		t.Fatal(err)
	}
	hashes[pw] = h
	return h
}

// addUser creates a user with testPassword through the shared store. A nil
// allowed list means no per-user limit.
func (g *gateway) addUser(t *testing.T, name string, allowed []string) *store.User {
	t.Helper()
	u := &store.User{Username: name, PasswordHash: hashFor(t, testPassword), AllowedScopes: allowed}
	if err := g.st.CreateUser(context.Background(), u); err != nil {
		t.Fatalf("adding user %s: %v", name, err)
	}
	return u
}

func (g *gateway) updateUser(t *testing.T, id string, fn func(u *store.User)) {
	t.Helper()
	if _, err := g.st.UpdateUser(context.Background(), id, func(u *store.User) error { fn(u); return nil }); err != nil {
		t.Fatalf("updating user %s: %v", id, err)
	}
}

// ---------------------------------------------------------------------------
// Requests.

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) String() string {
	return fmt.Sprintf("%d %q", r.status, r.body)
}

// json decodes the body as a JSON object.
func (r *response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response body is not a JSON object: %v: %s", err, r)
	}
	return m
}

// do sends a request to the gateway (path is relative to gatewayURL unless
// it is a whole URL). hdr holds name/value pairs that are
// added to the request header verbatim (no canonicalization), so that odd
// spellings and repeated headers reach the wire as written.
func (g *gateway) do(t *testing.T, method, path string, body io.Reader, hdr ...string) *response {
	t.Helper()
	if !strings.HasPrefix(path, "http") {
		path = gatewayURL + path
	}
	req, err := http.NewRequest(method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header[hdr[i]] = append(req.Header[hdr[i]], hdr[i+1])
	}
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}
}

// formBody encodes name/value pairs in order; a name may repeat.
func formBody(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, url.QueryEscape(kv[i])+"="+url.QueryEscape(kv[i+1]))
	}
	return strings.Join(parts, "&")
}

func (g *gateway) postForm(t *testing.T, path, body string, hdr ...string) *response {
	t.Helper()
	return g.do(t, http.MethodPost, path, strings.NewReader(body), append([]string{"Content-Type", formType}, hdr...)...)
}

// login posts the password grant to /token; scope "" sends none.
func (g *gateway) login(t *testing.T, user, pw, scope string, hdr ...string) *response {
	t.Helper()
	kv := []string{"grant_type", "password", "username", user, "password", pw}
	if scope != "" {
		kv = append(kv, "scope", scope)
	}
	return g.postForm(t, "/token", formBody(kv...), hdr...)
}

type loginResult struct {
	access, refresh, scope string
	cookie                 *http.Cookie // cookie mode only
	resp                   *response
}

// mustLogin logs user in with testPassword and returns the tokens, from the
// body (body mode) or the cookie (cookie mode).
func (g *gateway) mustLogin(t *testing.T, user, scope string) loginResult {
	t.Helper()
	r := g.login(t, user, testPassword, scope)
	if r.status != http.StatusOK {
		t.Fatalf("login %s: %s", user, r)
	}
	m := r.json(t)
	res := loginResult{resp: r}
	res.access, _ = m["access_token"].(string)
	res.scope, _ = m["scope"].(string)
	res.refresh, _ = m["refresh_token"].(string)
	for _, line := range r.header.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			t.Fatalf("bad Set-Cookie %q: %v", line, err)
		}
		if c.Name == DefaultCookieName {
			res.cookie = c
			res.refresh = c.Value
		}
	}
	if res.access == "" || res.refresh == "" {
		t.Fatalf("login %s: missing token: %s", user, r)
	}
	return res
}

// call sends a request with a bearer token ("" sends no Authorization).
func (g *gateway) call(t *testing.T, method, path, access string, hdr ...string) *response {
	t.Helper()
	if access != "" {
		hdr = append([]string{"Authorization", "Bearer " + access}, hdr...)
	}
	return g.do(t, method, path, nil, hdr...)
}

func (g *gateway) get(t *testing.T, path, access string, hdr ...string) *response {
	t.Helper()
	return g.call(t, http.MethodGet, path, access, hdr...)
}

// refreshJSON posts {"refresh_token": rt} to /refresh.
func (g *gateway) refreshJSON(t *testing.T, rt string, hdr ...string) *response {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"refresh_token": rt})
	return g.do(t, http.MethodPost, "/refresh", strings.NewReader(string(b)),
		append([]string{"Content-Type", "application/json"}, hdr...)...)
}

// refreshCookie posts to /refresh with the refresh cookie set by hand (the
// cookie is Secure, and a cookie jar would not send it over http).
func (g *gateway) refreshCookie(t *testing.T, rt string, hdr ...string) *response {
	t.Helper()
	return g.do(t, http.MethodPost, "/refresh", nil,
		append([]string{"Cookie", DefaultCookieName + "=" + rt}, hdr...)...)
}

// accessOf returns the access token of a 200 token response.
func accessOf(t *testing.T, r *response) string {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("want 200 with a token, got %s", r)
	}
	at, _ := r.json(t)["access_token"].(string)
	if at == "" {
		t.Fatalf("no access_token in %s", r)
	}
	return at
}

// ---------------------------------------------------------------------------
// Assertions.

func wantStatus(t *testing.T, r *response, status int) {
	t.Helper()
	if r.status != status {
		t.Errorf("status: got %s, want %d", r, status)
	}
}

// wantNoStore asserts the RFC 6749 section 5.1 cache headers.
func wantNoStore(t *testing.T, r *response) {
	t.Helper()
	if got := r.header.Values("Cache-Control"); !slices.Equal(got, []string{"no-store"}) {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	if got := r.header.Values("Pragma"); !slices.Equal(got, []string{"no-cache"}) {
		t.Errorf("Pragma = %q, want no-cache", got)
	}
}

// wantOAuthError asserts an RFC 6749 section 5.2 error response.
func wantOAuthError(t *testing.T, r *response, status int, code string) {
	t.Helper()
	wantStatus(t, r, status)
	wantNoStore(t, r)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var m map[string]string
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Errorf("error body is not a JSON object of strings: %v: %s", err, r)
		return
	}
	if m["error"] != code {
		t.Errorf("error = %q, want %q (%s)", m["error"], code, r)
	}
	if m["error_description"] == "" {
		t.Errorf("error_description is empty: %s", r)
	}
	if len(m) != 2 {
		t.Errorf("error body has members besides error and error_description: %s", r)
	}
}

// challenge is the WWW-Authenticate value of the default realm.
func challenge(code string) string {
	if code == "" {
		return `Bearer realm="crudauth"`
	}
	return `Bearer realm="crudauth", error="` + code + `"`
}

// wantDenied asserts a bearer denial: status, exact WWW-Authenticate and
// Cache-Control: no-store.
func wantDenied(t *testing.T, r *response, status int, wwwAuthenticate string) {
	t.Helper()
	wantStatus(t, r, status)
	if got := r.header.Values("WWW-Authenticate"); !slices.Equal(got, []string{wwwAuthenticate}) {
		t.Errorf("WWW-Authenticate = %q, want %q", got, wwwAuthenticate)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
}

// ---------------------------------------------------------------------------
// Token surgery.

var b64 = base64.RawURLEncoding

func splitJWT(t *testing.T, tok string) (header, payload, sig string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS compact token: %q", tok)
	}
	return parts[0], parts[1], parts[2]
}

// decodeSegment base64url-decodes a JWS segment into a JSON object.
func decodeSegment(t *testing.T, seg string) map[string]any {
	t.Helper()
	raw, err := b64.DecodeString(seg)
	if err != nil {
		t.Fatalf("bad segment %q: %v", seg, err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("segment is not JSON: %v", err)
	}
	return m
}

func encodeSegment(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64.EncodeToString(raw)
}

// flipChar replaces the character at i with another base64url character.
func flipChar(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

// liveSession creates a session of user in st, live for a day, and returns
// its ID: tokens minted outside the gateway need one to be accepted.
func liveSession(tb testing.TB, st store.Store, userID string) string {
	tb.Helper()
	sid, err := newLiveSession(st, userID)
	if err != nil {
		tb.Fatal(err)
	}
	return sid
}

func newLiveSession(st store.Store, userID string) (string, error) {
	now := time.Now().UTC().Truncate(time.Second)
	s := &store.Session{UserID: userID, Generation: 1, RotatedAt: now, CreatedAt: now, LastUsedAt: now,
		ExpiresAt: now.Add(24 * time.Hour)}
	_, err := st.CreateSession(context.Background(), s, 0)
	return s.ID, err
}
