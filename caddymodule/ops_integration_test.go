package caddymodule

// Integration tests of operations: the admin API and the CLI
// against a running Caddy, the password endpoint, re-hashing on login and
// the metrics. Same rules as integration_test.go: a real Caddy on fixed
// ports, never in parallel.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/crudauth/caddy-crudauth/internal/cli"
	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

const adminURL = "http://localhost:2999"

// adminDo sends a request to the running Caddy's admin API.
func adminDo(t *testing.T, method, path string, body any) *response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, adminURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := newClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return &response{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantAdminError asserts a JSON admin API error whose message contains
// want.
func wantAdminError(t *testing.T, r *response, status int, want string) {
	t.Helper()
	wantStatus(t, r, status)
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Errorf("admin error is not JSON: %s", r)
		return
	}
	if msg, _ := m["error"].(string); !strings.Contains(msg, want) {
		t.Errorf("admin error %q does not contain %q", msg, want)
	}
}

// cliResult is the outcome of one CLI run.
type cliResult struct {
	out, errOut string
	err         error
}

// runCLIAgainst runs `caddy crudauth <args>` (user ..., session ..., backup ...) the way
// an operator would, with the running test Caddy's admin address as the
// default: the file is held by this process's Caddy, so the command must
// find its way through the admin API by itself.
func runCLIAgainst(t *testing.T, db, stdin string, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	env := &cli.Env{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
		LockWait:     200 * time.Millisecond,
		AdminAddress: func() string { return "localhost:2999" },
	}
	var cmd = userCommand(env)
	switch args[0] {
	case "backup":
		cmd, args = backupCommand(env), args[1:]
	case "restore":
		cmd, args = restoreCommand(env), args[1:]
	case "session":
		cmd, args = sessionCommand(env), args[1:]
	case "key":
		cmd, args = keyCommand(env), args[1:]
	}
	if db != "" {
		args = append(args, "--db", db)
	}
	cmd.SetArgs(append(args, "--verbose"))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.Execute()
	return cliResult{out: out.String(), errOut: errOut.String(), err: err}
}

func (c cliResult) must(t *testing.T, what string) cliResult {
	t.Helper()
	if c.err != nil {
		t.Fatalf("%s: %v\n%s%s", what, c.err, c.out, c.errOut)
	}
	if !strings.Contains(c.errOut, "using the admin API at localhost:2999") {
		t.Errorf("%s did not go through the admin API: %q", what, c.errOut)
	}
	if !strings.Contains(c.errOut, "the admin API at localhost:2999 identified itself as admin.api.crudauth") {
		t.Errorf("%s: --verbose did not say which endpoint it identified: %q", what, c.errOut)
	}
	return c
}

// traffic keeps requests flowing through the gateway with one token until
// stopped, counting the answers that were not 200.
type traffic struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	n, bad atomic.Int64
}

func startTraffic(access string) *traffic {
	tr := &traffic{stop: make(chan struct{})}
	client := newClient()
	tr.wg.Go(func() {
		for {
			select {
			case <-tr.stop:
				return
			default:
			}
			req, _ := http.NewRequest(http.MethodGet, gatewayURL+"/api/traffic", nil)
			req.Header.Set("Authorization", "Bearer "+access)
			resp, err := client.Do(req)
			tr.n.Add(1)
			if err != nil {
				tr.bad.Add(1)
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				tr.bad.Add(1)
			}
		}
	})
	return tr
}

func (tr *traffic) finish(t *testing.T) {
	t.Helper()
	close(tr.stop)
	tr.wg.Wait()
	if tr.n.Load() == 0 || tr.bad.Load() != 0 {
		t.Errorf("background traffic: %d requests, %d not 200", tr.n.Load(), tr.bad.Load())
	}
}

