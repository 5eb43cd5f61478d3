package caddymodule

// Integration tests: a real Caddy (caddytest, in this process) runs the
// gateway in front of an httptest backend that records what it received.
// They share Caddy's fixed ports, so none of them runs in parallel. Every
// test has its own database in a temp dir and adds users through the same
// shared bbolt handle (acquireStore) the running gateway uses.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// TestIntegrationRecipeBodyMode walks the recipe with the refresh token in
// the JSON body: log in, call the backend, refresh, call again.
func TestIntegrationRecipeBodyMode(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `
		refresh body
		default_scopes me:read
		grantable_scopes me:read reports:read`})
	alice := g.addUser(t, "alice", nil)

	r := g.login(t, "alice", testPassword, "")
	wantStatus(t, r, http.StatusOK)
	wantNoStore(t, r)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if sc := r.header.Values("Set-Cookie"); len(sc) != 0 {
		t.Errorf("body mode sets cookies: %q", sc)
	}
	m := r.json(t)
	if m["token_type"] != "bearer" || m["scope"] != "me:read" {
		t.Errorf("token_type/scope: %s", r)
	}
	if exp, _ := m["expires_in"].(float64); exp < 895 || exp > 900 {
		t.Errorf("expires_in = %v, want about 900", m["expires_in"])
	}
	at, _ := m["access_token"].(string)
	rt, _ := m["refresh_token"].(string)
	if at == "" || rt == "" || at == rt {
		t.Fatalf("want distinct access and refresh tokens: %s", r)
	}
	g.backend.wantNone(t) // the token endpoint is the gateway's own

	r = g.get(t, "/api/hello?x=1", at)
	wantStatus(t, r, http.StatusOK)
	if string(r.body) != "backend ok" {
		t.Errorf("body = %q, want the backend's", r.body)
	}
	s := g.backend.wantOne(t)
	if s.path != "/api/hello" || s.requestURI != "/api/hello?x=1" {
		t.Errorf("backend saw %s (path %s)", s.requestURI, s.path)
	}
	wantIdentity(t, s, alice.ID, "alice", "me:read")

	r = g.refreshJSON(t, rt)
	wantStatus(t, r, http.StatusOK)
	wantNoStore(t, r)
	m = r.json(t)
	at2, _ := m["access_token"].(string)
	if at2 == "" || at2 == at {
		t.Errorf("refresh gave no new access token: %s", r)
	}
	// Rotation is on by default: the successor comes in the body.
	if rt2, _ := m["refresh_token"].(string); rt2 == "" || rt2 == rt {
		t.Errorf("refresh did not rotate the refresh token: %s", r)
	}
	if m["token_type"] != "bearer" || m["scope"] != "me:read" {
		t.Errorf("token_type/scope after refresh: %s", r)
	}
	if exp, _ := m["expires_in"].(float64); exp < 895 || exp > 900 {
		t.Errorf("expires_in = %v after refresh", m["expires_in"])
	}
	g.backend.wantNone(t)

	wantStatus(t, g.get(t, "/api/again", at2), http.StatusOK)
	wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "me:read")

	// Cache headers on the error responses of both endpoints too.
	wantOAuthError(t, g.login(t, "alice", "test-password-wrong", ""), http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, g.refreshJSON(t, "not-a-token"), http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, g.do(t, http.MethodPost, "/refresh", nil), http.StatusBadRequest, "invalid_request")
	g.backend.wantNone(t)
}

