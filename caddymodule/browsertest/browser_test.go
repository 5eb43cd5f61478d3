package browsertest

import (
	"fmt"
	"strings"
	"testing"
)

// TestBrowserSameOrigin: the app served from the gateway's own origin logs
// in, calls a protected route, and refreshes with the HttpOnly cookie
// alone, which no script can read.
func TestBrowserSameOrigin(t *testing.T) {
	needBrowser(t)
	startCaddy(t, siteConfig{})
	p := newProfile(t)
	pg := p.open(t, gateway+"/app/")

	lr := pg.login()
	wantStatus(t, "login", lr, 200)
	if lr.str("refresh_token") != "" {
		t.Errorf("cookie mode put the refresh token in the body: %s", lr)
	}
	c := p.refreshCookie(t)
	if c == nil {
		t.Fatalf("the browser did not keep the refresh cookie; it holds %v", p.cookies(t, gateway+"/refresh"))
	}
	if !c.HTTPOnly || !c.Secure || c.Path != "/refresh" || c.SameSite != "Strict" {
		t.Errorf("cookie as the browser keeps it: HttpOnly %v, Secure %v, Path %q, SameSite %q", c.HTTPOnly, c.Secure, c.Path, c.SameSite)
	}

	r := pg.api("/api/me", lr.str("access_token"))
	wantStatus(t, "protected route", r, 200)
	if r.str("user") != user {
		t.Errorf("the backend saw user %q, want %s", r.str("user"), user)
	}
	wantStatus(t, "protected route without a token", pg.fetch(gateway+"/api/me", "{}"), 401)

	rr := pg.refresh()
	wantStatus(t, "refresh with the cookie alone", rr, 200)
	at := rr.str("access_token")
	if at == "" || at == lr.str("access_token") {
		t.Fatalf("refresh gave no new access token: %s", rr)
	}
	wantStatus(t, "protected route with the refreshed token", pg.api("/api/me", at), 200)

	for _, where := range []string{gateway + "/app/", gateway + "/refresh"} {
		// The document of /refresh is the cookie's own path: were the
		// cookie readable by scripts, it would show there.
		other := p.open(t, where)
		if dc := eval[string](other, "document.cookie"); strings.Contains(dc, cookieName) || strings.Contains(dc, c.Value) {
			t.Errorf("document.cookie at %s shows the refresh cookie: %q", where, dc)
		}
	}
	if dc := eval[string](pg, "document.cookie"); strings.Contains(dc, cookieName) {
		t.Errorf("document.cookie shows the refresh cookie: %q", dc)
	}
}

// TestBrowserOtherPortAllowed: a page on another port of the gateway's
// host is another origin of the same site. Listed in allowed_origins, it
// logs in, calls the API (a preflight: Authorization is not a simple
// header) and refreshes through the cookie, preflight included.
func TestBrowserOtherPortAllowed(t *testing.T) {
	needBrowser(t)
	startCaddy(t, siteConfig{allowedOrigins: sameSite})
	p := newProfile(t)
	pg := p.open(t, sameSite+"/")

	lr := pg.login()
	wantStatus(t, "login from "+sameSite, lr, 200)
	if p.refreshCookie(t) == nil {
		t.Fatalf("no refresh cookie after a login from %s", sameSite)
	}
	r := pg.api("/api/me", lr.str("access_token"))
	wantStatus(t, "protected route from "+sameSite, r, 200)
	if r.str("user") != user {
		t.Errorf("the backend saw user %q", r.str("user"))
	}

	wantStatus(t, "refresh from "+sameSite, pg.refresh(), 200)
	// A JSON Content-Type makes the browser ask first: the gateway answers
	// this preflight itself.
	rr := pg.fetch(gateway+"/refresh", `{method: "POST", credentials: "include",
		headers: {"Content-Type": "application/json"}, body: "{}"}`)
	wantStatus(t, "refresh after a preflight", rr, 200)
	if rr.str("access_token") == "" {
		t.Errorf("no access token: %s", rr)
	}
}

// TestBrowserOtherPortNotAllowed: the same page, not listed, gets nothing:
// the gateway grants it no CORS answer and the browser blocks every call.
func TestBrowserOtherPortNotAllowed(t *testing.T) {
	needBrowser(t)
	startCaddy(t, siteConfig{})
	p := newProfile(t)
	// The user logged in on the gateway's own page: the cookie exists.
	wantStatus(t, "login on the gateway's page", p.open(t, gateway+"/app/").login(), 200)
	if p.refreshCookie(t) == nil {
		t.Fatal("no refresh cookie")
	}

	pg := p.open(t, sameSite+"/")
	wantBlocked(t, "login from an unlisted origin", pg.login())
	wantBlocked(t, "refresh from an unlisted origin", pg.refresh())
	wantBlocked(t, "preflighted refresh from an unlisted origin", pg.fetch(gateway+"/refresh",
		`{method: "POST", credentials: "include", headers: {"Content-Type": "application/json"}, body: "{}"}`))
}

