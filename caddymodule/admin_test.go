package caddymodule

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIntegrationOpsAddLogsNoError adds a user with the CLI through a
// running Caddy's admin API and reads Caddy's own log: an add that succeeds
// must not leave an error line there (the admin server logs every request
// its handler fails as "request error").
func TestIntegrationOpsAddLogsNoError(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	g := startGateway(t, gwConfig{global: "\tlog {\n\t\toutput file " + logFile + "\n\t\tformat json\n\t\tlevel ERROR\n\t}"})
	before, _ := os.ReadFile(logFile)

	runCLIAgainst(t, g.db, "log-test-password\n", "add", "alice", "--password-stdin").must(t, "user add")

	after, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if logged := strings.TrimSpace(string(after[len(before):])); logged != "" {
		t.Errorf("the add logged at error level:\n%s", logged)
	}

	// What the CLI's existence check and a show get.
	r := adminDo(t, http.MethodGet, "/crudauth/users/nobody?exists=1", nil)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"exists":false}` {
		t.Errorf("existence check of nobody: %s", r)
	}
	r = adminDo(t, http.MethodGet, "/crudauth/users/ALICE?exists=1", nil)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"exists":true}` {
		t.Errorf("existence check of ALICE: %s", r)
	}
	r = adminDo(t, http.MethodGet, "/crudauth/users/nobody", nil)
	wantAdminError(t, r, http.StatusNotFound, `no user "nobody"`)
	if !strings.Contains(string(r.body), `"kind":"not_found"`) {
		t.Errorf("show of nobody: %s", r)
	}
}
