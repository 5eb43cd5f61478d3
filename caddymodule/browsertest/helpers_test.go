package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
)

const (
	adminPort = 2969
	// gateway is the gateway's site; its pages live under /app/.
	gateway = "http://localhost:9069"
	// sameSite is another origin of the gateway's site (another port).
	sameSite = "http://localhost:9070"
	// crossSite is another site: an IP address is never same-site with a
	// name.
	crossSite = "http://127.0.0.1:9070"

	storeName = "browsertest"
	user      = "alice"
	userPass  = "browser-test-password-1"
	// testSecret is an obviously fake HS256 key.
	testSecret = "browser-test-only-hs256-key-0123456789"
	// cookieName is the gateway's default refresh cookie.
	cookieName = "__Secure-crudauth_refresh"
	// evalTimeout bounds one step in the browser.
	evalTimeout = 10 * time.Second
)

// openUsers creates the test user in the memory store the gateway names,
// and keeps the store open (its state lives while a handle is open).
func openUsers() (func(), error) {
	st := memory.Open(storeName, memory.Options{})
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		return nil, err
	}
	hash, err := hasher.Hash(userPass)
	if err != nil {
		return nil, err
	}
	if err := st.CreateUser(context.Background(), &store.User{Username: user, PasswordHash: hash}); err != nil {
		return nil, fmt.Errorf("creating %s: %w", user, err)
	}
	return func() { _ = st.Close() }, nil
}

// backendHandler is the app behind the gateway: an HTML page for any
// document, and /api/... answering with the identity the gateway sent.
func backendHandler(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"user":   r.Header.Get("X-User-Name"),
			"scopes": r.Header.Get("X-User-Scopes"),
		})
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = io.WriteString(w, "<!doctype html><title>app</title><p>app")
}

// siteConfig is what a test varies in the gateway's configuration.
type siteConfig struct {
	// allowedOrigins is the allowed_origins list; "" for none.
	allowedOrigins string
	// cookieSameSite is cookie_same_site; "" for the default.
	cookieSameSite string
}

// startCaddy (re)loads the in-process Caddy: the gateway on gateway's port
// in front of a fresh backend, and the backend's pages, without the
// gateway, on 9070 for sameSite and crossSite. Protected routes take the
// preflights of an allowed origin as the README's SPA recipe does.
func startCaddy(t *testing.T, c siteConfig) {
	t.Helper()
	backend := httptest.NewServer(http.HandlerFunc(backendHandler))
	t.Cleanup(backend.Close)
	upstream := strings.TrimPrefix(backend.URL, "http://")

	var lines, recipe string
	if c.allowedOrigins != "" {
		lines += "\n\t\tallowed_origins " + c.allowedOrigins
		// The SPA recipe: answer the preflights of protected routes,
		// which crudauth passes on without a token, and grant the
		// answers of the API.
		recipe = fmt.Sprintf(`
	@cors_origin header Origin %[1]s
	@cors_preflight {
		method OPTIONS
		header Origin %[1]s
		header Access-Control-Request-Method *
	}
	handle @cors_preflight {
		header Access-Control-Allow-Origin {header.Origin}
		header Access-Control-Allow-Methods "GET, POST, PUT, PATCH, DELETE"
		header Access-Control-Allow-Headers "Authorization, Content-Type"
		header Access-Control-Max-Age 600
		header Vary Origin
		respond 204
	}
	header @cors_origin Access-Control-Allow-Origin {header.Origin}
	header @cors_origin Vary Origin`, c.allowedOrigins)
	}
	if c.cookieSameSite != "" {
		lines += "\n\t\tcookie_same_site " + c.cookieSameSite
	}
	cfg := fmt.Sprintf(`{
	skip_install_trust
	admin localhost:%d
	http_port 9069
	https_port 9468
	grace_period 1ns
}

%s {
	crudauth {
		store memory {
			name %s
		}
		secret %s
		default_scopes me:read
		public /app /app/*%s
	}%s
	reverse_proxy %s
}

%s, %s {
	reverse_proxy %s
}
`, adminPort, gateway, storeName, testSecret, lines, recipe, upstream, sameSite, crossSite, upstream)
	caddytest.NewTester(t).InitServer(cfg, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
}

// profile is a browser profile of its own (a browser context: cookies
// and caches apart from every other test).
type profile struct {
	ctx context.Context
}

func newProfile(t *testing.T) *profile {
	t.Helper()
	needBrowser(t)
	ctx, cancel := chromedp.NewContext(rootCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("new browser context: %v", err)
	}
	return &profile{ctx: ctx}
}

// page is one tab of a profile, showing a document of some origin.
type page struct {
	t   *testing.T
	ctx context.Context
	url string
}

// open opens a new tab of the profile at url and waits for it to load.
func (p *profile) open(t *testing.T, url string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(p.ctx)
	t.Cleanup(cancel)
	// The first Run opens the tab and binds it to the context it gets:
	// that one must not time out.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("new tab: %v", err)
	}
	tctx, tcancel := context.WithTimeout(ctx, evalTimeout)
	defer tcancel()
	if err := chromedp.Do(tctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	return &page{t: t, ctx: ctx, url: url}
}

// cookies returns the cookies the profile holds for url, HttpOnly ones
// included (read over DevTools, not by a script).
func (p *profile) cookies(t *testing.T, url string) []*network.Cookie {
	t.Helper()
	tctx, cancel := context.WithTimeout(p.ctx, evalTimeout)
	defer cancel()
	res, err := chromedp.Run(tctx, func(ctx context.Context, tg *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{url}})
	})
	if err != nil {
		t.Fatalf("reading cookies: %v", err)
	}
	return res.Cookies
}