// TestIntegrationRecipeCookieMode covers the default refresh mode: the
// refresh token in an HttpOnly cookie scoped to /refresh (and the same
// token in the logout cookie scoped to /logout), the origin checks
// that make that safe, and the cookie never reaching the backend.
func TestIntegrationRecipeCookieMode(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `
		default_scopes me:read
		allowed_origins http://localhost:3000
		public /public/*`})
	alice := g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "")

	t.Run("login", func(t *testing.T) {
		wantNoStore(t, lr.resp)
		if _, ok := lr.resp.json(t)["refresh_token"]; ok {
			t.Errorf("cookie mode puts the refresh token in the body: %s", lr.resp)
		}
		c := lr.cookie
		if c == nil {
			t.Fatalf("no refresh cookie in %q", lr.resp.header.Values("Set-Cookie"))
		}
		if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/refresh" ||
			c.MaxAge < 2592000-5 || c.MaxAge > 2592000 || c.Domain != "" {
			t.Errorf("cookie attributes: %q", lr.resp.header.Values("Set-Cookie"))
		}
		wantLogoutCookie(t, lr.resp, c)
	})

	t.Run("refresh with the cookie", func(t *testing.T) {
		r := g.refreshCookie(t, lr.refresh)
		wantStatus(t, r, http.StatusOK)
		wantNoStore(t, r)
		// Rotation: the successor replaces the cookie, with the same
		// attributes.
		var next *http.Cookie
		for _, line := range r.header.Values("Set-Cookie") {
			if c, err := http.ParseSetCookie(line); err == nil && c.Name == DefaultCookieName {
				next = c
			}
		}
		if next == nil || next.Path != "/refresh" || next.Value == "" || next.Value == lr.refresh ||
			!next.HttpOnly || !next.Secure || next.SameSite != http.SameSiteStrictMode || next.MaxAge <= 0 {
			t.Errorf("refresh did not rotate the cookie: %q", r.header.Values("Set-Cookie"))
		}
		at := accessOf(t, r)
		wantStatus(t, g.get(t, "/api", at), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "me:read")
	})

	t.Run("refresh cookie is removed upstream", func(t *testing.T) {
		cookie := "theme=dark; " + DefaultCookieName + "=" + lr.refresh + "; lang=en"
		for _, path := range []string{"/api/x", "/public/x"} {
			wantStatus(t, g.get(t, path, lr.access, "Cookie", cookie), http.StatusOK)
			s := g.backend.wantOne(t)
			var names []string
			for _, c := range s.cookies {
				names = append(names, c.Name+"="+c.Value)
			}
			if !slices.Equal(names, []string{"theme=dark", "lang=en"}) {
				t.Errorf("%s: backend got cookies %q, want theme and lang only", path, names)
			}
			if strings.Contains(strings.Join(s.header.Values("Cookie"), ";"), lr.refresh) {
				t.Errorf("%s: the refresh token reached the backend", path)
			}
		}
	})

	t.Run("origin checks", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			hdr    []string
			status int
		}{
			{"no origin", nil, http.StatusOK},
			{"same origin", []string{"Origin", gatewayURL}, http.StatusOK},
			{"same origin, fetch metadata", []string{"Origin", gatewayURL, "Sec-Fetch-Site", "same-origin"}, http.StatusOK},
			{"allowed origin", []string{"Origin", "http://localhost:3000", "Sec-Fetch-Site", "same-site"}, http.StatusOK},
			{"cross-site origin", []string{"Origin", "https://evil.example"}, http.StatusForbidden},
			{"other port", []string{"Origin", "http://localhost:9081"}, http.StatusForbidden},
			{"null origin", []string{"Origin", "null"}, http.StatusForbidden},
			{"two origins", []string{"Origin", gatewayURL, "Origin", gatewayURL}, http.StatusForbidden},
			{"sec-fetch-site cross-site", []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
			{"cross-site despite same origin", []string{"Origin", gatewayURL, "Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := g.refreshCookie(t, lr.refresh, tc.hdr...)
				if tc.status == http.StatusOK {
					wantStatus(t, r, http.StatusOK)
					wantNoStore(t, r)
				} else {
					wantOAuthError(t, r, tc.status, "invalid_request")
				}
			})
		}
		// The login endpoint gets the same check (before any hashing).
		r := g.login(t, "alice", testPassword, "", "Origin", "https://evil.example")
		wantOAuthError(t, r, http.StatusForbidden, "invalid_request")
		r = g.login(t, "alice", testPassword, "", "Sec-Fetch-Site", "cross-site")
		wantOAuthError(t, r, http.StatusForbidden, "invalid_request")
		g.backend.wantNone(t)
	})

	t.Run("cookie wins over body", func(t *testing.T) {
		body := `{"refresh_token":"garbage"}`
		r := g.do(t, http.MethodPost, "/refresh", strings.NewReader(body),
			"Content-Type", "application/json", "Cookie", DefaultCookieName+"="+lr.refresh)
		wantStatus(t, r, http.StatusOK)

		body = `{"refresh_token":"` + lr.refresh + `"}`
		r = g.do(t, http.MethodPost, "/refresh", strings.NewReader(body),
			"Content-Type", "application/json", "Cookie", DefaultCookieName+"=garbage")
		wantOAuthError(t, r, http.StatusBadRequest, "invalid_grant")

		// With no cookie, the body is used.
		wantStatus(t, g.refreshJSON(t, lr.refresh), http.StatusOK)
	})
}

// TestIntegrationScopes covers what a login is granted and what the rules
// demand.
func TestIntegrationScopes(t *testing.T) {
	g := startGateway(t, gwConfig{
		site: `	@writes method POST PUT DELETE`,
		auth: `
		refresh body
		default_scopes me:read
		grantable_scopes me:read reports:read reports:write
		public /public/*
		require @writes reports:write
		require /reports/* reports:read`})
	alice := g.addUser(t, "alice", nil)
	g.addUser(t, "bob", []string{"me:read", "reports:read"})

	tokens := map[string]string{}
	for _, tc := range []struct {
		name, user, requested, granted string
	}{
		{"defaults", "alice", "", "me:read"},
		{"narrowing", "alice", "reports:read", "reports:read"},
		{"widening is cut to the ceiling", "alice", "me:read reports:write admin", "me:read reports:write"},
		{"nothing grantable", "alice", "admin", ""},
		{"per-user cap", "bob", "me:read reports:read reports:write", "me:read reports:read"},
	} {
		t.Run("login "+tc.name, func(t *testing.T) {
			lr := g.mustLogin(t, tc.user, tc.requested)
			if lr.scope != tc.granted {
				t.Errorf("scope = %q, want %q", lr.scope, tc.granted)
			}
			tokens[tc.name] = lr.access
		})
	}
	if t.Failed() {
		t.FailNow()
	}

	readOnly := tokens["defaults"]
	reports := tokens["narrowing"]
	writer := tokens["widening is cut to the ceiling"]
	empty := tokens["nothing grantable"]
	needRead := `Bearer realm="crudauth", error="insufficient_scope", scope="reports:read"`
	needWrite := `Bearer realm="crudauth", error="insufficient_scope", scope="reports:write"`

	for _, tc := range []struct {
		name, method, path, token string
		status                    int
		challenge                 string // for denials
		scopes                    string // X-User-Scopes the backend must see
	}{
		{"reports without the scope", "GET", "/reports/q1", readOnly, 403, needRead, ""},
		{"reports with the scope", "GET", "/reports/q1", reports, 200, "", "reports:read"},
		{"reports, write token lacks read", "GET", "/reports/q1", writer, 403, needRead, ""},
		{"write rule comes first", "POST", "/reports/q1", reports, 403, needWrite, ""},
		{"write with the scope", "POST", "/reports/q1", writer, 200, "", "me:read reports:write"},
		{"write elsewhere", "DELETE", "/api/thing", readOnly, 403, needWrite, ""},
		{"no rule: any valid token", "GET", "/api/thing", empty, 200, "", ""},
		{"no rule: token needed", "GET", "/api/thing", "", 401, challenge(""), ""},
		{"public: no token needed", "GET", "/public/info", "", 200, "", ""},
		{"public: a bad token is ignored", "GET", "/public/info", "not-a-token", 200, "", ""},
		{"public: a write is public too", "POST", "/public/form", "", 200, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := g.call(t, tc.method, tc.path, tc.token)
			if tc.status != http.StatusOK {
				wantDenied(t, r, tc.status, tc.challenge)
				g.backend.wantNone(t)
				return
			}
			wantStatus(t, r, http.StatusOK)
			s := g.backend.wantOne(t)
			switch {
			case strings.HasPrefix(tc.path, "/public/"):
				wantNoIdentity(t, s)
			case tc.scopes != "":
				wantIdentity(t, s, alice.ID, "alice", tc.scopes)
			default:
				if got := s.header.Get("X-User-Id"); got != alice.ID {
					t.Errorf("X-User-Id = %q", got)
				}
			}
		})
	}
}

