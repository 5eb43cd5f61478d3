package caddymodule

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/crudauth/caddy-crudauth/internal/users"
)

// TestIntegrationSessionCLI: `caddy crudauth session list|revoke` through a
// running Caddy's admin API, then on the file once Caddy no longer holds
// it. Ending one session refuses its access token on the very next request
// while the user's other session goes on.
func TestIntegrationSessionCLI(t *testing.T) {
	// The gateway of newGateway, with the test's reference to the store
	// released by hand, so that the file is free once Caddy lets go of it.
	g := &gateway{db: filepath.Join(t.TempDir(), "crudauth.db"), backend: newBackend(t), client: newClient()}
	st, key, err := acquireBolt(g.db)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			_ = releaseStore(key)
		}
	}
	t.Cleanup(release)
	g.st = st
	g.load(t, gwConfig{auth: `
		refresh body
		default_scopes me:read`})
	g.addUser(t, "alice", nil)

	login := func(ua string) (access, refresh, sid string) {
		t.Helper()
		r := g.login(t, "alice", testPassword, "", "User-Agent", ua)
		wantStatus(t, r, http.StatusOK)
		m := r.json(t)
		access, _ = m["access_token"].(string)
		refresh, _ = m["refresh_token"].(string)
		_, payload, _ := splitJWT(t, access)
		sid, _ = decodeSegment(t, payload)["sid"].(string)
		if sid == "" || refresh == "" {
			t.Fatalf("login: no sid or refresh token: %s", r)
		}
		return access, refresh, sid
	}
	access1, refresh1, sid1 := login("laptop browser/1.0")
	// A C1 CSI (as UTF-8) and a tab: what an HTTP client may send of the
	// characters a terminal acts on.
	access2, _, sid2 := login("phone app/2.0 \u009b2J\tx")
	wantStatus(t, g.get(t, "/api", access1), http.StatusOK)
	wantStatus(t, g.get(t, "/api", access2), http.StatusOK)
	g.backend.take()

	listOps := `crudauth_admin_operations_total{operation="session_list",outcome="success"}`
	revokeOps := `crudauth_admin_operations_total{operation="session_revoke",outcome="success"}`
	revokeErrs := `crudauth_admin_operations_total{operation="session_revoke",outcome="error"}`
	before := map[string]float64{}
	for _, s := range []string{listOps, revokeOps, revokeErrs} {
		before[s] = metricValue(t, s)
	}

	// Online: both sessions listed, one row each, the controls escaped.
	// Both logins may fall in the same second, so the rows are matched by
	// sid, not by order.
	c := runCLIAgainst(t, g.db, "", "session", "list", "alice").must(t, "session list")
	rows := strings.Split(strings.TrimSuffix(c.out, "\n"), "\n")
	rowOf := func(sid string) string {
		for _, r := range rows {
			if strings.HasPrefix(r, sid+" ") {
				return r
			}
		}
		return ""
	}
	if len(rows) != 3 || !strings.HasPrefix(rows[0], "SID") ||
		!strings.HasSuffix(rowOf(sid1), "  laptop browser/1.0") ||
		!strings.HasSuffix(rowOf(sid2), `  phone app/2.0 \u009b2J\tx`) {
		t.Errorf("session list:\n%s", c.out)
	}
	if strings.ContainsAny(c.out, "\u009b\t") {
		t.Errorf("session list printed the client's controls raw: %q", c.out)
	}
	c = runCLIAgainst(t, g.db, "", "session", "list", "alice", "--json").must(t, "session list --json")
	var views []users.SessionView
	if err := json.Unmarshal([]byte(c.out), &views); err != nil || len(views) != 2 || strings.Contains(c.out, "\u009b") {
		t.Fatalf("session list --json = %q (%v)", c.out, err)
	}
	agents := map[string]string{views[0].ID: views[0].UserAgent, views[1].ID: views[1].UserAgent}
	if agents[sid1] != "laptop browser/1.0" || agents[sid2] != "phone app/2.0 \u009b2J\tx" {
		t.Errorf("session list --json: user agents %q", agents)
	}

	// Another user's name does not reach alice's session; an unknown sid
	// and an unknown user are not found.
	runCLIAgainst(t, g.db, "bob-password-1\n", "add", "bob", "--password-stdin").must(t, "user add bob")
	c = runCLIAgainst(t, g.db, "", "session", "revoke", "bob", sid1)
	if c.err == nil || !strings.Contains(c.err.Error(), `user "bob" has no session "`+sid1+`"`) || !strings.Contains(c.err.Error(), "session list") {
		t.Errorf("revoke of alice's session named under bob: %v", c.err)
	}
	c = runCLIAgainst(t, g.db, "", "session", "revoke", "nobody", sid1)
	if c.err == nil || !strings.Contains(c.err.Error(), `no user "nobody"`) || !strings.Contains(c.err.Error(), "user list") {
		t.Errorf("revoke for an unknown user: %v", c.err)
	}
	wantStatus(t, g.get(t, "/api", access1), http.StatusOK)

	// Revoke one: its access token is refused at once, its refresh token
	// too; the other session goes on.
	c = runCLIAgainst(t, g.db, "", "session", "revoke", "alice", sid1).must(t, "session revoke")
	if c.out != "alice: session "+sid1+" ended\n" {
		t.Errorf("session revoke output %q", c.out)
	}
	wantDenied(t, g.get(t, "/api", access1), http.StatusUnauthorized, challenge("invalid_token"))
	wantOAuthError(t, g.refreshJSON(t, refresh1), http.StatusBadRequest, "invalid_grant")
	wantStatus(t, g.get(t, "/api", access2), http.StatusOK)
	g.backend.take()
	c = runCLIAgainst(t, g.db, "", "session", "revoke", "alice", sid1)
	if c.err == nil || !strings.Contains(c.err.Error(), "has no session") {
		t.Errorf("second revoke: %v", c.err)
	}
	c = runCLIAgainst(t, g.db, "", "session", "list", "alice").must(t, "session list after revoke")
	if strings.Contains(c.out, sid1) || !strings.Contains(c.out, sid2) {
		t.Errorf("session list after revoke:\n%s", c.out)
	}

	for s, want := range map[string]float64{listOps: 3, revokeOps: 1, revokeErrs: 3} {
		if got := metricValue(t, s) - before[s]; got != want {
			t.Errorf("%s went up by %v, want %v", s, got, want)
		}
	}

	// Offline: Caddy lets go of the file, and the commands open it.
	caddytest.NewTester(t).InitServer(testGlobalOptions+`
}
http://localhost:9080 {
	respond "up"
}`, "caddyfile")
	release()
	offline := func(args ...string) cliResult {
		t.Helper()
		c := runCLIAgainst(t, g.db, "", args...)
		if c.err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), c.err, c.errOut)
		}
		if !strings.Contains(c.errOut, "using the database file") {
			t.Errorf("%s did not work on the file: %q", strings.Join(args, " "), c.errOut)
		}
		return c
	}
	c = offline("session", "list", "alice")
	if strings.Count(c.out, "\n") != 2 || !strings.Contains(c.out, sid2+" ") {
		t.Errorf("offline session list:\n%s", c.out)
	}
	if c = runCLIAgainst(t, g.db, "", "session", "revoke", "alice", sid1); c.err == nil || !strings.Contains(c.err.Error(), "has no session") {
		t.Errorf("offline revoke of an ended session: %v", c.err)
	}
	c = offline("session", "revoke", "alice", sid2)
	if c.out != "alice: session "+sid2+" ended\n" {
		t.Errorf("offline session revoke output %q", c.out)
	}
	c = offline("session", "list", "alice")
	if c.out != "no sessions for user alice\n" {
		t.Errorf("offline session list of no sessions: %q", c.out)
	}
	c = offline("session", "list", "alice", "--json")
	if c.out != "[]\n" {
		t.Errorf("offline session list --json of no sessions: %q", c.out)
	}
}
