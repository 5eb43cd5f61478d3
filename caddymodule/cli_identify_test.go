package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/cli"
)

// notCrudauth is an admin endpoint that is not crudauth's: it answers the
// user routes the way crudauth would, so that a CLI that does not check
// whom it talks to goes on to send the password, and records every body
// it receives.
type notCrudauth struct {
	identity func(w http.ResponseWriter) // answer to GET /crudauth/identity
	mu       sync.Mutex
	bodies   []string
}

func (f *notCrudauth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, r.Method+" "+r.URL.Path+" "+string(b))
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/crudauth/identity":
		f.identity(w)
	case r.Method == http.MethodGet && r.URL.Path == "/crudauth/users/alice":
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":"no user \"alice\""}`)
	case r.Method == http.MethodGet && r.URL.Path == "/crudauth/users/bob":
		_, _ = io.WriteString(w, `{"id":"1","username":"bob"}`)
	case r.Method == http.MethodPost:
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":"2","username":"alice"}`)
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":"not here"}`)
	}
}

func (f *notCrudauth) received(secret string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var got []string
	for _, b := range f.bodies {
		if strings.Contains(b, secret) || strings.HasPrefix(b, http.MethodPost) {
			got = append(got, b)
		}
	}
	return got
}

// TestCLIRefusesAdminThatIsNotCrudauth: without --db and with no database
// at the default path, the CLI turns to the default admin address, where
// any program may listen while caddy is down. It must send a password only
// to an endpoint that identified itself as crudauth's admin API, and
// otherwise fail with an error that names the address.
func TestCLIRefusesAdminThatIsNotCrudauth(t *testing.T) {
	if _, err := os.Stat(DefaultDBPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("test setup: %s exists (%v)", DefaultDBPath(), err)
	}
	const secret = "correct-horse-battery-staple"
	identities := map[string]func(w http.ResponseWriter){
		"no identity route": func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":"not here"}`)
		},
		"another module": func(w http.ResponseWriter) {
			_, _ = io.WriteString(w, `{"module":"admin.api.other","api":1}`)
		},
		"any JSON": func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{}`) },
		"not JSON": func(w http.ResponseWriter) { _, _ = io.WriteString(w, `<html>hello</html>`) },
	}
	for name, identity := range identities {
		for _, args := range [][]string{
			{"add", "alice", "--password-stdin"},
			{"passwd", "bob", "--password-stdin"},
		} {
			for _, viaFlag := range []bool{false, true} {
				fake := &notCrudauth{identity: identity}
				srv := httptest.NewServer(fake)
				addr := srv.Listener.Addr().String()
				var out, errOut bytes.Buffer
				env := &cli.Env{Stdin: strings.NewReader(secret + "\n"), Stdout: &out, Stderr: &errOut,
					AdminAddress: func() string { return addr }}
				cmd := userCommand(env)
				a := append(append([]string{}, args...), "--verbose")
				if viaFlag {
					a = append(a, "--address", addr)
				}
				cmd.SetArgs(a)
				cmd.SetOut(&out)
				cmd.SetErr(&out)
				err := cmd.Execute()
				srv.Close()

				what := name + ": " + strings.Join(a, " ")
				if got := fake.received(secret); len(got) > 0 {
					t.Errorf("%s: the endpoint at %s received %q", what, addr, got)
				}
				if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "not crudauth's admin API") {
					t.Errorf("%s: error %v, want one that names %s and says it is not crudauth's admin API", what, err, addr)
				}
				if strings.Contains(errOut.String(), "identified itself") {
					t.Errorf("%s: --verbose said %q", what, errOut.String())
				}
			}
		}
	}
	if _, err := os.Stat(DefaultDBPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the CLI created %s", DefaultDBPath())
	}
}