// TestIntegrationCeilingLoweredByReload lowers grantable_scopes with a
// reload: the next refresh drops the scope, and access tokens that carry it
// lose the routes that need it at once.
func TestIntegrationCeilingLoweredByReload(t *testing.T) {
	rules := `
		refresh body
		default_scopes me:read
		require /reports/* reports:read`
	g := startGateway(t, gwConfig{auth: rules + `
		grantable_scopes me:read reports:read`})
	alice := g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "me:read reports:read")
	if lr.scope != "me:read reports:read" {
		t.Fatalf("scope = %q", lr.scope)
	}
	wantStatus(t, g.get(t, "/reports/q1", lr.access), http.StatusOK)
	g.backend.take()

	g.load(t, gwConfig{auth: rules + `
		grantable_scopes me:read`})

	r := g.refreshJSON(t, lr.refresh)
	wantStatus(t, r, http.StatusOK)
	if got := r.json(t)["scope"]; got != "me:read" {
		t.Errorf("refresh after the reload granted %q, want me:read", got)
	}
	newAT := accessOf(t, r)

	needRead := `Bearer realm="crudauth", error="insufficient_scope", scope="reports:read"`
	wantDenied(t, g.get(t, "/reports/q1", lr.access), http.StatusForbidden, needRead)
	wantDenied(t, g.get(t, "/reports/q1", newAT), http.StatusForbidden, needRead)
	g.backend.wantNone(t)

	// The old token still works where no dropped scope is needed, and the
	// backend is not told it holds a scope above the ceiling.
	wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
	wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "me:read")

	// A new login asking for the dropped scope does not get it.
	if lr2 := g.mustLogin(t, "alice", "me:read reports:read"); lr2.scope != "me:read" {
		t.Errorf("login after the reload granted %q", lr2.scope)
	}
}

// TestIntegrationEpochRevocation changes users underneath the running
// gateway through the shared store; the very next request sees it.
func TestIntegrationEpochRevocation(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `
		refresh body
		default_scopes me:read
		grantable_scopes me:read reports:read`})
	ctx := context.Background()

	// refused asserts that both tokens of lr are refused now.
	refused := func(t *testing.T, lr loginResult) {
		t.Helper()
		wantDenied(t, g.get(t, "/api", lr.access), http.StatusUnauthorized, challenge("invalid_token"))
		wantOAuthError(t, g.refreshJSON(t, lr.refresh), http.StatusBadRequest, "invalid_grant")
		wantOAuthError(t, g.postForm(t, "/token", formBody("grant_type", "refresh_token", "refresh_token", lr.refresh)),
			http.StatusBadRequest, "invalid_grant")
		g.backend.wantNone(t)
	}
	works := func(t *testing.T, lr loginResult, id, name string) {
		t.Helper()
		wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), id, name, lr.scope)
	}

	t.Run("password change", func(t *testing.T) {
		u := g.addUser(t, "pwuser", nil)
		lr := g.mustLogin(t, "pwuser", "")
		works(t, lr, u.ID, "pwuser")
		if _, err := store.SetPassword(ctx, g.st, u.ID, hashFor(t, testPassword2)); err != nil {
			t.Fatal(err)
		}
		refused(t, lr)
		wantOAuthError(t, g.login(t, "pwuser", testPassword, ""), http.StatusBadRequest, "invalid_grant")
		r := g.login(t, "pwuser", testPassword2, "")
		wantStatus(t, g.get(t, "/api", accessOf(t, r)), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), u.ID, "pwuser", "me:read")
	})

	t.Run("revoke", func(t *testing.T) {
		u := g.addUser(t, "revuser", nil)
		lr := g.mustLogin(t, "revuser", "")
		works(t, lr, u.ID, "revuser")
		if _, err := store.Revoke(ctx, g.st, u.ID); err != nil {
			t.Fatal(err)
		}
		refused(t, lr)
		works(t, g.mustLogin(t, "revuser", ""), u.ID, "revuser")
	})

	t.Run("disabled user", func(t *testing.T) {
		u := g.addUser(t, "disuser", nil)
		lr := g.mustLogin(t, "disuser", "")
		works(t, lr, u.ID, "disuser")
		g.updateUser(t, u.ID, func(u *store.User) { u.Disabled = true })
		refused(t, lr)
		wantOAuthError(t, g.login(t, "disuser", testPassword, ""), http.StatusBadRequest, "invalid_grant")
	})

	t.Run("deleted and re-created user", func(t *testing.T) {
		u := g.addUser(t, "deluser", nil)
		lr := g.mustLogin(t, "deluser", "")
		works(t, lr, u.ID, "deluser")
		if err := g.st.DeleteUser(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		refused(t, lr)
		u2 := g.addUser(t, "deluser", nil)
		if u2.ID == u.ID {
			t.Fatalf("re-created user got the old ID %s", u.ID)
		}
		refused(t, lr)
		works(t, g.mustLogin(t, "deluser", ""), u2.ID, "deluser")
	})

	t.Run("allowed scopes reduced", func(t *testing.T) {
		u := g.addUser(t, "capuser", nil)
		lr := g.mustLogin(t, "capuser", "me:read reports:read")
		works(t, lr, u.ID, "capuser")
		g.updateUser(t, u.ID, func(u *store.User) { u.AllowedScopes = []string{"me:read"} })
		wantDenied(t, g.get(t, "/api", lr.access), http.StatusUnauthorized, challenge("invalid_token"))
		g.backend.wantNone(t)
		// The refresh token still works, cut down to the new list.
		r := g.refreshJSON(t, lr.refresh)
		wantStatus(t, r, http.StatusOK)
		if got := r.json(t)["scope"]; got != "me:read" {
			t.Errorf("refresh granted %q, want me:read", got)
		}
		wantStatus(t, g.get(t, "/api", accessOf(t, r)), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), u.ID, "capuser", "me:read")
	})
}