// TestIntegrationOpsAdminAPIAndCLI drives user administration through the
// admin API and through the CLI while the gateway runs and serves.
func TestIntegrationOpsAdminAPIAndCLI(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `
		refresh body
		default_scopes me:read
		grantable_scopes me:read reports:read
		password_min_length 10
		require /reports/* reports:read`})
	g.addUser(t, "alice", nil)
	tr := startTraffic(g.mustLogin(t, "alice", "").access)
	defer func() {
		if tr != nil {
			tr.finish(t)
		}
	}()

	// Add a user with the CLI while traffic flows, and log in as them.
	runCLIAgainst(t, g.db, "bob-password-1\n", "add", "bob", "--password-stdin", "--scopes", "me:read reports:read").must(t, "user add")
	r := g.login(t, "bob", "bob-password-1", "me:read reports:read")
	bob := r.json(t)
	wantStatus(t, r, http.StatusOK)
	var v users.View
	bobAccess, _ := bob["access_token"].(string)
	bobRefresh, _ := bob["refresh_token"].(string)
	wantStatus(t, g.get(t, "/reports/q1", bobAccess), http.StatusOK)

	// The configured policy (10 characters) applies through the admin API.
	c := runCLIAgainst(t, g.db, "short-pw1\n", "add", "carol", "--password-stdin")
	if c.err == nil || !strings.Contains(c.err.Error(), "password refused") || !strings.Contains(c.err.Error(), "at least 10") {
		t.Errorf("short password through the admin API: %v", c.err)
	}
	// Errors of the CLI through the API are one actionable line.
	c = runCLIAgainst(t, g.db, "whatever-password\n", "add", "BOB", "--password-stdin")
	if c.err == nil || !strings.Contains(c.err.Error(), "already exists") || strings.Contains(c.err.Error(), "\n") {
		t.Errorf("duplicate add: %v", c.err)
	}
	c = runCLIAgainst(t, g.db, "", "revoke", "nobody")
	if c.err == nil || !strings.Contains(c.err.Error(), `no user "nobody"`) || !strings.Contains(c.err.Error(), "user list") {
		t.Errorf("revoke unknown: %v", c.err)
	}

	// Without --db, and no file at the default path: the running Caddy's
	// only database.
	if _, err := os.Stat(DefaultDBPath()); err == nil {
		t.Fatalf("test setup: %s exists", DefaultDBPath())
	}
	c = runCLIAgainst(t, "", "", "show", "bob").must(t, "show without --db")
	if !strings.Contains(c.out, "bob") {
		t.Errorf("show without --db: %q", c.out)
	}
	if _, err := os.Stat(DefaultDBPath()); err == nil {
		t.Errorf("the CLI created %s although a running Caddy answered", DefaultDBPath())
	}

	// A username with a slash travels path-escaped.
	r = adminDo(t, http.MethodPost, "/crudauth/users", map[string]any{"username": "team/ops", "password": "team-ops-password", "allowed_scopes": []string{}})
	wantStatus(t, r, http.StatusCreated)
	c = runCLIAgainst(t, g.db, "", "show", "team/ops", "--json").must(t, "show team/ops")
	if err := json.Unmarshal([]byte(c.out), &v); err != nil || v.Username != "team/ops" || v.AllowedScopes == nil || len(v.AllowedScopes) != 0 {
		t.Errorf("show team/ops = %q (%v)", c.out, err)
	}
	runCLIAgainst(t, g.db, "", "del", "team/ops").must(t, "del team/ops")

	// The admin API itself: JSON in and out, 404, 409, 400.
	r = adminDo(t, http.MethodGet, "/crudauth/users", nil)
	wantStatus(t, r, http.StatusOK)
	var views []users.View
	if err := json.Unmarshal(r.body, &views); err != nil || len(views) != 2 || views[0].Username != "alice" || views[1].Username != "bob" {
		t.Errorf("list = %s (%v)", r.body, err)
	}
	if bytes.Contains(r.body, []byte("$argon2id$")) {
		t.Error("the admin API shows password hashes")
	}
	wantAdminError(t, adminDo(t, http.MethodGet, "/crudauth/users/nobody", nil), http.StatusNotFound, `no user "nobody"`)
	wantAdminError(t, adminDo(t, http.MethodPost, "/crudauth/users", map[string]any{"username": "Alice", "password": "long-enough-password"}),
		http.StatusConflict, "already exists")
	wantAdminError(t, adminDo(t, http.MethodPost, "/crudauth/users", map[string]any{"username": "", "password": "long-enough-password"}),
		http.StatusBadRequest, "username")
	wantAdminError(t, adminDo(t, http.MethodGet, "/crudauth/users?db=/no/such.db", nil), http.StatusNotFound, "not open")
	wantAdminError(t, adminDo(t, http.MethodGet, "/crudauth/users?db=relative.db", nil), http.StatusBadRequest, "absolute")
	wantAdminError(t, adminDo(t, http.MethodPut, "/crudauth/users/bob/scopes", map[string]any{}), http.StatusBadRequest, "allowed_scopes")
	wantAdminError(t, adminDo(t, http.MethodGet, "/crudauth/users/bob/revoke", nil), http.StatusMethodNotAllowed, "POST")

	// CLI show/list --json through the API.
	c = runCLIAgainst(t, g.db, "", "show", "bob", "--json").must(t, "show --json")
	if err := json.Unmarshal([]byte(c.out), &v); err != nil || v.Username != "bob" || strings.Join(v.AllowedScopes, " ") != "me:read reports:read" {
		t.Errorf("show --json = %q (%v)", c.out, err)
	}
	c = runCLIAgainst(t, g.db, "", "list").must(t, "list")
	if !strings.Contains(c.out, "alice") || !strings.Contains(c.out, "bob") {
		t.Errorf("list = %q", c.out)
	}

	// Remove a scope: the next request with a token carrying it is refused,
	// and the refresh token no longer yields it.
	runCLIAgainst(t, g.db, "", "scopes", "bob", "me:read").must(t, "scopes")
	wantDenied(t, g.get(t, "/reports/q1", bobAccess), http.StatusUnauthorized, challenge("invalid_token"))
	wantDenied(t, g.get(t, "/api/x", bobAccess), http.StatusUnauthorized, challenge("invalid_token"))
	r = g.refreshJSON(t, bobRefresh)
	if m := r.json(t); r.status != http.StatusOK || m["scope"] != "me:read" {
		t.Errorf("refresh after the scope removal: %s", r)
	}
	bobAccess = accessOf(t, r)
	wantStatus(t, g.get(t, "/api/x", bobAccess), http.StatusOK)
	wantDenied(t, g.get(t, "/reports/q1", bobAccess), http.StatusForbidden,
		`Bearer realm="crudauth", error="insufficient_scope", scope="reports:read"`)

	// Reset the password with the CLI: the old tokens are refused on the
	// very next request.
	runCLIAgainst(t, g.db, "bob-password-2\n", "passwd", "bob", "--password-stdin").must(t, "passwd")
	wantDenied(t, g.get(t, "/api/x", bobAccess), http.StatusUnauthorized, challenge("invalid_token"))
	wantOAuthError(t, g.refreshJSON(t, bobRefresh), http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, g.login(t, "bob", "bob-password-1", ""), http.StatusBadRequest, "invalid_grant")
	bobAccess = accessOf(t, g.login(t, "bob", "bob-password-2", ""))
	wantStatus(t, g.get(t, "/api/x", bobAccess), http.StatusOK)

	// Revoke, disable, enable and delete through the admin API directly.
	wantStatus(t, adminDo(t, http.MethodPost, "/crudauth/users/bob/revoke", nil), http.StatusOK)
	wantDenied(t, g.get(t, "/api/x", bobAccess), http.StatusUnauthorized, challenge("invalid_token"))
	bobAccess = accessOf(t, g.login(t, "bob", "bob-password-2", ""))
	wantStatus(t, adminDo(t, http.MethodPost, "/crudauth/users/bob/disable", nil), http.StatusOK)
	wantDenied(t, g.get(t, "/api/x", bobAccess), http.StatusUnauthorized, challenge("invalid_token"))
	wantStatus(t, adminDo(t, http.MethodPost, "/crudauth/users/bob/enable", nil), http.StatusOK)
	// disabling bumped the epoch: enabling does not bring the old token back
	wantDenied(t, g.get(t, "/api/x", bobAccess), http.StatusUnauthorized, challenge("invalid_token"))
	bobAccess = accessOf(t, g.login(t, "bob", "bob-password-2", ""))
	wantStatus(t, g.get(t, "/api/x", bobAccess), http.StatusOK)
	// routes are only under /crudauth/users/: another prefix touches no user
	wantStatus(t, adminDo(t, http.MethodDelete, "/crudauth/backup/bob", nil), http.StatusNotFound)
	wantStatus(t, adminDo(t, http.MethodPost, "/crudauth/import/bob/revoke", nil), http.StatusNotFound)
	wantStatus(t, g.get(t, "/api/x", bobAccess), http.StatusOK)
	runCLIAgainst(t, g.db, "", "del", "bob").must(t, "del")
	wantDenied(t, g.get(t, "/api/x", bobAccess), http.StatusUnauthorized, challenge("invalid_token"))

	// Import: a bad line names its number and nothing is imported.
	dir := t.TempDir()
	hash := hashFor(t, testPassword)
	bc, err := bcrypt.GenerateFromPassword([]byte("bcrypt-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.csv")
	writeFile(t, bad, "username,password_hash,allowed_scopes\n"+
		"dave,"+hash+",me:read\n"+
		"erin,"+string(bc)+",\n"+
		"frank,plaintext-password,\n")
	c = runCLIAgainst(t, g.db, "", "import", bad)
	if c.err == nil || !strings.Contains(c.err.Error(), "line 4") || !strings.Contains(c.err.Error(), "nothing imported") {
		t.Errorf("bad import: %v", c.err)
	}
	for _, name := range []string{"dave", "erin", "frank"} {
		if _, err := g.st.GetUserByName(context.Background(), name); err == nil {
			t.Errorf("%s was imported by a failed import", name)
		}
	}
	good := filepath.Join(dir, "good.json")
	writeFile(t, good, fmt.Sprintf(`[
  {"username": "dave", "password_hash": %q, "allowed_scopes": ["me:read"]},
  {"username": "erin", "password_hash": %q}
]`, hash, bc))
	c = runCLIAgainst(t, g.db, "", "import", good).must(t, "import")
	if !strings.Contains(c.out, "imported 2 users") {
		t.Errorf("import output %q", c.out)
	}
	wantStatus(t, g.login(t, "dave", testPassword, ""), http.StatusOK)
	wantStatus(t, g.login(t, "erin", "bcrypt-password", ""), http.StatusOK)
	c = runCLIAgainst(t, g.db, "", "import", good)
	if c.err == nil || !strings.Contains(c.err.Error(), "line 2") || !strings.Contains(c.err.Error(), "already exists") {
		t.Errorf("import of existing users: %v", c.err)
	}

	// A backup while serving opens as a database with every user in it.
	want := map[string]bool{}
	if err := g.st.ListUsers(context.Background(), func(u *store.User) error { want[u.ID] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup.db")
	c = runCLIAgainst(t, g.db, "", "backup", backup, "--format", "bolt").must(t, "backup")
	if !strings.Contains(c.out, fmt.Sprintf("backup of %d users", len(want))) {
		t.Errorf("backup output %q", c.out)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup file: %v, mode %v", err, fi.Mode())
	}
	bst, err := bolt.Open(backup, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	if err := bst.ListUsers(context.Background(), func(u *store.User) error { got[u.ID] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	bst.Close()
	if len(got) != len(want) {
		t.Errorf("backup holds %d users, want %d", len(got), len(want))
	}
	for id := range want {
		if !got[id] {
			t.Errorf("user %s missing from the backup", id)
		}
	}
	if c = runCLIAgainst(t, g.db, "", "backup", backup, "--format", "bolt"); c.err == nil || !strings.Contains(c.err.Error(), "--force") {
		t.Errorf("backup over an existing file: %v", c.err)
	}

	// The default backup while serving is an export with every user. It
	// does not restore into the database it came from, and nothing of it
	// lands there.
	export := filepath.Join(dir, "backup.jsonl")
	c = runCLIAgainst(t, g.db, "", "backup", export).must(t, "export")
	if !strings.Contains(c.out, fmt.Sprintf("backup of %d users", len(want))) {
		t.Errorf("export output %q", c.out)
	}
	c = runCLIAgainst(t, g.db, "", "restore", export)
	if c.err == nil || !strings.Contains(c.err.Error(), "nothing imported") {
		t.Errorf("restore into the serving database: %v", c.err)
	}
	r = adminDo(t, http.MethodGet, "/crudauth/backup", nil)
	wantStatus(t, r, http.StatusOK)
	if cd := r.header.Get("Content-Disposition"); !strings.HasPrefix(cd, `attachment; filename="crudauth-`) {
		t.Errorf("Content-Disposition = %q", cd)
	}

	tr.finish(t)
	tr = nil

	// With a second database open, the caller must say which.
	other := filepath.Join(t.TempDir(), "other.db")
	_, key, err := acquireBolt(other)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseStore(key)
	wantAdminError(t, adminDo(t, http.MethodGet, "/crudauth/users", nil), http.StatusBadRequest, other)
	wantStatus(t, adminDo(t, http.MethodGet, "/crudauth/users?db="+g.db, nil), http.StatusOK)
	c = runCLIAgainst(t, g.db, "", "show", "alice").must(t, "show with two databases open")

	// The export restores through the admin API into the other database,
	// which this process holds: every user, the same IDs, and the
	// gateway's signing key.
	c = runCLIAgainst(t, other, "", "restore", export).must(t, "restore through the admin API")
	if !regexp.MustCompile(fmt.Sprintf(`restored %d users, \d+ sessions and 1 secrets`, len(want))).MatchString(c.out) {
		t.Errorf("restore output %q", c.out)
	}
	otherSt, _, err := acquireBolt(other)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseStore(key)
	for id := range want {
		if _, err := otherSt.GetUser(context.Background(), id); err != nil {
			t.Errorf("user %s not restored: %v", id, err)
		}
	}
	s1, _ := g.st.Secrets(context.Background())
	s2, _ := otherSt.Secrets(context.Background())
	if len(s1) != 1 || !bytes.Equal(s1["hs256"], s2["hs256"]) {
		t.Errorf("signing key not restored: %d secrets", len(s2))
	}
	r = adminDo(t, http.MethodGet, "/crudauth/backup?format=tar&db="+g.db, nil)
	wantAdminError(t, r, http.StatusBadRequest, "use export or bolt")
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationPasswordEndpoint: POST /password with a valid access token
// changes the password, kills every earlier token and hands out a fresh
// pair, as /token does (here in cookie mode).
func TestIntegrationPasswordEndpoint(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `
		default_scopes me:read
		grantable_scopes me:read reports:read
		password_path /account/password`})
	u := g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "me:read reports:read")

	post := func(access, ctype, body string) *response {
		hdr := []string{"Content-Type", ctype}
		if access != "" {
			hdr = append(hdr, "Authorization", "Bearer "+access)
		}
		return g.do(t, http.MethodPost, "/account/password", strings.NewReader(body), hdr...)
	}
	form := func(cur, next string) string { return formBody("current_password", cur, "new_password", next) }

	r := post("", formType, form(testPassword, testPassword2))
	wantOAuthError(t, r, http.StatusUnauthorized, "invalid_request")
	if got := r.header.Get("WWW-Authenticate"); got != challenge("") {
		t.Errorf("WWW-Authenticate = %q", got)
	}
	wantOAuthError(t, post("garbage", formType, form(testPassword, testPassword2)), http.StatusUnauthorized, "invalid_token")
	wantOAuthError(t, post(lr.access, formType, form("wrong-password", testPassword2)), http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, post(lr.access, formType, form(testPassword, "short")), http.StatusBadRequest, "invalid_request")
	wantOAuthError(t, post(lr.access, formType, formBody("current_password", testPassword)), http.StatusBadRequest, "invalid_request")
	wantOAuthError(t, post(lr.access, "text/plain", "x"), http.StatusBadRequest, "invalid_request")
	wantOAuthError(t, post(lr.access, formType, strings.Repeat("a", endpoints.MaxBody+1)), http.StatusRequestEntityTooLarge, "invalid_request")
	r = g.do(t, http.MethodGet, "/account/password", nil, "Authorization", "Bearer "+lr.access)
	wantOAuthError(t, r, http.StatusMethodNotAllowed, "invalid_request")
	if got := readUserFrom(t, g, u.ID); got.TokenVersion != 0 {
		t.Fatalf("failed attempts changed token_version to %d", got.TokenVersion)
	}
	g.backend.wantNone(t)

	r = post(lr.access, "application/json", fmt.Sprintf(`{"current_password": %q, "new_password": %q}`, testPassword, testPassword2))
	wantStatus(t, r, http.StatusOK)
	wantNoStore(t, r)
	m := r.json(t)
	newAccess, _ := m["access_token"].(string)
	if newAccess == "" || m["token_type"] != "bearer" || m["scope"] != "me:read reports:read" || m["refresh_token"] != nil {
		t.Errorf("password change response: %s", r)
	}
	var cookie *http.Cookie
	for _, line := range r.header.Values("Set-Cookie") {
		if c, err := http.ParseSetCookie(line); err == nil && c.Name == DefaultCookieName {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || !cookie.Secure || cookie.Path != "/refresh" {
		t.Errorf("no proper refresh cookie: %q", r.header.Values("Set-Cookie"))
	}
	g.backend.wantNone(t)

	// Every earlier token is dead; the new ones work.
	wantDenied(t, g.get(t, "/api", lr.access), http.StatusUnauthorized, challenge("invalid_token"))
	wantOAuthError(t, g.refreshCookie(t, lr.refresh), http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, post(lr.access, formType, form(testPassword2, "third-password-3")), http.StatusUnauthorized, "invalid_token")
	wantStatus(t, g.get(t, "/api", newAccess), http.StatusOK)
	wantIdentity(t, g.backend.wantOne(t), u.ID, "alice", "me:read reports:read")
	if cookie != nil {
		wantStatus(t, g.refreshCookie(t, cookie.Value), http.StatusOK)
	}
	wantOAuthError(t, g.login(t, "alice", testPassword, ""), http.StatusBadRequest, "invalid_grant")
	wantStatus(t, g.login(t, "alice", testPassword2, ""), http.StatusOK)
	if got := readUserFrom(t, g, u.ID); got.TokenVersion != 1 || !strings.HasPrefix(got.PasswordHash, "$argon2id$") {
		t.Errorf("after the change: token_version %d", got.TokenVersion)
	}

	// Guessing the current password with a valid token is throttled like a
	// login (default: 5 failures per client and user).
	g.addUser(t, "mallory", nil)
	mal := g.mustLogin(t, "mallory", "")
	for i := range 5 {
		wantOAuthError(t, post(mal.access, formType, form(fmt.Sprintf("guess-%d-password", i), testPassword2)), http.StatusBadRequest, "invalid_grant")
	}
	r = post(mal.access, formType, form(testPassword, testPassword2))
	wantStatus(t, r, http.StatusTooManyRequests)
	if r.header.Get("Retry-After") == "" {
		t.Errorf("throttled password change without Retry-After: %s", r)
	}
	wantStatus(t, g.get(t, "/api", mal.access), http.StatusOK) // the token still works
	g.backend.take()

	// Off unless enabled: without password_path the path is an ordinary
	// request that needs a token and goes to the backend.
	g.load(t, gwConfig{auth: `default_scopes me:read`})
	r = g.do(t, http.MethodPost, "/account/password", strings.NewReader(form(testPassword2, "x")),
		"Content-Type", formType, "Authorization", "Bearer "+newAccess)
	wantStatus(t, r, http.StatusOK)
	if string(r.body) != "backend ok" {
		t.Errorf("with the endpoint off, the request should reach the backend: %s", r)
	}
	g.backend.take()
}

func readUserFrom(t *testing.T, g *gateway, id string) *store.User {
	t.Helper()
	u, err := g.st.GetUser(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestIntegrationRehashOnLogin: a login with a hash made with other
// parameters (or bcrypt) stores a new argon2id hash with the configured
// ones, without revoking anything.
func TestIntegrationRehashOnLogin(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `refresh body`})
	ctx := context.Background()
	bc, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	other, err := password.NewHasher(password.Params{Memory: 19456, Time: 3, Threads: 1, KeyLen: 32, SaltLen: 16})
	if err != nil {
		t.Fatal(err)
	}
	oldArgon, err := other.Hash(testPassword)
	if err != nil {
		t.Fatal(err)
	}
	current := hashFor(t, testPassword)
	for name, hash := range map[string]string{"bcrypt-user": string(bc), "old-params-user": oldArgon, "current-user": current} {
		u := &store.User{Username: name, PasswordHash: hash}
		if err := g.st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		lr := g.mustLogin(t, name, "")
		got := readUserFrom(t, g, u.ID)
		wantPrefix := fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$", password.DefaultParams.Memory, password.DefaultParams.Time, password.DefaultParams.Threads)
		if !strings.HasPrefix(got.PasswordHash, wantPrefix) {
			t.Errorf("%s: hash after login has prefix %.40q, want %q", name, got.PasswordHash, wantPrefix)
		}
		if (got.PasswordHash == hash) != (name == "current-user") {
			t.Errorf("%s: re-hashed = %v", name, got.PasswordHash != hash)
		}
		if got.TokenVersion != 0 {
			t.Errorf("%s: re-hashing bumped token_version", name)
		}
		wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
		g.backend.take()
		wantStatus(t, g.login(t, name, testPassword, ""), http.StatusOK)
	}
}

// metricValue reads one series from the admin API's /metrics.
func metricValue(t *testing.T, series string) float64 {
	t.Helper()
	r := adminDo(t, http.MethodGet, "/metrics", nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /metrics: %s", r)
	}
	for _, line := range strings.Split(string(r.body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return v
		}
	}
	return 0 // not yet observed
}

// TestIntegrationMetrics runs a known sequence of requests and checks the
// change of every metric, read where Caddy exposes them (the admin API's
// /metrics).
func TestIntegrationMetrics(t *testing.T) {
	g := startGateway(t, gwConfig{auth: `
		refresh body
		default_scopes me:read
		grantable_scopes me:read reports:read
		require /reports/* reports:read
		throttle {
			max_failures 2
		}`})
	series := []string{
		`crudauth_logins_total{outcome="success"}`,
		`crudauth_logins_total{outcome="failure"}`,
		`crudauth_logins_total{outcome="throttled"}`,
		`crudauth_refreshes_total{outcome="success"}`,
		`crudauth_refreshes_total{outcome="failure"}`,
		`crudauth_bearer_checks_total{outcome="ok"}`,
		`crudauth_bearer_checks_total{outcome="missing"}`,
		`crudauth_bearer_checks_total{outcome="invalid"}`,
		`crudauth_bearer_checks_total{outcome="revoked"}`,
		`crudauth_bearer_checks_total{outcome="insufficient_scope"}`,
		`crudauth_admin_operations_total{operation="add",outcome="success"}`,
		`crudauth_admin_operations_total{operation="add",outcome="error"}`,
		`crudauth_admin_operations_total{operation="revoke",outcome="success"}`,
		`crudauth_password_hash_duration_seconds_count`,
	}
	before := map[string]float64{}
	for _, s := range series {
		before[s] = metricValue(t, s)
	}

	// The sequence.
	if r := adminDo(t, http.MethodPost, "/crudauth/users", map[string]any{"username": "alice", "password": testPassword}); r.status != http.StatusCreated {
		t.Fatalf("admin add: %s", r)
	}
	adminDo(t, http.MethodPost, "/crudauth/users", map[string]any{"username": "alice", "password": testPassword}) // 409
	lr := g.mustLogin(t, "alice", "")                                                                             // login ok
	g.mustLogin(t, "alice", "")                                                                                   // login ok
	g.login(t, "alice", "wrong-password", "")                                                                     // login failure
	g.login(t, "nobody", "wrong-password", "")                                                                    // login failure
	g.login(t, "alice", "wrong-password-2", "")                                                                   // login failure; locks alice for this client
	g.login(t, "alice", testPassword, "")                                                                         // login throttled
	at := accessOf(t, g.refreshJSON(t, lr.refresh))                                                               // refresh ok
	g.refreshJSON(t, "garbage")                                                                                   // refresh failure
	g.get(t, "/api", at)                                                                                          // ok
	g.get(t, "/api", lr.access)                                                                                   // ok
	g.get(t, "/api", "")                                                                                          // missing
	g.get(t, "/api", "garbage")                                                                                   // invalid
	g.get(t, "/reports/x", at)                                                                                    // insufficient_scope
	adminDo(t, http.MethodPost, "/crudauth/users/alice/revoke", nil)                                              // admin revoke
	g.get(t, "/api", at)                                                                                          // revoked
	g.backend.take()

	want := map[string]float64{
		`crudauth_logins_total{outcome="success"}`:                              2,
		`crudauth_logins_total{outcome="failure"}`:                              3,
		`crudauth_logins_total{outcome="throttled"}`:                            1,
		`crudauth_refreshes_total{outcome="success"}`:                           1,
		`crudauth_refreshes_total{outcome="failure"}`:                           1,
		`crudauth_bearer_checks_total{outcome="ok"}`:                            2,
		`crudauth_bearer_checks_total{outcome="missing"}`:                       1,
		`crudauth_bearer_checks_total{outcome="invalid"}`:                       1,
		`crudauth_bearer_checks_total{outcome="revoked"}`:                       1,
		`crudauth_bearer_checks_total{outcome="insufficient_scope"}`:            1,
		`crudauth_admin_operations_total{operation="add",outcome="success"}`:    1,
		`crudauth_admin_operations_total{operation="add",outcome="error"}`:      1,
		`crudauth_admin_operations_total{operation="revoke",outcome="success"}`: 1,
		// one hash for the add, one verify per login attempt that is not
		// throttled (the unknown user's dummy included)
		`crudauth_password_hash_duration_seconds_count`: 6,
	}
	for _, s := range series {
		if got := metricValue(t, s) - before[s]; got != want[s] {
			t.Errorf("%s went up by %v, want %v", s, got, want[s])
		}
	}
}
