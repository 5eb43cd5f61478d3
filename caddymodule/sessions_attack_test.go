package caddymodule

// Attacks on sessions. Same rules as attack_test.go: each test plays one
// attacker against a real Caddy and asserts the status, the error and that
// the backend never saw a request it must not see.

import (
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// sessionAttackAuth: a short reuse grace, so that a replay after it takes
// a second, and the self-service list.
const sessionAttackAuth = "refresh_reuse_grace 1s\n\t\tsessions_path /sessions"

// TestAttackSessionRefreshReplay: a refresh token that leaked is replayed
// after its owner refreshed (or the owner refreshes after the thief did).
// Either way the session dies, every access token of it with it, and
// neither party's refresh token works again.
func TestAttackSessionRefreshReplay(t *testing.T) {
	g := startAttackGateway(t, sessionAttackAuth, gwConfig{})
	g.addUser(t, "alice", nil)
	body := sessionModes[1]

	t.Run("thief replays after the owner refreshed", func(t *testing.T) {
		lr := g.mustLogin(t, "alice", "")
		r := g.refreshJSON(t, lr.refresh)
		owner := body.successor(t, r)
		ownerAT := accessOf(t, r)
		time.Sleep(1100 * time.Millisecond)
		wantOAuthError(t, g.refreshJSON(t, lr.refresh), http.StatusBadRequest, "invalid_grant")
		wantRevoked(t, g, lr.access)
		wantRevoked(t, g, ownerAT)
		wantOAuthError(t, g.refreshJSON(t, owner), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("owner refreshes after the thief did", func(t *testing.T) {
		lr := g.mustLogin(t, "alice", "")
		r := g.refreshJSON(t, lr.refresh)
		thief := body.successor(t, r)
		thiefAT := accessOf(t, r)
		wantLive(t, g, thiefAT)
		time.Sleep(1100 * time.Millisecond)
		wantOAuthError(t, g.refreshJSON(t, lr.refresh), http.StatusBadRequest, "invalid_grant")
		wantRevoked(t, g, thiefAT)
		wantOAuthError(t, g.refreshJSON(t, thief), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("an older generation within the grace of a later rotation", func(t *testing.T) {
		// The grace covers the token spent by the last rotation only.
		lr := g.mustLogin(t, "alice", "")
		rt2 := body.successor(t, g.refreshJSON(t, lr.refresh))
		r := g.refreshJSON(t, rt2)
		rt3, at3 := body.successor(t, r), accessOf(t, r)
		wantOAuthError(t, g.refreshJSON(t, lr.refresh), http.StatusBadRequest, "invalid_grant")
		wantRevoked(t, g, at3)
		wantOAuthError(t, g.refreshJSON(t, rt3), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("replay through the token endpoint's refresh grant", func(t *testing.T) {
		lr := g.mustLogin(t, "alice", "")
		r := g.postForm(t, "/token", formBody("grant_type", "refresh_token", "refresh_token", lr.refresh))
		next, at := body.successor(t, r), accessOf(t, r)
		time.Sleep(1100 * time.Millisecond)
		r = g.postForm(t, "/token", formBody("grant_type", "refresh_token", "refresh_token", lr.refresh))
		wantOAuthError(t, r, http.StatusBadRequest, "invalid_grant")
		wantRevoked(t, g, at)
		wantOAuthError(t, g.refreshJSON(t, next), http.StatusBadRequest, "invalid_grant")
	})
	g.backend.wantNone(t)
}

// TestAttackSessionStolenCookieAfterLogout: a copy of the refresh cookie
// taken before its owner signed out is worth nothing afterwards, whatever
// generation it is.
func TestAttackSessionStolenCookieAfterLogout(t *testing.T) {
	t.Setenv("CRUDAUTH_ATTACK_SECRET", attackSecret)
	g := startGateway(t, gwConfig{auth: strings.Replace(attackAuth, "refresh body", "refresh cookie", 1) + "\n\t\t" + sessionAttackAuth})
	g.addUser(t, "alice", nil)
	cookie := sessionModes[0]
	lr := g.mustLogin(t, "alice", "")
	stolen := lr.refresh
	r := g.refreshCookie(t, lr.refresh)
	current, at := cookie.successor(t, r), accessOf(t, r)

	r = cookie.logout(t, g, current, "Origin", gatewayURL)
	wantStatus(t, r, http.StatusNoContent)
	wantCookieCleared(t, r)
	for _, rt := range []string{stolen, current} {
		wantOAuthError(t, g.refreshCookie(t, rt), http.StatusBadRequest, "invalid_grant")
		wantOAuthError(t, g.postForm(t, "/token", formBody("grant_type", "refresh_token"), "Cookie", DefaultCookieName+"="+rt),
			http.StatusBadRequest, "invalid_grant")
		// A logout with it ends nothing more and tells nothing.
		wantStatus(t, cookie.logout(t, g, rt), http.StatusNoContent)
	}
	wantRevoked(t, g, lr.access)
	wantRevoked(t, g, at)
	// The refresh token is no bearer token either.
	wantDenied(t, g.get(t, "/api", stolen), http.StatusUnauthorized, challenge("invalid_token"))
	g.backend.wantNone(t)
}

// TestAttackSessionDisabledUser: a disabled user's refresh token and access
// tokens are refused at once, and so are the session list, ending a
// session and logging out of all of them with the access token.
func TestAttackSessionDisabledUser(t *testing.T) {
	g := startAttackGateway(t, sessionAttackAuth, gwConfig{})
	alice := g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "")
	g.updateUser(t, alice.ID, func(u *store.User) { u.Disabled = true })

	wantOAuthError(t, g.refreshJSON(t, lr.refresh), http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, g.postForm(t, "/token", formBody("grant_type", "refresh_token", "refresh_token", lr.refresh)),
		http.StatusBadRequest, "invalid_grant")
	wantRevoked(t, g, lr.access)
	wantOAuthError(t, g.get(t, "/sessions", lr.access), http.StatusUnauthorized, "invalid_token")
	wantOAuthError(t, g.call(t, http.MethodDelete, "/sessions/"+sidOf(t, lr.access), lr.access), http.StatusUnauthorized, "invalid_token")
	wantOAuthError(t, g.call(t, http.MethodPost, "/logout?all=true", lr.access), http.StatusUnauthorized, "invalid_token")
	wantOAuthError(t, g.login(t, "alice", testPassword, ""), http.StatusBadRequest, "invalid_grant")
	g.backend.wantNone(t)
}

// TestAttackSessionOtherUsersSession: a signed-in user names another
// user's session at DELETE sessions_path/SID (a sid seen in a log, a
// screenshot, a shared machine): the answer is the one for a sid that does
// not exist, and the other user's session goes on.
func TestAttackSessionOtherUsersSession(t *testing.T) {
	g := startAttackGateway(t, sessionAttackAuth, gwConfig{})
	g.addUser(t, "mallory", nil)
	bob := g.addUser(t, "bob", nil)
	lm := g.mustLogin(t, "mallory", "")
	lb := g.mustLogin(t, "bob", "")
	bobSID := sidOf(t, lb.access)

	unknown := g.call(t, http.MethodDelete, "/sessions/no-such-session", lm.access)
	r := g.call(t, http.MethodDelete, "/sessions/"+bobSID, lm.access)
	wantOAuthError(t, r, http.StatusNotFound, "not_found")
	if string(r.body) != string(unknown.body) {
		t.Errorf("another user's sid answers %q, an unknown one %q", r.body, unknown.body)
	}
	for _, s := range listSessions(t, g, lm.access).Sessions {
		if s.ID == bobSID {
			t.Errorf("mallory's list shows bob's session")
		}
	}
	g.backend.wantNone(t)

	wantStatus(t, g.get(t, "/api", lb.access), http.StatusOK)
	wantIdentity(t, g.backend.wantOne(t), bob.ID, "bob", "read")
	wantLive(t, g, accessOf(t, g.refreshJSON(t, lb.refresh)))
}

// TestAttackSessionForgedSID: tokens signed with the gateway's own key (the
// key is all an attacker would need otherwise) whose only flaw is the sid:
// one the user does not hold, another user's, an ended one, or none. All
// are refused, at the bearer check, the session list, logout and refresh.
func TestAttackSessionForgedSID(t *testing.T) {
	g := startAttackGateway(t, sessionAttackAuth, gwConfig{})
	alice := g.addUser(t, "alice", nil)
	g.addUser(t, "bob", nil)
	la := g.mustLogin(t, "alice", "")
	lb := g.mustLogin(t, "bob", "")
	ended := g.mustLogin(t, "alice", "")
	wantStatus(t, sessionModes[1].logout(t, g, ended.refresh), http.StatusNoContent)

	key := []byte(attackSecret)
	resign := func(tok string, kv ...any) string {
		h, p, _ := splitJWT(t, tok)
		return signHMAC(t, sha256.New, key, decodeSegment(t, h), with(decodeSegment(t, p), kv...))
	}

	t.Run("control: a re-signed copy passes", func(t *testing.T) {
		wantStatus(t, g.get(t, "/api", resign(la.access)), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "read")
	})
	forged := map[string]string{
		"sid unknown":           "not-a-session",
		"sid of another user":   sidOf(t, lb.access),
		"sid of an ended login": sidOf(t, ended.access),
		"sid empty":             "",
	}
	for name, sid := range forged {
		t.Run("access token, "+name, func(t *testing.T) {
			at := resign(la.access, "sid", sid)
			wantRevoked(t, g, at)
			wantOAuthError(t, g.get(t, "/sessions", at), http.StatusUnauthorized, "invalid_token")
			wantOAuthError(t, g.call(t, http.MethodPost, "/logout?all=true", at), http.StatusUnauthorized, "invalid_token")
		})
		t.Run("refresh token, "+name, func(t *testing.T) {
			wantOAuthError(t, g.refreshJSON(t, resign(la.refresh, "sid", sid)), http.StatusBadRequest, "invalid_grant")
		})
	}
	t.Run("access token without sid", func(t *testing.T) {
		at := resign(la.access, "sid", nil)
		wantRevoked(t, g, at)
		wantOAuthError(t, g.get(t, "/sessions", at), http.StatusUnauthorized, "invalid_token")
	})
	t.Run("refresh token without sid or generation", func(t *testing.T) {
		wantOAuthError(t, g.refreshJSON(t, resign(la.refresh, "sid", nil)), http.StatusBadRequest, "invalid_grant")
		wantOAuthError(t, g.refreshJSON(t, resign(la.refresh, "gen", nil)), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("logout naming another user's sid ends nothing of theirs", func(t *testing.T) {
		wantStatus(t, sessionModes[1].logout(t, g, resign(la.refresh, "sid", sidOf(t, lb.access))), http.StatusNoContent)
		wantLive(t, g, lb.access)
		wantLive(t, g, la.access)
	})
	g.backend.wantNone(t)
	// Nothing above ended a real session.
	wantLive(t, g, accessOf(t, g.refreshJSON(t, la.refresh)))
	wantLive(t, g, accessOf(t, g.refreshJSON(t, lb.refresh)))
}

// TestAttackSessionLogoutWithPlantedCookie: a sibling subdomain planted
// its own logout and refresh cookies beside the user's. The user's logout
// must still end the user's session: every token the cookies carry is
// ended, the planter's own session included, which harms no one.
func TestAttackSessionLogoutWithPlantedCookie(t *testing.T) {
	t.Setenv("CRUDAUTH_ATTACK_SECRET", attackSecret)
	g := startGateway(t, gwConfig{auth: strings.Replace(attackAuth, "refresh body", "refresh cookie", 1) + "\n\t\t" + sessionAttackAuth})
	g.addUser(t, "alice", nil)
	g.addUser(t, "mallory", nil)
	victim := g.mustLogin(t, "alice", "")
	planted := g.mustLogin(t, "mallory", "")

	cookie := DefaultCookieName + "_logout=" + planted.refresh + "; " + DefaultCookieName + "_logout=" + victim.refresh +
		"; " + DefaultCookieName + "=" + planted.refresh
	r := g.do(t, http.MethodPost, "/logout", nil, "Cookie", cookie, "Origin", gatewayURL)
	wantStatus(t, r, http.StatusNoContent)
	wantCookieCleared(t, r)
	wantRevoked(t, g, victim.access)
	wantOAuthError(t, g.refreshCookie(t, victim.refresh), http.StatusBadRequest, "invalid_grant")
	// A garbage value beside a real token does not stop the logout either.
	again := g.mustLogin(t, "alice", "")
	r = g.do(t, http.MethodPost, "/logout", nil, "Cookie",
		DefaultCookieName+"_logout=not.a.token; "+DefaultCookieName+"_logout="+again.refresh, "Origin", gatewayURL)
	wantStatus(t, r, http.StatusNoContent)
	wantRevoked(t, g, again.access)
	g.backend.wantNone(t)
}