// forgedIdentity is every identity header in alias spellings a client might
// use to impersonate someone.
var forgedIdentity = []string{
	"X-User-Id", "forged-id-1",
	"x-user-id", "forged-id-2",
	"X_USER_ID", "forged-id-3",
	"x.user.id", "forged-id-4",
	"X-User_Id", "forged-id-5",
	"x_user.ID", "forged-id-6",
	"X~User~Id", "forged-id-7", // CGI-style servers map any punctuation to '_'
	"X+User+Id", "forged-id-8",
	"x!user!name", "root",
	"X*User*Scopes", "admin",
	"X-User-Name", "root",
	"x_user_name", "root",
	"X.User.Name", "root",
	"X-User-Scopes", "admin",
	"x_user_scopes", "admin",
	"X-USER.SCOPES", "admin",
}

// aliasAllowlist makes Caddy keep the `_` and `.` spellings above, which it
// drops by default since v2.11 (GHSA-f59h-q822-g45g, GHSA-49wc-4hcv-v58q),
// so that only crudauth stands between them and the backend.
const aliasAllowlist = `	servers {
		expected_underscore_headers X_USER_ID X-User_Id x_user.ID x_user_name x_user_scopes
		expected_dot_headers x.user.id X.User.Name X-USER.SCOPES
	}`

// TestIntegrationIdentityHeaderStripping is the crudauth counterpart of
// caddy's forward_auth header-injection regression test. It runs with
// Caddy's default server options, and with the alias spellings allowed
// through Caddy's own filter.
func TestIntegrationIdentityHeaderStripping(t *testing.T) {
	g := newGateway(t)
	auth := `
		refresh body
		default_scopes me:read
		public /public/*`
	alice := g.addUser(t, "alice", nil)
	var lr loginResult

	for _, tc := range []struct {
		name string
		cfg  gwConfig
	}{
		{"default server options", gwConfig{auth: auth}},
		{"alias spellings allowed by the server", gwConfig{auth: auth, global: aliasAllowlist,
			// a site without crudauth, as the control
			extra: "http://127.0.0.1:9080 {\n\treverse_proxy " + g.backend.addr() + "\n}"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g.load(t, tc.cfg)
			if lr.access == "" {
				lr = g.mustLogin(t, "alice", "")
			}
			if tc.cfg.extra != "" {
				t.Run("control: aliases reach the backend without crudauth", func(t *testing.T) {
					wantStatus(t, g.get(t, "http://127.0.0.1:9080/raw", "", forgedIdentity...), http.StatusOK)
					got := identitySeen(g.backend.wantOne(t).header)
					n := len(got["x-user-id"]) + len(got["x-user-name"]) + len(got["x-user-scopes"])
					if n < 8 { // the `_` and `.` spellings; Caddy drops the hyphenated ones
						t.Fatalf("only %d forged headers reached the backend (%q): the test would prove nothing", n, got)
					}
				})
			}
			t.Run("protected route", func(t *testing.T) {
				wantStatus(t, g.get(t, "/api", lr.access, forgedIdentity...), http.StatusOK)
				wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "me:read")
			})
			t.Run("public route without a token", func(t *testing.T) {
				wantStatus(t, g.get(t, "/public/x", "", forgedIdentity...), http.StatusOK)
				wantNoIdentity(t, g.backend.wantOne(t))
			})
			t.Run("public route with a token", func(t *testing.T) {
				wantStatus(t, g.get(t, "/public/x", lr.access, forgedIdentity...), http.StatusOK)
				wantNoIdentity(t, g.backend.wantOne(t))
			})
			t.Run("denied request", func(t *testing.T) {
				wantDenied(t, g.get(t, "/api", "", forgedIdentity...), http.StatusUnauthorized, challenge(""))
				g.backend.wantNone(t)
			})
			t.Run("connection header cannot drop the gateway's headers", func(t *testing.T) {
				hdr := []string{"Connection", "X-User-Id, x_user_name", "Connection", "X-USER-SCOPES", "X-User-Id", "forged"}
				wantStatus(t, g.get(t, "/api", lr.access, hdr...), http.StatusOK)
				wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "me:read")
			})
		})
	}
}

