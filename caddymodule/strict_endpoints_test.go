package caddymodule

// The gateway's own endpoints (/token, /refresh, the password endpoint) must
// read every request one way only: a request that two readers could take
// apart differently (a member or header given twice, a cookie planted next
// to the real one) is refused rather than resolved by picking one copy.

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// TestAttackPasswordBodyAmbiguity: a password change body that names
// current_password (or new_password) twice, in the same or another letter
// case, is refused; encoding/json would take the last copy, so a guess and
// the real password could travel in one request.
func TestAttackPasswordBodyAmbiguity(t *testing.T) {
	g := startAttackGateway(t, "password_path /account/password", gwConfig{})
	n := 0
	fresh := func(t *testing.T) (*store.User, string) {
		n++
		u := g.addUser(t, fmt.Sprintf("user%d", n), nil)
		return u, g.mustLogin(t, u.Username, "").access
	}
	post := func(t *testing.T, access, ctype, body string, hdr ...string) *response {
		return g.do(t, http.MethodPost, "/account/password", strings.NewReader(body),
			append([]string{"Content-Type", ctype, "Authorization", "Bearer " + access}, hdr...)...)
	}
	for _, tc := range []struct{ name, body string }{
		{"current_password twice", `{"current_password":"wrong-guess","current_password":%q,"new_password":%q}`},
		{"current_password in upper case", `{"current_password":"wrong-guess","CURRENT_PASSWORD":%q,"new_password":%q}`},
		{"current_password in mixed case", `{"current_password":"wrong-guess","Current_Password":%q,"new_password":%q}`},
		{"new_password twice", `{"current_password":%q,"new_password":%q,"NEW_PASSWORD":"other-password-9"}`},
	} {
		t.Run("JSON "+tc.name, func(t *testing.T) {
			u, access := fresh(t)
			r := post(t, access, "application/json", fmt.Sprintf(tc.body, testPassword, testPassword2))
			wantOAuthError(t, r, http.StatusBadRequest, "invalid_request")
			if got := readUserFrom(t, g, u.ID); got.TokenVersion != u.TokenVersion || got.PasswordHash != u.PasswordHash {
				t.Error("the password was changed")
			}
		})
	}
	t.Run("form current_password twice", func(t *testing.T) {
		u, access := fresh(t)
		body := formBody("current_password", "wrong-guess", "current_password", testPassword, "new_password", testPassword2)
		wantOAuthError(t, post(t, access, formType, body), http.StatusBadRequest, "invalid_request")
		if got := readUserFrom(t, g, u.ID); got.TokenVersion != u.TokenVersion {
			t.Error("the password was changed")
		}
	})
	t.Run("control: one of each changes the password", func(t *testing.T) {
		_, access := fresh(t)
		r := post(t, access, "application/json", fmt.Sprintf(`{"current_password":%q,"new_password":%q}`, testPassword, testPassword2))
		wantStatus(t, r, http.StatusOK)
	})
	g.backend.wantNone(t)
}

