package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/crudauth/caddy-crudauth/internal/admin"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// TestRemoteErrorKinds: the CLI rebuilds, from the admin API's answer to a
// refused user operation, an error of the same kind, so that it gives the
// same advice on a file and through a running caddy.
func TestRemoteErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		kind   users.Kind
		status int
	}{
		{users.Invalid, http.StatusBadRequest},
		{users.NotFound, http.StatusNotFound},
		{users.Exists, http.StatusConflict},
		{users.Busy, http.StatusServiceUnavailable},
		{users.Internal, http.StatusInternalServerError},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			local := &users.Error{Kind: tc.kind, Msg: `no user "alice"`}
			body, _ := json.Marshal(admin.ErrorBody{Error: local.Msg, Kind: tc.kind.String()})
			remote := remoteErrorOf(tc.status, body)
			var ue *users.Error
			if !errors.As(remote, &ue) || ue.Kind != tc.kind {
				t.Fatalf("rebuilt %T %v, want a *users.Error of kind %s", remote, remote, tc.kind)
			}
			if a, b := hint(local).Error(), hint(remote).Error(); a != b {
				t.Errorf("the CLI says %q on a file, %q through the admin API", a, b)
			}
		})
	}

	// Errors that are not the users service's carry no kind.
	var re *remoteError
	if err := remoteErrorOf(http.StatusBadRequest, []byte(`{"error":"no file"}`)); !errors.As(err, &re) || re.msg != "no file" {
		t.Errorf("no kind: %#v", err)
	}
	// An answer that is not the admin API's JSON is kept as it came.
	if err := remoteErrorOf(http.StatusBadGateway, []byte("bad gateway\n")); !errors.As(err, &re) || re.msg != "bad gateway" {
		t.Errorf("plain text answer: %#v", err)
	}
}

// TestAdminAddIsNoFailedRequest runs the CLI's add through the admin
// handler, the way Caddy's admin server calls it, on a memory store. The
// CLI first checks that the name is free: that check must be answered 200
// (the name is free: the expected answer, not an error), and no request of
// the add may end as an error for Caddy's admin server, which logs every
// such error at error level ("request error").
func TestAdminAddIsNoFailedRequest(t *testing.T) {
	_, key, err := acquireStore(&MemoryStore{Name: "admin-add-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = releaseStore(key) }()

	core, logs := observer.New(zapcore.DebugLevel)
	a := &adminAPI{api: newAdminHandler(zap.New(core))}
	var mu sync.Mutex
	var seen []string // method, path and status of every request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		if err := a.serve(rec, r); err != nil {
			t.Errorf("%s %s: the handler returned %v to Caddy's admin server", r.Method, r.URL, err)
			rec.Code = http.StatusInternalServerError
		}
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+http.StatusText(rec.Code))
		mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	defer srv.Close()

	var out bytes.Buffer
	env := &cliEnv{passwordStdin: true, stdin: strings.NewReader("admin-add-test-password\n"), stdout: &out, stderr: &out}
	ops := env.remote(srv.Listener.Addr().String(), "memory:admin-add-test")
	if err := env.addUser(context.Background(), ops, "alice", "", false); err != nil {
		t.Fatalf("add: %v", err)
	}
	for _, s := range seen {
		if !strings.HasSuffix(s, " OK") && !strings.HasSuffix(s, " Created") {
			t.Errorf("request of the add answered %s; want 200 or 201", s)
		}
	}
	if len(seen) != 3 { // identity, the existence check, the add
		t.Errorf("requests: %q", seen)
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
		t.Errorf("%d error-level log entries: %v", n, logs.All())
	}

	// The existence check answers true now, and a second add stops there,
	// before the password is read.
	if ok, err := ops.exists(context.Background(), "ALICE"); err != nil || !ok {
		t.Errorf("exists(ALICE) = %v, %v", ok, err)
	}
	env.stdin = strings.NewReader("")
	if err := env.addUser(context.Background(), ops, "alice", "", false); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second add: %v", err)
	}
	// A plain show of an unknown user is still a 404, with its kind.
	_, err = ops.show(context.Background(), "nobody")
	if users.KindOf(err) != users.NotFound || !strings.Contains(hint(err).Error(), "user list") {
		t.Errorf("show nobody: %v", err)
	}
}

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