// TestIntegrationTokenConfusion: neither token kind is accepted as the other.
func TestIntegrationTokenConfusion(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `
		refresh body
		default_scopes me:read`})
	g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "")

	wantDenied(t, g.get(t, "/api", lr.refresh), http.StatusUnauthorized, challenge("invalid_token"))
	g.backend.wantNone(t)
	wantOAuthError(t, g.refreshJSON(t, lr.access), http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, g.postForm(t, "/token", formBody("grant_type", "refresh_token", "refresh_token", lr.access)),
		http.StatusBadRequest, "invalid_grant")
	g.backend.wantNone(t)
}

// TestIntegrationForgedTokens presents tokens made outside the gateway. The
// key comes from the environment, so a token minted here with the same key
// and claims is the positive control.
func TestIntegrationForgedTokens(t *testing.T) {
	t.Setenv("CRUDAUTH_IT_SECRET", testSecret)
	g := startGateway(t, gwConfig{auth: `
		secret {env.CRUDAUTH_IT_SECRET}
		refresh body
		default_scopes me:read`})
	alice := g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "")
	h, p, sig := splitJWT(t, lr.access)
	hdr := decodeSegment(t, h)
	kid, _ := hdr["kid"].(string)
	sid, _ := decodeSegment(t, p)["sid"].(string)

	mint := func(key string, cfg token.Config, refresh bool) string {
		t.Helper()
		cfg.Key = []byte(key)
		if cfg.Issuer == "" {
			cfg.Issuer = DefaultIssuer
		}
		if cfg.Audience == "" {
			cfg.Audience = DefaultAudience
		}
		m, err := token.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		// The session of the login above: a token minted with the same
		// key and claims, sid included, is as good as the gateway's own.
		subj := token.Subject{UserID: alice.ID, Scopes: scope.MustNew("me:read"), TokenVersion: alice.TokenVersion,
			SessionID: sid, Generation: 1}
		issue := m.IssueAccess
		if refresh {
			issue = m.IssueRefresh
		}
		tok, _, err := issue(subj)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	sign := func(newHash func() hash.Hash, header map[string]any, payload string) string {
		input := encodeSegment(t, header) + "." + payload
		mac := hmac.New(newHash, []byte(testSecret))
		mac.Write([]byte(input))
		return input + "." + b64.EncodeToString(mac.Sum(nil))
	}
	past := func() time.Time { return time.Now().Add(-2 * time.Hour) }

	t.Run("control: same key and claims", func(t *testing.T) {
		wantStatus(t, g.get(t, "/api", mint(testSecret, token.Config{}, false)), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "me:read")
		wantStatus(t, g.refreshJSON(t, mint(testSecret, token.Config{}, true)), http.StatusOK)
	})

	for _, tc := range []struct{ name, tok string }{
		{"alg none", encodeSegment(t, map[string]any{"alg": "none", "typ": "at+jwt"}) + "." + p + "."},
		{"alg none with kid", encodeSegment(t, map[string]any{"alg": "none", "typ": "at+jwt", "kid": kid}) + "." + p + "."},
		{"HS512 with the same key", sign(sha512.New, map[string]any{"alg": "HS512", "typ": "at+jwt", "kid": kid}, p)},
		{"HS256 typ JWT", sign(sha256.New, map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}, p)},
		{"HS256 without kid", sign(sha256.New, map[string]any{"alg": "HS256", "typ": "at+jwt"}, p)},
		{"flipped signature character", h + "." + p + "." + flipChar(sig, len(sig)/2)},
		{"flipped payload character", h + "." + flipChar(p, len(p)/2) + "." + sig},
		{"signature dropped", h + "." + p + "."},
		{"expired", mint(testSecret, token.Config{Now: past}, false)},
		{"other secret", mint("other-test-only-key-9876543210-not-a-secret", token.Config{}, false)},
		{"other audience", mint(testSecret, token.Config{Audience: "someone-else"}, false)},
		{"other issuer", mint(testSecret, token.Config{Issuer: "someone-else"}, false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantDenied(t, g.get(t, "/api", tc.tok), http.StatusUnauthorized, challenge("invalid_token"))
			g.backend.wantNone(t)
		})
	}

	rh, rp, _ := splitJWT(t, lr.refresh)
	for _, tc := range []struct{ name, tok string }{
		{"refresh: alg none", encodeSegment(t, map[string]any{"alg": "none", "typ": "rt+jwt", "kid": kid}) + "." + rp + "."},
		{"refresh: HS512", sign(sha512.New, map[string]any{"alg": "HS512", "typ": "rt+jwt", "kid": kid}, rp)},
		{"refresh: flipped payload", rh + "." + flipChar(rp, len(rp)/2) + "." + strings.Split(lr.refresh, ".")[2]},
		{"refresh: expired", mint(testSecret, token.Config{Now: past, AccessTTL: time.Minute, RefreshTTL: time.Hour}, true)},
		{"refresh: other secret", mint("other-test-only-key-9876543210-not-a-secret", token.Config{}, true)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantOAuthError(t, g.refreshJSON(t, tc.tok), http.StatusBadRequest, "invalid_grant")
		})
	}
}