// TestAttackTwoContentTypes: a body is read under one Content-Type only.
// With two headers Go's Header.Get reads the first and other software the
// last (or both), so the request is refused on every endpoint that reads a
// body, however each copy would have been read.
func TestAttackTwoContentTypes(t *testing.T) {
	g := startAttackGateway(t, "password_path /account/password", gwConfig{})
	alice := g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "")
	loginBody := formBody("grant_type", "password", "username", "alice", "password", testPassword)
	refreshBody := `{"refresh_token":"` + lr.refresh + `"}`
	changeBody := fmt.Sprintf(`{"current_password":%q,"new_password":%q}`, testPassword, testPassword2)
	bearer := "Bearer " + lr.access
	for _, tc := range []struct {
		name, path, body string
		hdr              []string
	}{
		{"token, form then JSON", "/token", loginBody, []string{"Content-Type", formType, "Content-Type", "application/json"}},
		{"token, form twice", "/token", loginBody, []string{"Content-Type", formType, "Content-Type", formType}},
		{"token, another spelling", "/token", loginBody, []string{"Content-Type", formType, "content-type", "text/plain"}},
		{"token, grant refresh_token", "/token", formBody("grant_type", "refresh_token", "refresh_token", lr.refresh),
			[]string{"Content-Type", formType, "Content-Type", "text/plain"}},
		{"refresh, JSON then form", "/refresh", refreshBody, []string{"Content-Type", "application/json", "Content-Type", formType}},
		{"refresh, JSON twice", "/refresh", refreshBody, []string{"Content-Type", "application/json", "Content-Type", "application/json"}},
		{"password, JSON then form", "/account/password", changeBody,
			[]string{"Content-Type", "application/json", "Content-Type", formType, "Authorization", bearer}},
		{"password, JSON twice", "/account/password", changeBody,
			[]string{"Content-Type", "application/json", "Content-Type", "application/json", "Authorization", bearer}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := loginHashes.started.Load()
			r := g.do(t, http.MethodPost, tc.path, strings.NewReader(tc.body), tc.hdr...)
			wantOAuthError(t, r, http.StatusBadRequest, "invalid_request")
			if n := loginHashes.started.Load() - before; n != 0 {
				t.Errorf("%d hash(es) ran for a refused request", n)
			}
		})
	}
	if got := readUserFrom(t, g, alice.ID); got.TokenVersion != alice.TokenVersion {
		t.Error("the password was changed")
	}
	t.Run("control: one Content-Type", func(t *testing.T) {
		wantStatus(t, g.do(t, http.MethodPost, "/refresh", strings.NewReader(refreshBody), "Content-Type", "application/json"), http.StatusOK)
		wantStatus(t, g.postForm(t, "/token", loginBody), http.StatusOK)
	})
	// In cookie mode /refresh may not read the body at all; the request is
	// refused all the same, so that no endpoint answers it either way.
	t.Run("refresh with the cookie", func(t *testing.T) {
		g.load(t, gwConfig{auth: strings.Replace(attackAuth, "refresh body", "refresh cookie", 1)})
		lc := g.mustLogin(t, "alice", "")
		r := g.refreshCookie(t, lc.refresh, "Content-Type", "application/json", "Content-Type", formType)
		wantOAuthError(t, r, http.StatusBadRequest, "invalid_request")
		accessOf(t, g.refreshCookie(t, lc.refresh, "Content-Type", "application/json"))
	})
	g.backend.wantNone(t)
}

// TestAttackOriginSchemeAndPort: in cookie mode the origin check compares
// scheme and port as well as the host. An http site is not the https site
// of the same name, nor is another port. The allowed origin is on another
// site, which takes cookie_same_site none: the Origin check is then all
// that guards the cookie.
func TestAttackOriginSchemeAndPort(t *testing.T) {
	t.Setenv("CRUDAUTH_ATTACK_SECRET", attackSecret)
	g := startGateway(t, gwConfig{auth: strings.Replace(attackAuth, "refresh body", "refresh cookie", 1) +
		"\n\t\tcookie_same_site none\n\t\tallowed_origins https://app.example"})
	g.addUser(t, "alice", nil)
	la := g.mustLogin(t, "alice", "")

	// withHost sends a refresh with the cookie and Origin, the Host header
	// set to host (the site answers to localhost on any port).
	withHost := func(t *testing.T, host, origin string) *response {
		req, err := http.NewRequest(http.MethodPost, gatewayURL+"/refresh", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Cookie", DefaultCookieName+"="+la.refresh)
		req.Header.Set("Origin", origin)
		resp, err := g.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return &response{status: resp.StatusCode, header: resp.Header, body: b}
	}

	for _, tc := range []struct {
		name, host, origin string
		status             int
	}{
		{"https origin of the http site", "localhost:9080", "https://localhost:9080", http.StatusForbidden},
		{"https origin, site on the default port", "localhost", "https://localhost", http.StatusForbidden},
		{"https origin with the http port", "localhost", "https://localhost:80", http.StatusForbidden},
		{"wrong port", "localhost:9080", "http://localhost:9081", http.StatusForbidden},
		{"default port for a site on a port", "localhost:9080", "http://localhost", http.StatusForbidden},
		{"a port for a site on the default port", "localhost", "http://localhost:9080", http.StatusForbidden},
		{"the https port over http", "localhost", "http://localhost:443", http.StatusForbidden},
		{"allowed origin over http", "localhost:9080", "http://app.example", http.StatusForbidden},
		{"allowed origin on another port", "localhost:9080", "https://app.example:8443", http.StatusForbidden},
		{"control: same origin", "localhost:9080", "http://localhost:9080", http.StatusOK},
		{"control: same origin, default port", "localhost", "http://localhost", http.StatusOK},
		{"control: same origin, default port written", "localhost", "http://localhost:80", http.StatusOK},
		{"control: allowed origin", "localhost:9080", "https://app.example", http.StatusOK},
		{"control: allowed origin, default port written", "localhost:9080", "https://app.example:443", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := withHost(t, tc.host, tc.origin)
			if tc.status == http.StatusOK {
				accessOf(t, r)
				return
			}
			wantOAuthError(t, r, tc.status, "invalid_request")
		})
	}
	t.Run("login from the https origin of the http site", func(t *testing.T) {
		wantOAuthError(t, g.login(t, "alice", testPassword, "", "Origin", "https://localhost:9080"), http.StatusForbidden, "invalid_request")
	})
	g.backend.wantNone(t)
}