// TestBrowserOtherSite: a page on another site (127.0.0.1 against
// localhost) cannot refresh: unlisted, the browser blocks it; listed while
// the cookie is SameSite=Strict, the gateway refuses it and says what to
// change.
func TestBrowserOtherSite(t *testing.T) {
	needBrowser(t)
	t.Run("not listed", func(t *testing.T) {
		startCaddy(t, siteConfig{})
		p := newProfile(t)
		wantStatus(t, "login on the gateway's page", p.open(t, gateway+"/app/").login(), 200)
		pg := p.open(t, crossSite+"/")
		wantBlocked(t, "refresh from another site", pg.refresh())
		wantBlocked(t, "login from another site", pg.login())
	})
	t.Run("not listed, logout", func(t *testing.T) {
		startCaddy(t, siteConfig{})
		p := newProfile(t)
		home := p.open(t, gateway+"/app/")
		wantStatus(t, "login on the gateway's page", home.login(), 200)
		wantBlocked(t, "logout from another site", p.open(t, crossSite+"/").logout())
		// The session lives on: the other site ended nothing.
		wantStatus(t, "refresh on the gateway's page after the other site's logout", home.refresh(), 200)
	})
	t.Run("listed, strict cookie", func(t *testing.T) {
		startCaddy(t, siteConfig{allowedOrigins: crossSite})
		p := newProfile(t)
		wantStatus(t, "login on the gateway's page", p.open(t, gateway+"/app/").login(), 200)
		if p.refreshCookie(t) == nil {
			t.Fatal("no refresh cookie")
		}
		pg := p.open(t, crossSite+"/")
		for what, r := range map[string]fetchResult{"refresh": pg.refresh(), "login": pg.login(), "logout": pg.logout()} {
			wantStatus(t, what+" from another site", r, 400)
			if d := r.str("error_description"); !strings.Contains(d, "set cookie_same_site none, or serve the app from the gateway's site") {
				t.Errorf("%s: error_description %q does not say what to change", what, d)
			}
			if r.str("access_token") != "" {
				t.Errorf("%s from another site got a token", what)
			}
		}
	})
}

// TestBrowserTwoTabsRefresh: two tabs of one browser refresh at the same
// moment with the one cookie. Both succeed (the second gets the successor
// the first caused, within the reuse grace), and the browser ends with a
// cookie that still works: the session did not fork or die.
func TestBrowserTwoTabsRefresh(t *testing.T) {
	needBrowser(t)
	startCaddy(t, siteConfig{})
	p := newProfile(t)
	a, b := p.open(t, gateway+"/app/"), p.open(t, gateway+"/app/")
	wantStatus(t, "login", a.login(), 200)
	before := p.refreshCookie(t)
	if before == nil {
		t.Fatal("no refresh cookie")
	}
	for round := range 3 {
		// Both fetches are in flight before either is awaited.
		a.start(gateway+"/refresh", `{method: "POST", credentials: "include"}`)
		b.start(gateway+"/refresh", `{method: "POST", credentials: "include"}`)
		ra, rb := a.wait(), b.wait()
		wantStatus(t, fmt.Sprintf("round %d, tab A", round), ra, 200)
		wantStatus(t, fmt.Sprintf("round %d, tab B", round), rb, 200)
		for _, r := range []fetchResult{ra, rb} {
			wantStatus(t, "protected route with a tab's token", a.api("/api/me", r.str("access_token")), 200)
		}
	}
	after := p.refreshCookie(t)
	if after == nil || after.Value == before.Value {
		t.Fatalf("the cookie did not rotate: %v", after)
	}
	wantStatus(t, "refresh with the cookie the tabs left", b.refresh(), 200)
}

// TestBrowserLogout: logout ends the session and the cookie; the next
// refresh has nothing to send, and the session's access token is refused
// at once.
func TestBrowserLogout(t *testing.T) {
	needBrowser(t)
	startCaddy(t, siteConfig{})
	p := newProfile(t)
	pg := p.open(t, gateway+"/app/")
	lr := pg.login()
	wantStatus(t, "login", lr, 200)
	wantStatus(t, "refresh", pg.refresh(), 200)
	wantStatus(t, "logout", pg.logout(), 204)
	if c := p.refreshCookie(t); c != nil {
		t.Errorf("the cookie outlived the logout: path %q", c.Path)
	}
	wantStatus(t, "refresh after logout", pg.refresh(), 400)
	wantStatus(t, "the session's access token after logout", pg.api("/api/me", lr.str("access_token")), 401)
	wantStatus(t, "logout again", pg.logout(), 204)
}