// TestIntegrationDenials covers the status, challenge and cache headers of
// every kind of bearer denial, and that handle_errors can shape them.
func TestIntegrationDenials(t *testing.T) {
	auth := `
		refresh body
		default_scopes me:read`
	g := startGateway(t, gwConfig{auth: auth})
	g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "")

	for _, tc := range []struct {
		name      string
		hdr       []string
		status    int
		challenge string
	}{
		{"no authorization", nil, 401, challenge("")},
		{"basic scheme", []string{"Authorization", "Basic YWxpY2U6dGVzdC1wYXNzd29yZC0x"}, 401, challenge("")},
		{"token in the query string only", nil, 401, challenge("")},
		{"token in a cookie only", []string{"Cookie", "access_token=" + lr.access}, 401, challenge("")},
		{"empty authorization", []string{"Authorization", ""}, 401, challenge("")},
		{"bearer without token", []string{"Authorization", "Bearer"}, 401, challenge("invalid_token")},
		{"bearer with a space only", []string{"Authorization", "Bearer "}, 401, challenge("invalid_token")},
		{"bearer with a tab", []string{"Authorization", "Bearer\t" + lr.access}, 401, challenge("invalid_token")},
		{"bearer with two words", []string{"Authorization", "Bearer " + lr.access + " extra"}, 401, challenge("invalid_token")},
		{"bearer not a jwt", []string{"Authorization", "Bearer not-a-jwt"}, 401, challenge("invalid_token")},
		{"two authorization headers", []string{"Authorization", "Bearer " + lr.access, "Authorization", "Bearer " + lr.access}, 400, challenge("invalid_request")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/api"
			if strings.Contains(tc.name, "query") {
				path += "?access_token=" + lr.access
			}
			r := g.do(t, http.MethodGet, path, nil, tc.hdr...)
			wantDenied(t, r, tc.status, tc.challenge)
			g.backend.wantNone(t)
		})
	}
	t.Run("scheme in any case", func(t *testing.T) {
		for _, scheme := range []string{"bearer", "BEARER", "bEaReR"} {
			wantStatus(t, g.do(t, http.MethodGet, "/api", nil, "Authorization", scheme+" "+lr.access), http.StatusOK)
			g.backend.wantOne(t)
		}
	})

	t.Run("handle_errors shapes denials", func(t *testing.T) {
		g.load(t, gwConfig{auth: auth + `
		grantable_scopes me:read reports:read
		require /reports/* reports:read`, site: `
	handle_errors {
		respond "denied {err.status_code}" {err.status_code}
	}`})
		for _, tc := range []struct {
			path, token string
			status      int
			challenge   string
		}{
			{"/api", "", 401, challenge("")},
			{"/api", "not-a-jwt", 401, challenge("invalid_token")},
			{"/reports/x", lr.access, 403, `Bearer realm="crudauth", error="insufficient_scope", scope="reports:read"`},
		} {
			r := g.get(t, tc.path, tc.token)
			wantDenied(t, r, tc.status, tc.challenge)
			if want := fmt.Sprintf("denied %d", tc.status); string(r.body) != want {
				t.Errorf("%s: body = %q, want %q from handle_errors", tc.path, r.body, want)
			}
		}
		g.backend.wantNone(t)
		// The token endpoints answer in their own format, not through
		// handle_errors.
		r := g.do(t, http.MethodGet, "/token", nil)
		wantOAuthError(t, r, http.StatusMethodNotAllowed, "invalid_request")
	})
}

// chunked hides a reader's length, so the request is sent chunked.
type chunked struct{ io.Reader }