// TestAttackCookieTossing: a sibling subdomain can set a cookie of the
// refresh cookie's name with Domain=, and the browser then sends both. The
// gateway must not pick one (the first is often the attacker's): it
// refuses. In body mode, where the gateway sets no cookie, a planted one is
// not read at all.
func TestAttackCookieTossing(t *testing.T) {
	t.Setenv("CRUDAUTH_ATTACK_SECRET", attackSecret)
	cookieAuth := strings.Replace(attackAuth, "refresh body", "refresh cookie", 1)
	g := startGateway(t, gwConfig{auth: cookieAuth})
	alice := g.addUser(t, "alice", nil)
	g.addUser(t, "mallory", nil)
	la := g.mustLogin(t, "alice", "")
	lm := g.mustLogin(t, "mallory", "")
	planted := DefaultCookieName + "=" + lm.refresh
	real := DefaultCookieName + "=" + la.refresh

	refresh := func(t *testing.T, hdr ...string) *response {
		return g.do(t, http.MethodPost, "/refresh", nil, hdr...)
	}
	grant := func(t *testing.T, hdr ...string) *response {
		return g.postForm(t, "/token", formBody("grant_type", "refresh_token"), hdr...)
	}
	for _, tc := range []struct {
		name string
		hdr  []string
	}{
		{"one Cookie header, planted first", []string{"Cookie", planted + "; " + real}},
		{"one Cookie header, planted last", []string{"Cookie", real + "; " + planted}},
		{"one Cookie header, the same cookie twice", []string{"Cookie", real + "; " + real}},
		{"two Cookie headers", []string{"Cookie", planted, "Cookie", real}},
		{"two Cookie headers among others", []string{"Cookie", "theme=dark; " + planted, "Cookie", real + "; lang=en"}},
	} {
		t.Run("refresh, "+tc.name, func(t *testing.T) {
			wantOAuthError(t, refresh(t, tc.hdr...), http.StatusBadRequest, "invalid_request")
		})
		t.Run("token refresh grant, "+tc.name, func(t *testing.T) {
			wantOAuthError(t, grant(t, tc.hdr...), http.StatusBadRequest, "invalid_request")
		})
	}
	// Cookie names are case-sensitive (RFC 6265 section 5.3, and browsers
	// keep such cookies apart): a case variant is another cookie, which the
	// gateway never reads, so it cannot stand in for the real one.
	t.Run("control: a case variant is another cookie", func(t *testing.T) {
		variant := strings.ToLower(DefaultCookieName) + "=" + lm.refresh
		r := refresh(t, "Cookie", variant+"; "+real)
		wantStatus(t, g.get(t, "/api", accessOf(t, r)), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "read")
		wantOAuthError(t, refresh(t, "Cookie", variant), http.StatusBadRequest, "invalid_request")
	})
	t.Run("control: one cookie", func(t *testing.T) {
		accessOf(t, refresh(t, "Cookie", "theme=dark; "+real))
	})

	t.Run("body mode ignores a planted cookie", func(t *testing.T) {
		g.load(t, gwConfig{auth: attackAuth})
		lb := g.mustLogin(t, "alice", "")
		body := `{"refresh_token":"` + lb.refresh + `"}`
		r := g.do(t, http.MethodPost, "/refresh", strings.NewReader(body), "Content-Type", "application/json", "Cookie", planted)
		wantStatus(t, g.get(t, "/api", accessOf(t, r)), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "read")

		r = g.postForm(t, "/token", formBody("grant_type", "refresh_token", "refresh_token", lb.refresh), "Cookie", planted)
		wantStatus(t, g.get(t, "/api", accessOf(t, r)), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "read")
	})
	g.backend.wantNone(t)
}
