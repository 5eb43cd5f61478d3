package caddymodule

// The differential property behind the gateway's reading of requests: a
// real Caddy runs the gateway with reverse_proxy in front of a backend that
// judges every request it receives under every reading a backend may give
// it (the raw target, percent-decoded once or more, `\` as `/`, `;params`
// dropped, trailing dots and spaces dropped, dot segments resolved or not;
// the method upper-cased, HEAD as GET, a `_method` override in the query or
// a form body). Each reading must be allowed, by an oracle written apart
// from the gateway's code, for the scopes the gateway vouched for. Targets,
// methods and bodies come from a grammar of segments, dots, encodings and
// case (TestRuleReadings) and from the fuzzer (FuzzRuleReadings).

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// The rules under test, and the oracle that states them independently.
const readingsSite = `
	@writes {
		path /reports /reports/*
		method POST PUT PATCH DELETE
	}
	@reports path /reports /reports/*
	@file_reads {
		path /files /files/*
		method GET
	}
	@file_deletes {
		path /files /files/*
		method DELETE
	}`

const readingsAuth = `
		secret {env.CRUDAUTH_ATTACK_SECRET}
		refresh body
		default_scopes me:read
		grantable_scopes me:read reports:read reports:write admin files:read files:admin
		public /public/*
		require @writes reports:write
		require @reports reports:read
		require /admin /admin/* admin
		require /me /me/* me:read
		require @file_reads files:read
		require @file_deletes files:admin
		public /files /files/*`

// oracleRule is what the rules above demand of (method, path): public, or
// a token holding every scope in need (none: any valid token). Path
// matching folds case, as Caddy's path matcher does.
func oracleRule(method, p string) (public bool, need []string) {
	p = strings.ToLower(p)
	under := func(prefix string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }
	switch {
	case strings.HasPrefix(p, "/public/"):
		return true, nil
	case under("/reports") && slices.Contains([]string{"POST", "PUT", "PATCH", "DELETE"}, method):
		return false, []string{"reports:write"}
	case under("/reports"):
		return false, []string{"reports:read"}
	case under("/admin"):
		return false, []string{"admin"}
	case under("/me"):
		return false, []string{"me:read"}
	case under("/files") && method == "GET":
		return false, []string{"files:read"}
	case under("/files") && method == "DELETE":
		return false, []string{"files:admin"}
	case under("/files"):
		return true, nil // a drop box: anyone may upload
	}
	return false, nil
}