// TestIntegrationTokenEndpointErrors covers the RFC 6749 section 5.2 errors
// of /token and /refresh.
func TestIntegrationTokenEndpointErrors(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `
		refresh body
		default_scopes me:read`})
	alice := g.addUser(t, "alice", nil)
	dis := g.addUser(t, "disabled-user", nil)
	g.updateUser(t, dis.ID, func(u *store.User) { u.Disabled = true })

	good := formBody("grant_type", "password", "username", "alice", "password", testPassword)
	big := good + "&pad=" + strings.Repeat("a", 9<<10)
	for _, tc := range []struct {
		name, method, path, contentType string
		body                            io.Reader
		status                          int
		code                            string
	}{
		{"GET /token", "GET", "/token", "", nil, 405, "invalid_request"},
		{"PUT /token", "PUT", "/token", formType, strings.NewReader(good), 405, "invalid_request"},
		{"GET /refresh", "GET", "/refresh", "", nil, 405, "invalid_request"},
		{"body over 8 KiB", "POST", "/token", formType, strings.NewReader(big), 413, "invalid_request"},
		{"chunked body over 8 KiB", "POST", "/token", formType, chunked{strings.NewReader(big)}, 413, "invalid_request"},
		{"JSON body", "POST", "/token", "application/json", strings.NewReader(`{"username":"alice","password":"x"}`), 400, "invalid_request"},
		{"multipart body", "POST", "/token", "multipart/form-data; boundary=b", strings.NewReader("--b\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n--b--\r\n"), 400, "invalid_request"},
		{"no content type", "POST", "/token", "", strings.NewReader(good), 400, "invalid_request"},
		{"client_credentials", "POST", "/token", formType, strings.NewReader(formBody("grant_type", "client_credentials")), 400, "unsupported_grant_type"},
		{"authorization_code", "POST", "/token", formType, strings.NewReader(formBody("grant_type", "authorization_code", "code", "x")), 400, "unsupported_grant_type"},
		{"missing password", "POST", "/token", formType, strings.NewReader(formBody("username", "alice")), 400, "invalid_request"},
		{"missing username", "POST", "/token", formType, strings.NewReader(formBody("password", testPassword)), 400, "invalid_request"},
		{"scope with a quote", "POST", "/token", formType, strings.NewReader(good + "&scope=" + "me%22read"), 400, "invalid_scope"},
		{"scope with a backslash", "POST", "/token", formType, strings.NewReader(good + "&scope=" + "me%5Cread"), 400, "invalid_scope"},
		{"repeated field", "POST", "/token", formType, strings.NewReader(good + "&username=bob"), 400, "invalid_request"},
		{"credentials in the query", "POST", "/token?username=alice&password=" + testPassword, formType, strings.NewReader("grant_type=password"), 400, "invalid_request"},
		{"refresh grant without token", "POST", "/token", formType, strings.NewReader(formBody("grant_type", "refresh_token")), 400, "invalid_request"},
		{"refresh: form body", "POST", "/refresh", formType, strings.NewReader("refresh_token=x"), 400, "invalid_request"},
		{"refresh: JSON not an object", "POST", "/refresh", "application/json", strings.NewReader(`["x"]`), 400, "invalid_request"},
		{"refresh: token not a string", "POST", "/refresh", "application/json", strings.NewReader(`{"refresh_token":1}`), 400, "invalid_request"},
		{"refresh: body over 8 KiB", "POST", "/refresh", "application/json", strings.NewReader(`{"refresh_token":"` + strings.Repeat("a", 9<<10) + `"}`), 413, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.contentType != "" {
				hdr = []string{"Content-Type", tc.contentType}
			}
			r := g.do(t, tc.method, tc.path, tc.body, hdr...)
			wantOAuthError(t, r, tc.status, tc.code)
			if tc.status == http.StatusMethodNotAllowed {
				if got := r.header.Values("Allow"); !slices.Equal(got, []string{"POST"}) {
					t.Errorf("Allow = %q, want POST", got)
				}
			}
		})
	}

	t.Run("bad credentials are indistinguishable", func(t *testing.T) {
		unknown := g.login(t, "nobody", testPassword, "")
		wrong := g.login(t, "alice", "test-password-wrong", "")
		disabled := g.login(t, "disabled-user", testPassword, "")
		wantOAuthError(t, unknown, http.StatusBadRequest, "invalid_grant")
		for name, r := range map[string]*response{"wrong password": wrong, "disabled user": disabled} {
			if r.status != unknown.status || string(r.body) != string(unknown.body) {
				t.Errorf("%s answered %s, unknown user %s", name, r, unknown)
			}
			for _, h := range []string{"Content-Type", "Content-Length", "Cache-Control", "Pragma", "Www-Authenticate"} {
				if r.header.Get(h) != unknown.header.Get(h) {
					t.Errorf("%s: %s = %q, unknown user %q", name, h, r.header.Get(h), unknown.header.Get(h))
				}
			}
		}
	})

	t.Run("username is compared without case", func(t *testing.T) {
		r := g.login(t, "ALICE", testPassword, "")
		wantStatus(t, g.get(t, "/api", accessOf(t, r)), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "me:read")
	})
	g.backend.wantNone(t)
}

// TestIntegrationPlaceholders uses the identity placeholders in header_up
// and respond.
func TestIntegrationPlaceholders(t *testing.T) {
	g := startGateway(t, gwConfig{
		auth: `
		refresh body
		default_scopes me:read reports:read`,
		site: `	respond /whoami "id={http.auth.user.id} name={http.auth.user.name} scopes={http.auth.user.scopes}"`,
		proxy: `		header_up X-Auth-Id {http.auth.user.id}
		header_up X-Auth-Name {http.auth.user.name}
		header_up X-Auth-Scopes {http.auth.user.scopes}`,
	})
	alice := g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "")

	r := g.get(t, "/whoami", lr.access)
	wantStatus(t, r, http.StatusOK)
	if want := "id=" + alice.ID + " name=alice scopes=me:read reports:read"; string(r.body) != want {
		t.Errorf("respond body = %q, want %q", r.body, want)
	}
	g.backend.wantNone(t)
	wantDenied(t, g.get(t, "/whoami", ""), http.StatusUnauthorized, challenge(""))

	wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
	s := g.backend.wantOne(t)
	for h, want := range map[string]string{"X-Auth-Id": alice.ID, "X-Auth-Name": "alice", "X-Auth-Scopes": "me:read reports:read"} {
		if got := s.header.Values(h); !slices.Equal(got, []string{want}) {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	wantIdentity(t, s, alice.ID, "alice", "me:read reports:read")
}

// TestIntegrationReload loads a second config on the same database: it must
// not wait on bbolt's file lock, and users, the generated secret and thus
// every token survive.
func TestIntegrationReload(t *testing.T) {
	auth := `
		refresh body
		default_scopes me:read`
	g := startGateway(t, gwConfig{auth: auth})
	alice := g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "")
	wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
	g.backend.take()
	bob := g.addUser(t, "bob", nil) // added between the loads

	// A different config, so that Caddy really reloads.
	d := g.load(t, gwConfig{auth: auth + `
		public /health`})
	t.Logf("reload on the same database took %s", d)
	if d > 1500*time.Millisecond {
		t.Errorf("reload took %s: it waited on the database lock (bbolt's timeout is %s)", d, bolt.DefaultTimeout)
	}

	wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
	wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "me:read")
	wantStatus(t, g.get(t, "/health", ""), http.StatusOK) // the new config is live
	g.backend.take()
	at := accessOf(t, g.refreshJSON(t, lr.refresh))
	wantStatus(t, g.get(t, "/api", at), http.StatusOK)
	g.backend.take()
	bl := g.mustLogin(t, "bob", "")
	wantStatus(t, g.get(t, "/api", bl.access), http.StatusOK)
	wantIdentity(t, g.backend.wantOne(t), bob.ID, "bob", "me:read")

	// A write through the gateway's handle after the reload is seen by the
	// next request.
	if _, err := store.Revoke(context.Background(), g.st, alice.ID); err != nil {
		t.Fatal(err)
	}
	wantDenied(t, g.get(t, "/api", lr.access), http.StatusUnauthorized, challenge("invalid_token"))
}

