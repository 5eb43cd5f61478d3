package caddymodule

// Integration tests of CORS and the refresh cookie's SameSite attribute:
// a real Caddy in front of a recording backend (see integration_test.go).

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// preflightHdr are the headers of a browser's CORS preflight from origin.
func preflightHdr(origin, method string, more ...string) []string {
	return append([]string{"Origin", origin, "Access-Control-Request-Method", method}, more...)
}

// TestIntegrationCORSPreflightPassThrough: a preflight to a route of the
// rules reaches the backend without a token and without identity; every
// other OPTIONS still needs a token.
func TestIntegrationCORSPreflightPassThrough(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `
		default_scopes me:read
		grantable_scopes me:read admin
		public /public/*
		require /admin/* admin
		require *`})
	g.addUser(t, "alice", nil)
	la := g.mustLogin(t, "alice", "")
	const app = "https://app.example"

	for _, path := range []string{"/api/items/1", "/admin/users", "/"} {
		t.Run("preflight to "+path, func(t *testing.T) {
			r := g.do(t, http.MethodOptions, path, nil,
				preflightHdr(app, "DELETE", "Access-Control-Request-Headers", "authorization, content-type")...)
			wantStatus(t, r, http.StatusOK)
			if string(r.body) != "backend ok" {
				t.Errorf("body = %q, want the backend's answer", r.body)
			}
			s := g.backend.wantOne(t)
			if s.method != http.MethodOptions || s.path != path {
				t.Errorf("backend saw %s %s", s.method, s.path)
			}
			if s.header.Get("Access-Control-Request-Method") != "DELETE" || s.header.Get("Origin") != app {
				t.Errorf("backend did not get the preflight's headers: %v", s.header)
			}
			wantNoIdentity(t, s)
		})
	}

	t.Run("preflight with another user's token and forged identity gets none", func(t *testing.T) {
		r := g.do(t, http.MethodOptions, "/admin/users", nil, preflightHdr(app, "GET",
			"Authorization", "Bearer "+la.access,
			"X-User-Id", "admin-id", "x_user_name", "root", "X-User-Scopes", "admin",
			"Cookie", "theme=dark; "+DefaultCookieName+"="+la.refresh)...)
		wantStatus(t, r, http.StatusOK)
		s := g.backend.wantOne(t)
		wantNoIdentity(t, s)
		for _, c := range s.cookies {
			if c.Name == DefaultCookieName {
				t.Errorf("the refresh cookie reached the backend on a preflight")
			}
		}
	})

	for _, tc := range []struct {
		name   string
		method string
		body   string
		hdr    []string
		status int
	}{
		{"OPTIONS with only Origin", http.MethodOptions, "", []string{"Origin", app}, http.StatusUnauthorized},
		{"OPTIONS with only Access-Control-Request-Method", http.MethodOptions, "", []string{"Access-Control-Request-Method", "GET"}, http.StatusUnauthorized},
		{"plain OPTIONS", http.MethodOptions, "", nil, http.StatusUnauthorized},
		{"OPTIONS with two Origins", http.MethodOptions, "", preflightHdr(app, "GET", "Origin", "https://b.example"), http.StatusUnauthorized},
		{"preflight with a body", http.MethodOptions, "_method=DELETE", preflightHdr(app, "GET", "Content-Type", formType), http.StatusUnauthorized},
		{"preflight headers on GET", http.MethodGet, "", preflightHdr(app, "GET"), http.StatusUnauthorized},
		{"lower case options", "options", "", preflightHdr(app, "GET"), http.StatusBadRequest},
		{"mixed case Options", "Options", "", preflightHdr(app, "GET"), http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body *strings.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			var r *response
			if body != nil {
				r = g.do(t, tc.method, "/api/items/1", body, tc.hdr...)
			} else {
				r = g.do(t, tc.method, "/api/items/1", nil, tc.hdr...)
			}
			wantStatus(t, r, tc.status)
			g.backend.wantNone(t)
		})
	}

	t.Run("an OPTIONS with a token is judged as before", func(t *testing.T) {
		wantStatus(t, g.call(t, http.MethodOptions, "/api/x", la.access), http.StatusOK)
		s := g.backend.wantOne(t)
		if s.header.Get("X-User-Name") != "alice" {
			t.Errorf("a bearer OPTIONS lost its identity: %v", identitySeen(s.header))
		}
		wantStatus(t, g.call(t, http.MethodOptions, "/admin/x", la.access), http.StatusForbidden)
		g.backend.wantNone(t)
	})
}