// backendPathReadings are the paths a backend may route raw (the path part
// of the received request target) to.
func backendPathReadings(raw string) []string {
	var decoded []string
	p := raw
	for i := 0; i < 4; i++ {
		// NFKC and Windows best-fit turn fullwidth dots and slashes into
		// ASCII ones.
		decoded = append(decoded, p, strings.NewReplacer("\uff0e", ".", "\uff0f", "/", "\uff3c", `\`).Replace(p))
		s := lenientDecode(p)
		if s == p {
			break
		}
		p = s
	}
	var out []string
	add := func(s string) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, d := range decoded {
		if i := strings.IndexByte(d, 0); i >= 0 {
			d = d[:i] // C-based stacks
		}
		for _, slash := range []string{d, strings.ReplaceAll(d, `\`, "/")} {
			segs := strings.Split(slash, "/")
			params := slices.Clone(segs)
			windows := slices.Clone(segs)
			for i, s := range segs {
				params[i], _, _ = strings.Cut(s, ";")
				windows[i] = strings.TrimRight(params[i], ". ")
				if windows[i] == "" && strings.Contains(params[i], ".") {
					windows[i] = ".." // a name of dots and spaces: assume the worst
				}
			}
			for _, v := range []string{slash, strings.Join(params, "/"), strings.Join(windows, "/")} {
				add(v)
				add(path.Clean("/" + v))
			}
		}
	}
	return out
}

// lenientDecode decodes the valid %XX escapes and keeps invalid ones, as
// Python's unquote does.
func lenientDecode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// paramName is a query or form parameter name as PHP reads it: '.', ' '
// and '[' become '_'.
func paramName(k string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == ' ' || r == '[' {
			return '_'
		}
		return r
	}, strings.TrimLeft(k, " "))
}

// backendMethodReadings are the methods a backend may act on.
func backendMethodReadings(method, rawQuery string, hdr http.Header, body string) []string {
	out := []string{strings.ToUpper(method)}
	if out[0] == "HEAD" {
		out = append(out, "GET")
	}
	if q, err := url.ParseQuery(rawQuery); err == nil || q != nil {
		for k, vs := range q {
			if strings.EqualFold(paramName(k), "_method") {
				for _, v := range vs {
					out = append(out, strings.ToUpper(v))
				}
			}
		}
	}
	// Rack reads a POST without a media type as a form, and Rack and PHP
	// cut the media type at ';', ',' or a space.
	form := len(hdr.Values("Content-Type")) == 0 && body != ""
	for _, ct := range hdr.Values("Content-Type") {
		mt := strings.ToLower(strings.TrimSpace(ct))
		if i := strings.IndexAny(mt, ";, \t"); i >= 0 {
			mt = mt[:i]
		}
		form = form || mt == "" || mt == "application/x-www-form-urlencoded" || mt == "multipart/form-data"
	}
	if form && out[0] == "POST" {
		// multipart bodies are scanned crudely: any _method field counts
		if q, err := url.ParseQuery(body); err == nil || q != nil {
			for k, vs := range q {
				if strings.EqualFold(k, "_method") {
					for _, v := range vs {
						out = append(out, strings.ToUpper(v))
					}
				}
			}
		}
		if i := strings.Index(strings.ToLower(body), `name="_method"`); i >= 0 {
			for _, m := range []string{"GET", "PUT", "PATCH", "DELETE"} {
				out = append(out, m)
			}
		}
	}
	return out
}

// judgedRequest is what the backend received, and its verdict.
type judgedRequest struct {
	method, requestURI string
	violations         []string
}

// judgingBackend receives what the gateway forwards and judges it.
type judgingBackend struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []judgedRequest
}

func newJudgingBackend() *judgingBackend {
	b := &judgingBackend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		j := judgedRequest{method: r.Method, requestURI: r.RequestURI}
		rawPath, rawQuery, _ := strings.Cut(r.RequestURI, "?")
		// What the gateway vouched for. Its own headers are set once and in
		// one spelling (the attack suite checks that); a request passed as
		// public carries none.
		authed := r.Header.Get("X-User-Id") != ""
		held := strings.Fields(r.Header.Get("X-User-Scopes"))
		for _, m := range backendMethodReadings(r.Method, rawQuery, r.Header, string(body)) {
			for _, p := range backendPathReadings(rawPath) {
				public, need := oracleRule(m, p)
				switch {
				case public:
				case !authed:
					j.violations = append(j.violations, fmt.Sprintf("%s %s needs a token; none was checked", m, p))
				default:
					for _, s := range need {
						if !slices.Contains(held, s) {
							j.violations = append(j.violations, fmt.Sprintf("%s %s needs %s; the token holds %q", m, p, s, held))
						}
					}
				}
			}
		}
		b.mu.Lock()
		b.seen = append(b.seen, j)
		b.mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	return b
}

func (b *judgingBackend) take() []judgedRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.seen
	b.seen = nil
	return out
}

// readingsRig is the gateway with the rules above, and one access token for
// each set of scopes a test plays with.
type readingsRig struct {
	addr    string // host:port of the gateway
	backend *judgingBackend
	dir     string
	dbKey   string
	tokens  []string // "" first: no token
	names   []string
}

var readingsScopes = [][]string{nil, {"me:read"}, {"reports:read"}, {"reports:write"}, {"reports:read", "reports:write"}, {"admin"}, {"files:read"}}

// newReadingsRig starts the rig on Caddy's admin port adminPort and the
// site port httpPort. It owns its resources (close releases them) instead
// of tying them to tb, so that a fuzz target can keep one rig for all its
// inputs.
func newReadingsRig(tb testing.TB, adminPort, httpPort int) *readingsRig {
	tb.Helper()
	if err := os.Setenv("CRUDAUTH_ATTACK_SECRET", attackSecret); err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "crudauth-readings-")
	if err != nil {
		tb.Fatal(err)
	}
	rg := &readingsRig{addr: fmt.Sprintf("localhost:%d", httpPort), backend: newJudgingBackend(), dir: dir}
	db := filepath.Join(dir, "crudauth.db")
	st, key, err := acquireBolt(db)
	if err != nil {
		rg.close()
		tb.Fatal(err)
	}
	rg.dbKey = key
	mgr, err := token.New(token.Config{Key: []byte(attackSecret), Issuer: DefaultIssuer, Audience: DefaultAudience,
		AccessTTL: time.Hour, RefreshTTL: 2 * time.Hour})
	if err != nil {
		rg.close()
		tb.Fatal(err)
	}
	for i, scopes := range readingsScopes {
		name := "none"
		tok := ""
		if scopes != nil {
			name = strings.Join(scopes, "+")
			u := &store.User{Username: fmt.Sprintf("user%d", i), PasswordHash: readingsDummyHash}
			if err := st.CreateUser(context.Background(), u); err != nil {
				rg.close()
				tb.Fatal(err)
			}
			set, _ := scope.New(scopes...)
			sid := liveSession(tb, st, u.ID)
			if tok, _, err = mgr.IssueAccess(token.Subject{UserID: u.ID, Scopes: set, TokenVersion: u.TokenVersion, SessionID: sid}); err != nil {
				rg.close()
				tb.Fatal(err)
			}
		}
		rg.tokens = append(rg.tokens, tok)
		rg.names = append(rg.names, name)
	}
	caddytest.NewTester(tb).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort}).InitServer(fmt.Sprintf(`{
	skip_install_trust
	admin localhost:%d
	http_port %d
	grace_period 1ns
}
http://%s {
%s
	crudauth {
		db %s
%s
	}
	reverse_proxy %s
}`, adminPort, httpPort, rg.addr, readingsSite, db, readingsAuth, strings.TrimPrefix(rg.backend.srv.URL, "http://")), "caddyfile")
	if tb.Failed() {
		rg.close()
		tb.FailNow()
	}
	return rg
}

// readingsDummyHash is a syntactically valid argon2id hash of nothing
// anyone uses: these users never log in.
const readingsDummyHash = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func (rg *readingsRig) close() {
	rg.backend.srv.Close()
	if rg.dbKey != "" {
		_ = releaseStore(rg.dbKey)
	}
	_ = os.RemoveAll(rg.dir)
}

// send writes one request exactly as given and returns the status (0 when
// the connection failed or Go's server closed it without an answer).
func (rg *readingsRig) send(tb testing.TB, method, target, contentType, body string, tok int) int {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", rg.addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, rg.addr)
	if t := rg.tokens[tok%len(rg.tokens)]; t != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", t)
	}
	if contentType != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", contentType)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// check sends one request and fails tb for each reading of what reached the
// backend that the token does not allow.
func (rg *readingsRig) check(tb testing.TB, method, target, contentType, body string, tok int) (status int, reached bool) {
	tb.Helper()
	status = rg.send(tb, method, target, contentType, body, tok)
	seen := rg.backend.take()
	for _, s := range seen {
		for _, v := range s.violations {
			tb.Errorf("BYPASS: %s %s (%s, body %q) with token %s reached the backend as %s %s: %s",
				method, target, contentType, body, rg.names[tok%len(rg.names)], s.method, s.requestURI, v)
		}
	}
	return status, len(seen) > 0
}

// The grammar of generated requests: mostly ordinary pieces, so that many
// requests reach the backend, with tricky ones mixed in.
var (
	gramPlainSegments  = []string{"public", "admin", "reports", "me", "files", "q3", "x", "x.json", ".well-known", ""}
	gramTrickySegments = []string{
		"ADMIN", "Admin", "%61dmin", "%2561dmin", "admin.", "admin%20", "admin;x", "reports;v=1", "public%2fadmin",
		"public%2Freports", "%2fadmin", ".", "..", "%2e", "%2e%2e", ".%2e", "%2E.", "%252e%252e", "..;", "..;x",
		"...", ". .", "..%20", "%2e%2e%3b", "public%5cadmin", "%25zz", "x%25", "%EF%BC%8E%EF%BC%8E", "%2561dmin",
	}
	gramTrickySeparators = []string{"//", `\`, "%2f", "%2F", "%5c", "%252f", "/./", ";/"}
	gramPlainMethods     = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
	gramTrickyMethods    = []string{"get", "Get", "head", "post", "Post", "put", "delete", "Delete", "patch", "dElEtE", "M-SEARCH"}
	gramQueries          = []string{"?x=1", "?.method=DELETE", "?%2Emethod=PUT", "?_method=DELETE", "?_METHOD=put", "?%5fmethod=GET", "?a=1&_method=PATCH", "?next=/admin/../x"}
	gramBodies           = []struct{ contentType, body string }{
		{"application/x-www-form-urlencoded", "a=1"},
		{"application/x-www-form-urlencoded", "_method=DELETE"},
		{"application/x-www-form-urlencoded", "_method=get"},
		{"Application/X-WWW-Form-Urlencoded; charset=utf-8", "_method=PUT"},
		{"multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n"},
		{"application/json", `{"_method":"DELETE"}`},
		{"", "_method=DELETE"},
		{"application/x-www-form-urlencoded, text/plain", "_method=DELETE"},
	}
)

// pick returns an element of plain, or of tricky with odds 1 in trickyOdds.
func pick(rnd *rand.Rand, plain, tricky []string, trickyOdds int) string {
	if rnd.IntN(trickyOdds) == 0 {
		return tricky[rnd.IntN(len(tricky))]
	}
	return plain[rnd.IntN(len(plain))]
}

// generate builds one request from the grammar.
func generate(rnd *rand.Rand) (method, target, contentType, body string) {
	var b strings.Builder
	n := 1 + rnd.IntN(4)
	for i := 0; i < n; i++ {
		if i == 0 {
			b.WriteString("/")
		} else {
			b.WriteString(pick(rnd, []string{"/"}, gramTrickySeparators, 6))
		}
		b.WriteString(pick(rnd, gramPlainSegments, gramTrickySegments, 5))
	}
	target = b.String()
	if rnd.IntN(4) == 0 {
		target += gramQueries[rnd.IntN(len(gramQueries))]
	}
	method = pick(rnd, gramPlainMethods, gramTrickyMethods, 6)
	if rnd.IntN(3) == 0 {
		bd := gramBodies[rnd.IntN(len(gramBodies))]
		contentType, body = bd.contentType, bd.body
	}
	return method, target, contentType, body
}

// readingsCases are the requests of the attacker's review and their
// neighbours, kept as seeds and run first.
var readingsCases = []struct{ method, target, contentType, body string }{
	{"GET", "/admin/../public/x", "", ""},
	{"GET", "/admin/delete-everything/..%2f..%2fpublic/x", "", ""},
	{"GET", "/admin/../me", "", ""},
	{"GET", "/reports/q3/../../public/x", "", ""},
	{"GET", `/admin\..\public\x`, "", ""},
	{"GET", "/admin/..;/public/x", "", ""},
	{"GET", "/admin/%2e%2e/public/x", "", ""},
	{"GET", "/admin/%252e%252e/public/x", "", ""},
	{"GET", "/admin", "", ""},
	{"GET", "/ADMIN", "", ""},
	{"delete", "/reports/q3", "", ""},
	{"Delete", "/reports/q3", "", ""},
	{"post", "/reports", "", ""},
	{"pUT", "/reports/q3", "", ""},
	{"HEAD", "/admin/x", "", ""},
	{"POST", "/reports/q3?_method=DELETE", "", ""},
	{"POST", "/me?_method=DELETE", "", ""},
	{"POST", "/reports/q3", "application/x-www-form-urlencoded", "_method=DELETE"},
	{"POST", "/public/x", "application/x-www-form-urlencoded", "_method=DELETE"},
	{"GET", "/public/x", "", ""},
	{"GET", "/reports/q3", "", ""},
	{"HEAD", "/files/x", "", ""},
	{"POST", "/files/x", "application/x-www-form-urlencoded", "_method=DELETE"},
	{"POST", "/files/x", "", "_method=DELETE"},
	{"POST", "/files/x?.method=DELETE", "", ""},
	{"GET", "/public/%252e%252e/admin/%25zz", "", ""},
	{"GET", "/%2561dmin/x%25zz", "", ""},
	{"GET", "/public/%EF%BC%8E%EF%BC%8E/admin", "", ""},
	{"POST", "/files/x", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nGET\r\n--b--\r\n"},
}

// TestRuleReadings: for the review's requests and a few thousand generated
// ones, with every token kind, whatever reaches the backend is allowed under
// every reading. It also checks that the property is not met by refusing
// everything: ordinary requests still reach the backend.
func TestRuleReadings(t *testing.T) {
	rg := newReadingsRig(t, 2999, 9080) // caddytest's ports, as the other integration tests
	defer rg.close()

	reached, statuses := 0, map[int]int{}
	try := func(m, tg, ct, body string, tok int) {
		status, ok := rg.check(t, m, tg, ct, body, tok)
		statuses[status]++
		if ok {
			reached++
		}
	}
	for _, c := range readingsCases {
		for tok := range rg.tokens {
			try(c.method, c.target, c.contentType, c.body, tok)
		}
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	const generated = 3000
	for i := 0; i < generated; i++ {
		m, tg, ct, body := generate(rnd)
		try(m, tg, ct, body, rnd.IntN(len(rg.tokens)))
	}
	t.Logf("%d of %d requests reached the backend; statuses %v", reached, generated+len(readingsCases)*len(rg.tokens), statuses)
	// The grammar must keep reaching the backend, or the property above
	// holds by refusing everything and says nothing.
	if reached < generated/10 {
		t.Errorf("only %d requests reached the backend: the grammar no longer exercises the rules", reached)
	}

	// Controls: the rules still let the right requests through.
	for _, c := range []struct {
		method, target string
		tok            int
		want           int
		contentType    string
	}{
		{"GET", "/public/x", 0, http.StatusOK, ""},
		{"GET", "/reports/q3", 2, http.StatusOK, ""},
		{"DELETE", "/reports/q3", 3, http.StatusOK, ""},
		{"DELETE", "/reports/q3", 2, http.StatusForbidden, ""},
		{"GET", "/admin", 1, http.StatusForbidden, ""},
		{"GET", "/admin/x", 5, http.StatusOK, ""},
		{"HEAD", "/admin/x", 1, http.StatusForbidden, ""},
		{"HEAD", "/files/x", 0, http.StatusUnauthorized, ""},
		{"HEAD", "/files/x", 6, http.StatusOK, ""},
		{"POST", "/files/x", 0, http.StatusOK, "application/octet-stream"},
		{"POST", "/files/x", 0, http.StatusOK, ""}, // no media type and no body: no _method field
		{"GET", "/admin/../public/x", 0, http.StatusBadRequest, ""},
		{"delete", "/reports/q3", 3, http.StatusBadRequest, ""},
		{"POST", "/reports?_method=DELETE", 4, http.StatusBadRequest, ""},
	} {
		if got, _ := rg.check(t, c.method, c.target, c.contentType, "", c.tok); got != c.want {
			t.Errorf("%s %s with %s: status %d, want %d", c.method, c.target, rg.names[c.tok], got, c.want)
		}
	}
}

// FuzzRuleReadings is TestRuleReadings driven by the fuzzer. It keeps one
// Caddy for all inputs. Run with -fuzz it listens on ports of its own (admin
// 2989, site 9089), so that it can run while other test binaries use
// caddytest's; run it with -parallel=1 (scripts/fuzz.sh does), since the
// ports are fixed.
func FuzzRuleReadings(f *testing.F) {
	for _, c := range readingsCases {
		f.Add(c.method, c.target, c.contentType, c.body, uint8(0))
		f.Add(c.method, c.target, c.contentType, c.body, uint8(1))
	}
	var (
		once sync.Once
		rg   *readingsRig
	)
	f.Cleanup(func() {
		if rg != nil {
			rg.close()
		}
	})
	f.Fuzz(func(t *testing.T, method, target, contentType, body string, tok uint8) {
		once.Do(func() {
			if fuzzing() {
				rg = newReadingsRig(t, 2989, 9089)
			} else {
				rg = newReadingsRig(t, 2999, 9080)
			}
		})
		if rg == nil {
			t.Fatal("the rig did not start")
		}
		// Only what can be written on a request line and in a header.
		if method == "" || target == "" || strings.ContainsAny(method+target+contentType, " \r\n") {
			return
		}
		rg.check(t, method, target, contentType, body, int(tok))
	})
}

// fuzzing reports whether the test binary runs with -fuzz.
func fuzzing() bool {
	f := flag.Lookup("test.fuzz")
	return f != nil && f.Value.String() != ""
}