// TestIntegrationBadConfigRefused: unsafe settings make the load fail with a
// message naming the field.
func TestIntegrationBadConfigRefused(t *testing.T) {
	g := newGateway(t)
	for _, tc := range []struct {
		name, auth string
		want       []string
	}{
		{"short secret", "secret " + testSecret[:31], []string{"secret", "too short", "32"}},
		{"placeholder secret", "secret " + strings.Repeat("s", 32), []string{"secret", "too weak"}},
		{"default_scopes above the ceiling", "default_scopes me:read admin\n\t\tgrantable_scopes me:read",
			[]string{"default_scopes", "grantable_scopes", "admin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := loadError(t, g.caddyfile(gwConfig{auth: tc.auth}))
			if status == http.StatusOK {
				t.Fatalf("config loaded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("load error %q does not mention %q", body, w)
				}
			}
		})
	}
}

// TestIntegrationSecondProcessLocked opens the database in another process
// while this one's Caddy holds it.
func TestIntegrationSecondProcessLocked(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `refresh body`})
	exe, err := os.Executable() // os.Args was rewritten by caddytest
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestHelperProcess$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), helperDBEnv+"="+g.db)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	t.Logf("second process gave up after %s", elapsed)
	if err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	for _, want := range []string{"HELPER-ERROR:", "locked by another process", g.db, "ErrLocked=true"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("helper output lacks %q:\n%s", want, out)
		}
	}
	if elapsed > 5*time.Second {
		t.Errorf("the second process took %s to fail, want a few seconds at most", elapsed)
	}
}

// TestHelperProcess is not a test: TestIntegrationSecondProcessLocked runs
// the test binary again with helperDBEnv set, and this opens the database.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperDBEnv)
	if path == "" {
		t.Skip("helper for TestIntegrationSecondProcessLocked")
	}
	start := time.Now()
	st, err := bolt.Open(path, bolt.Options{})
	if err == nil {
		_ = st.Close()
		fmt.Println("HELPER-OPENED: the database was not locked")
		return
	}
	fmt.Printf("HELPER-ERROR: after %s: %v (ErrLocked=%v)\n",
		time.Since(start).Round(time.Millisecond), err, errors.Is(err, bolt.ErrLocked))
}

// TestIntegrationOAuth2Client drives the gateway with golang.org/x/oauth2:
// the password grant, then a token source that refreshes.
func TestIntegrationOAuth2Client(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `
		refresh body
		default_scopes me:read`})
	alice := g.addUser(t, "alice", nil)

	conf := &oauth2.Config{
		ClientID: "cli",
		Endpoint: oauth2.Endpoint{TokenURL: gatewayURL + "/token", AuthStyle: oauth2.AuthStyleInParams},
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, g.client)

	tok, err := conf.PasswordCredentialsToken(ctx, "alice", testPassword)
	if err != nil {
		t.Fatalf("PasswordCredentialsToken: %v", err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" || !strings.EqualFold(tok.TokenType, "bearer") {
		t.Fatalf("token: %+v", tok)
	}
	if got := tok.Extra("scope"); got != "me:read" {
		t.Errorf("scope = %v", got)
	}
	if until := time.Until(tok.Expiry); until < 14*time.Minute || until > 15*time.Minute {
		t.Errorf("expiry in %s, want about 15m", until)
	}
	get := func(tok *oauth2.Token) {
		t.Helper()
		resp, err := conf.Client(ctx, tok).Get(gatewayURL + "/api")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d", resp.StatusCode)
		}
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "me:read")
	}
	get(tok)

	expired := *tok
	expired.Expiry = time.Now().Add(-time.Minute)
	nt, err := conf.TokenSource(ctx, &expired).Token()
	if err != nil {
		t.Fatalf("refreshing: %v", err)
	}
	if nt.AccessToken == "" || nt.AccessToken == tok.AccessToken {
		t.Errorf("refresh gave no new access token")
	}
	// Rotation: the client library keeps the successor it was handed.
	if nt.RefreshToken == "" || nt.RefreshToken == tok.RefreshToken {
		t.Errorf("the refresh token did not rotate")
	}
	if !nt.Valid() {
		t.Errorf("refreshed token is not valid: expiry %s", nt.Expiry)
	}
	get(nt)
}

// wantLogoutCookie checks that a response setting the refresh cookie rc
// also sets the logout cookie: the same token and attributes, scoped to
// /logout.
func wantLogoutCookie(t *testing.T, r *response, rc *http.Cookie) {
	t.Helper()
	for _, line := range r.header.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil || c.Name != DefaultCookieName+"_logout" {
			continue
		}
		if c.Path != "/logout" || c.Value != rc.Value || !c.HttpOnly || !c.Secure || c.SameSite != rc.SameSite ||
			c.MaxAge != rc.MaxAge || c.Domain != "" {
			t.Errorf("logout cookie %q, refresh cookie %+v", line, rc)
		}
		return
	}
	t.Errorf("no logout cookie: %q", r.header.Values("Set-Cookie"))
}