// wantCORS asserts the CORS response headers granting origin, with
// credentials.
func wantCORS(t *testing.T, r *response, origin string) {
	t.Helper()
	if got := r.header.Values("Access-Control-Allow-Origin"); !slices.Equal(got, []string{origin}) {
		t.Errorf("Access-Control-Allow-Origin = %q, want %q", got, origin)
	}
	if got := r.header.Get("Access-Control-Allow-Credentials"); got != "true" {
		t.Errorf("Access-Control-Allow-Credentials = %q, want true", got)
	}
	wantVaryOrigin(t, r)
}

func wantVaryOrigin(t *testing.T, r *response) {
	t.Helper()
	if !slices.Contains(r.header.Values("Vary"), "Origin") {
		t.Errorf("Vary = %q, want Origin among them", r.header.Values("Vary"))
	}
}

// wantNoCORS asserts that nothing in the response grants an origin.
func wantNoCORS(t *testing.T, r *response) {
	t.Helper()
	for k := range r.header {
		if strings.HasPrefix(strings.ToLower(k), "access-control-") {
			t.Errorf("response carries %s: %q", k, r.header.Values(k))
		}
	}
}

// TestIntegrationCORSEndpoints: the gateway answers preflights to its own
// endpoints for allowed_origins, and grants them its answers, errors
// included; any other origin gets no CORS header.
func TestIntegrationCORSEndpoints(t *testing.T) {
	const app = "http://localhost:3000" // same-site with the gateway: ports do not count
	g := startGateway(t, gwConfig{auth: `
		default_scopes me:read
		password_path /password
		allowed_origins ` + app})
	g.addUser(t, "alice", nil)

	for _, path := range []string{"/token", "/refresh", "/password"} {
		t.Run("preflight "+path, func(t *testing.T) {
			r := g.do(t, http.MethodOptions, path, nil,
				preflightHdr(app, "POST", "Access-Control-Request-Headers", "content-type")...)
			wantStatus(t, r, http.StatusNoContent)
			wantCORS(t, r, app)
			for k, want := range map[string]string{
				"Access-Control-Allow-Methods": "POST",
				"Access-Control-Allow-Headers": "Content-Type, Authorization",
				"Access-Control-Max-Age":       "600",
			} {
				if got := r.header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if len(r.body) != 0 {
				t.Errorf("a 204 with a body: %q", r.body)
			}
		})
		for _, origin := range []string{"http://localhost:3001", "https://localhost:3000", "https://evil.example", "null"} {
			t.Run("preflight "+path+" from "+origin, func(t *testing.T) {
				r := g.do(t, http.MethodOptions, path, nil, preflightHdr(origin, "POST")...)
				wantOAuthError(t, r, http.StatusForbidden, "invalid_request")
				wantNoCORS(t, r)
				wantVaryOrigin(t, r)
			})
		}
	}

	var refresh string
	t.Run("login from the allowed origin", func(t *testing.T) {
		r := g.login(t, "alice", testPassword, "", "Origin", app, "Sec-Fetch-Site", "same-site")
		wantStatus(t, r, http.StatusOK)
		wantCORS(t, r, app)
		for _, line := range r.header.Values("Set-Cookie") {
			if c, err := http.ParseSetCookie(line); err == nil && c.Name == DefaultCookieName {
				refresh = c.Value
				if c.SameSite != http.SameSiteStrictMode {
					t.Errorf("cookie SameSite = %v, want Strict by default", c.SameSite)
				}
			}
		}
		if refresh == "" {
			t.Fatalf("no refresh cookie: %q", r.header.Values("Set-Cookie"))
		}
	})
	t.Run("errors carry CORS too", func(t *testing.T) {
		r := g.login(t, "alice", "test-password-wrong", "", "Origin", app)
		wantOAuthError(t, r, http.StatusBadRequest, "invalid_grant")
		wantCORS(t, r, app)
		r = g.do(t, http.MethodPost, "/refresh", nil, "Origin", app)
		wantOAuthError(t, r, http.StatusBadRequest, "invalid_request")
		wantCORS(t, r, app)
		r = g.do(t, http.MethodGet, "/refresh", nil, "Origin", app)
		wantOAuthError(t, r, http.StatusMethodNotAllowed, "invalid_request")
		wantCORS(t, r, app)
		r = g.do(t, http.MethodPost, "/password", strings.NewReader("current_password=x&new_password=y"), "Origin", app, "Content-Type", formType)
		wantOAuthError(t, r, http.StatusUnauthorized, "invalid_request")
		wantCORS(t, r, app)
	})
	t.Run("refresh from the allowed origin", func(t *testing.T) {
		r := g.refreshCookie(t, refresh, "Origin", app, "Sec-Fetch-Site", "same-site")
		accessOf(t, r)
		wantCORS(t, r, app)
	})
	t.Run("same origin: no CORS headers needed", func(t *testing.T) {
		r := g.refreshCookie(t, refresh, "Origin", gatewayURL)
		accessOf(t, r)
		wantNoCORS(t, r)
	})
	t.Run("other origins get no CORS header", func(t *testing.T) {
		for _, origin := range []string{"http://localhost:3001", "https://evil.example"} {
			r := g.refreshCookie(t, refresh, "Origin", origin)
			wantOAuthError(t, r, http.StatusForbidden, "invalid_request")
			wantNoCORS(t, r)
			r = g.login(t, "alice", testPassword, "", "Origin", origin)
			wantOAuthError(t, r, http.StatusForbidden, "invalid_request")
			wantNoCORS(t, r)
		}
	})
	t.Run("an OPTIONS to an endpoint that is not a preflight", func(t *testing.T) {
		r := g.do(t, http.MethodOptions, "/token", nil, "Origin", app)
		wantOAuthError(t, r, http.StatusMethodNotAllowed, "invalid_request")
	})
	g.backend.wantNone(t)
}

// TestIntegrationCORSBodyMode: in body mode allowed_origins get the same
// CORS answers (a JSON refresh body needs a preflight), and no origin is
// refused for its site: there is no cookie.
func TestIntegrationCORSBodyMode(t *testing.T) {
	const app = "https://app.example"
	g := startGateway(t, gwConfig{auth: `
		refresh body
		allowed_origins ` + app})
	g.addUser(t, "alice", nil)
	r := g.do(t, http.MethodOptions, "/refresh", nil, preflightHdr(app, "POST", "Access-Control-Request-Headers", "content-type")...)
	wantStatus(t, r, http.StatusNoContent)
	wantCORS(t, r, app)
	lr := g.login(t, "alice", testPassword, "", "Origin", app, "Sec-Fetch-Site", "cross-site")
	wantStatus(t, lr, http.StatusOK)
	wantCORS(t, lr, app)
	rt, _ := lr.json(t)["refresh_token"].(string)
	r = g.refreshJSON(t, rt, "Origin", app, "Sec-Fetch-Site", "cross-site")
	accessOf(t, r)
	wantCORS(t, r, app)
	g.backend.wantNone(t)
}

// TestIntegrationCookieSameSite: cookie_same_site sets the cookie's
// attribute; a strict or lax cookie with an allowed origin on another site
// is refused, at load when allowed_origins span two sites and at request
// time otherwise; with none, the Origin check guards every cookie
// endpoint.
func TestIntegrationCookieSameSite(t *testing.T) {
	const app = "https://app.example" // another site than http://localhost:9080

	t.Run("load refuses allowed_origins on two sites", func(t *testing.T) {
		for _, ss := range []string{"", "cookie_same_site strict", "cookie_same_site lax"} {
			status, body := loadError(t, testGlobalOptions+`
}
http://localhost:9080 {
	crudauth {
		store memory
		`+ss+`
		allowed_origins https://app.example https://admin.example
	}
	respond "x"
}`)
			if status != http.StatusBadRequest || !strings.Contains(body, sameSiteAdvice) ||
				!strings.Contains(body, "https://app.example and https://admin.example are not same-site") {
				t.Errorf("%q: load answered %d %s", ss, status, body)
			}
		}
		status, body := loadError(t, testGlobalOptions+`
}
http://localhost:9080 {
	crudauth {
		store memory
		cookie_same_site sometimes
	}
	respond "x"
}`)
		if status != http.StatusBadRequest || !strings.Contains(body, `cookie_same_site: \"sometimes\" is not one of strict, lax, none`) {
			t.Errorf("unknown value: load answered %d %s", status, body)
		}
	})

	t.Run("strict cookie, allowed origin on another site", func(t *testing.T) {
		g := startGateway(t, gwConfig{auth: `
		password_path /password
		allowed_origins ` + app})
		g.addUser(t, "alice", nil)
		la := g.mustLogin(t, "alice", "") // no Origin: not a browser
		checks := []*response{
			g.login(t, "alice", testPassword, "", "Origin", app, "Sec-Fetch-Site", "cross-site"),
			g.refreshCookie(t, la.refresh, "Origin", app, "Sec-Fetch-Site", "cross-site"),
			g.do(t, http.MethodPost, "/password", strings.NewReader("current_password=x&new_password=y"),
				"Origin", app, "Content-Type", formType, "Authorization", "Bearer "+la.access),
			g.do(t, http.MethodOptions, "/refresh", nil, preflightHdr(app, "POST")...),
			g.do(t, http.MethodOptions, "/token", nil, preflightHdr(app, "POST")...),
		}
		for i, r := range checks {
			wantOAuthError(t, r, http.StatusBadRequest, "invalid_request")
			if !strings.Contains(string(r.body), sameSiteAdvice) || !strings.Contains(string(r.body), "origin https://app.example is cross-site") {
				t.Errorf("request %d: %s", i, r)
			}
			if sc := r.header.Values("Set-Cookie"); len(sc) != 0 {
				t.Errorf("request %d set a cookie: %q", i, sc)
			}
		}
		g.backend.wantNone(t)
	})

	t.Run("lax cookie", func(t *testing.T) {
		g := startGateway(t, gwConfig{auth: `cookie_same_site lax`})
		g.addUser(t, "alice", nil)
		la := g.mustLogin(t, "alice", "")
		if la.cookie.SameSite != http.SameSiteLaxMode || !la.cookie.Secure || !la.cookie.HttpOnly {
			t.Errorf("cookie: %q", la.resp.header.Values("Set-Cookie"))
		}
		wantOAuthError(t, g.login(t, "alice", testPassword, "", "Origin", app), http.StatusForbidden, "invalid_request")
	})

	t.Run("none: the Origin check guards every cookie endpoint", func(t *testing.T) {
		g := startGateway(t, gwConfig{auth: `
		cookie_same_site none
		password_path /password
		allowed_origins ` + app})
		g.addUser(t, "alice", nil)
		lr := g.login(t, "alice", testPassword, "", "Origin", app, "Sec-Fetch-Site", "cross-site")
		wantStatus(t, lr, http.StatusOK)
		wantCORS(t, lr, app)
		var cookie *http.Cookie
		for _, line := range lr.header.Values("Set-Cookie") {
			if c, err := http.ParseSetCookie(line); err == nil && c.Name == DefaultCookieName {
				cookie = c
			}
		}
		if cookie == nil || cookie.SameSite != http.SameSiteNoneMode || !cookie.Secure || !cookie.HttpOnly || cookie.Path != "/refresh" {
			t.Fatalf("cookie: %q", lr.header.Values("Set-Cookie"))
		}
		at := accessOf(t, lr)
		r := g.refreshCookie(t, cookie.Value, "Origin", app, "Sec-Fetch-Site", "cross-site")
		accessOf(t, r)
		wantCORS(t, r, app)
		r = g.do(t, http.MethodOptions, "/refresh", nil, preflightHdr(app, "POST", "Sec-Fetch-Site", "cross-site")...)
		wantStatus(t, r, http.StatusNoContent)
		wantCORS(t, r, app)

		for _, evil := range [][]string{
			{"Origin", "https://evil.example"},
			{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"},
			{"Origin", "http://app.example"},
			{"Origin", "https://app.example:8443"},
			{"Origin", "null"},
			{"Sec-Fetch-Site", "cross-site"},
			{"Origin", app, "Origin", app},
		} {
			wantOAuthError(t, g.refreshCookie(t, cookie.Value, evil...), http.StatusForbidden, "invalid_request")
			wantOAuthError(t, g.login(t, "alice", testPassword, "", evil...), http.StatusForbidden, "invalid_request")
			wantOAuthError(t, g.do(t, http.MethodPost, "/password", strings.NewReader(formBody("current_password", testPassword, "new_password", "x")),
				append([]string{"Content-Type", formType, "Authorization", "Bearer " + at}, evil...)...), http.StatusForbidden, "invalid_request")
		}
		g.backend.wantNone(t)
	})
}