// refreshCookie returns the profile's refresh cookie, or nil.
func (p *profile) refreshCookie(t *testing.T) *network.Cookie {
	t.Helper()
	for _, c := range p.cookies(t, gateway+"/refresh") {
		if c.Name == cookieName {
			return c
		}
	}
	return nil
}

// eval runs a JavaScript expression in the page and returns its value,
// awaiting a promise.
func eval[T any](pg *page, expr string) T {
	pg.t.Helper()
	tctx, cancel := context.WithTimeout(pg.ctx, evalTimeout)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		pg.t.Fatalf("evaluating in %s: %v\n%s", pg.url, err, expr)
	}
	return v
}

// fetchResult is what a script sees of a fetch: the status (0 when the
// browser blocked the request or its answer, with the error in err), the
// body as JSON (or text), and the CORS grant of the response.
type fetchResult struct {
	Status int            `json:"status"`
	Body   map[string]any `json:"body"`
	Text   string         `json:"text"`
	Err    string         `json:"err"`
}

func (r fetchResult) String() string {
	if r.Err != "" {
		return "blocked: " + r.Err
	}
	return fmt.Sprintf("%d %s", r.Status, r.Text)
}

// str returns a string member of the JSON body.
func (r fetchResult) str(name string) string {
	s, _ := r.Body[name].(string)
	return s
}

// fetch runs fetch(url, init) in the page; init is a JavaScript object
// literal ("{}" for none).
func (pg *page) fetch(url, init string) fetchResult {
	pg.t.Helper()
	return eval[fetchResult](pg, fmt.Sprintf(`(async () => {
		try {
			const r = await fetch(%q, %s);
			const text = await r.text();
			let body = null;
			try { body = JSON.parse(text); } catch (e) {}
			if (body === null || typeof body !== "object" || Array.isArray(body)) body = null;
			return {status: r.status, body, text, err: ""};
		} catch (e) {
			return {status: 0, body: null, text: "", err: String(e)};
		}
	})()`, url, init))
}

// login posts the test user's credentials to the gateway's /token from
// the page, with credentials (cookies) included.
func (pg *page) login() fetchResult {
	pg.t.Helper()
	return pg.fetch(gateway+"/token", fmt.Sprintf(`{method: "POST", credentials: "include",
		body: new URLSearchParams({username: %q, password: %q})}`, user, userPass))
}

// refresh posts to the gateway's /refresh with nothing but the cookie.
func (pg *page) refresh() fetchResult {
	pg.t.Helper()
	return pg.fetch(gateway+"/refresh", `{method: "POST", credentials: "include"}`)
}

// logout posts to the gateway's /logout with nothing but the cookie.
func (pg *page) logout() fetchResult {
	pg.t.Helper()
	return pg.fetch(gateway+"/logout", `{method: "POST", credentials: "include"}`)
}

// start begins fetch(url, init) in the page without waiting for it; wait
// returns its result. Two pages can so have requests in flight at once.
func (pg *page) start(url, init string) {
	pg.t.Helper()
	eval[bool](pg, fmt.Sprintf(`(window.__pending = fetch(%q, %s).then(
		async r => { const text = await r.text(); let body = null;
			try { body = JSON.parse(text); } catch (e) {}
			if (body === null || typeof body !== "object" || Array.isArray(body)) body = null;
			return {status: r.status, body, text, err: ""}; },
		e => ({status: 0, body: null, text: "", err: String(e)})), true)`, url, init))
}

func (pg *page) wait() fetchResult {
	pg.t.Helper()
	return eval[fetchResult](pg, `window.__pending`)
}

// api calls a protected route of the gateway with the access token.
func (pg *page) api(path, access string) fetchResult {
	pg.t.Helper()
	return pg.fetch(gateway+path, fmt.Sprintf(`{headers: {Authorization: "Bearer " + %q}}`, access))
}

// wantStatus fails the test unless r has the status.
func wantStatus(t *testing.T, what string, r fetchResult, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: got %s, want %d", what, r, status)
	}
}

// wantBlocked fails the test unless the browser blocked the fetch.
func wantBlocked(t *testing.T, what string, r fetchResult) {
	t.Helper()
	if r.Status != 0 || r.Err == "" {
		t.Fatalf("%s: got %s, want the browser to block it", what, r)
	}
}
