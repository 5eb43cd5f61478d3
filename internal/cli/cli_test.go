package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/crudauth/caddy-crudauth/internal/admin"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
	"github.com/crudauth/caddy-crudauth/internal/store/storetest"
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
	keep := memory.Open("admin-add-test", memory.Options{}) // the state outlives each request's handle
	defer keep.Close()

	core, logs := observer.New(zapcore.DebugLevel)
	a := &admin.Handler{Resolver: memResolver{t: t, name: "memory:admin-add-test"}, Logger: zap.New(core)}
	var mu sync.Mutex
	var seen []string // method, path and status of every request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		if err := a.Serve(rec, r); err != nil {
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
	env := &Env{PasswordStdin: true, Stdin: strings.NewReader("admin-add-test-password\n"), Stdout: &out, Stderr: &out, ParseAddress: tcpAddress}
	ops := env.Remote(srv.Listener.Addr().String(), "memory:admin-add-test")
	if err := env.AddUser(context.Background(), ops, "alice", "", false); err != nil {
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
	if ok, err := ops.Exists(context.Background(), "ALICE"); err != nil || !ok {
		t.Errorf("exists(ALICE) = %v, %v", ok, err)
	}
	env.Stdin = strings.NewReader("")
	if err := env.AddUser(context.Background(), ops, "alice", "", false); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second add: %v", err)
	}
	// A plain show of an unknown user is still a 404, with its kind.
	_, err := ops.Show(context.Background(), "nobody")
	if users.KindOf(err) != users.NotFound || !strings.Contains(hint(err).Error(), "user list") {
		t.Errorf("show nobody: %v", err)
	}
}

// memResolver resolves the requests that name the store name to one memory
// store of that name.
type memResolver struct {
	t    *testing.T
	name string
}

func (m memResolver) Stores() []string { return []string{m.name} }

func (m memResolver) Resolve(q url.Values) (admin.Target, error) {
	if q.Get("db") != m.name {
		m.t.Errorf("the CLI asked for db %q, want %q", q.Get("db"), m.name)
	}
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		return admin.Target{}, err
	}
	st := memory.Open(strings.TrimPrefix(m.name, "memory:"), memory.Options{})
	return admin.Target{Name: m.name, Store: st, Settings: users.Settings{Hasher: hasher},
		Release: func() { _ = st.Close() }}, nil
}

// tcpAddress reads a host:port admin address.
func tcpAddress(addr string) (Endpoint, error) {
	return Endpoint{Network: "tcp", Dial: addr, Origin: "http://" + addr}, nil
}

// TestRestoreReportsKeys: `restore` reports the signing keys it added and
// found already there, on a file and through the admin API, and refuses
// a key stored with other content through either.
func TestRestoreReportsKeys(t *testing.T) {
	mine := storetest.NewSigningKey(t, store.AlgEdDSA, time.Now())
	other := mine
	other.Private = storetest.NewSigningKey(t, store.AlgEdDSA, time.Now()).Private
	export := func(t *testing.T, user string, keys ...store.SigningKey) string {
		var buf bytes.Buffer
		d := &store.Dump{Users: []*store.User{{ID: "u" + user, Username: user, PasswordHash: "h"}}, Keys: keys}
		if err := store.WriteExport(&buf, d); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), user+".jsonl")
		if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	fresh := storetest.NewSigningKey(t, store.AlgES256, time.Now())

	t.Run("file", func(t *testing.T) {
		var out bytes.Buffer
		h, _ := testHasher(t)
		env := &Env{DB: filepath.Join(t.TempDir(), "users.db"), Stdout: &out,
			Settings: func() (users.Settings, error) { return users.Settings{Hasher: h}, nil }}
		if err := env.Restore(export(t, "alice", mine)); err != nil {
			t.Fatal(err)
		}
		if err := env.Restore(export(t, "bob", mine, fresh)); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "1 signing keys (0 already there, equal)") ||
			!strings.Contains(out.String(), "1 signing keys (1 already there, equal)") {
			t.Errorf("output:\n%s", out.String())
		}
		if err := env.Restore(export(t, "carol", other)); !errors.Is(err, store.ErrKeyConflict) {
			t.Errorf("restore of a key stored with other content: %v", err)
		}
	})

	t.Run("admin API", func(t *testing.T) {
		keep := memory.Open("restore-keys-test", memory.Options{})
		defer keep.Close()
		a := &admin.Handler{Resolver: memResolver{t: t, name: "memory:restore-keys-test"}, Logger: zap.NewNop()}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := a.Serve(w, r); err != nil {
				t.Errorf("%s %s: %v", r.Method, r.URL, err)
			}
		}))
		defer srv.Close()
		var out bytes.Buffer
		env := &Env{Stdout: &out, ParseAddress: tcpAddress}
		ops := env.Remote(srv.Listener.Addr().String(), "memory:restore-keys-test")
		d := &store.Dump{Users: []*store.User{{ID: "ualice", Username: "alice", PasswordHash: "h"}}, Keys: []store.SigningKey{mine}}
		if stats, err := ops.Restore(t.Context(), d); err != nil || stats.Keys != 1 || stats.KeysKept != 0 {
			t.Errorf("first restore: %+v, %v", stats, err)
		}
		d = &store.Dump{Users: []*store.User{{ID: "ubob", Username: "bob", PasswordHash: "h"}}, Keys: []store.SigningKey{mine, fresh}}
		if stats, err := ops.Restore(t.Context(), d); err != nil || stats.Keys != 1 || stats.KeysKept != 1 {
			t.Errorf("second restore: %+v, %v", stats, err)
		}
		d = &store.Dump{Users: []*store.User{{ID: "ucarol", Username: "carol", PasswordHash: "h"}}, Keys: []store.SigningKey{other}}
		if _, err := ops.Restore(t.Context(), d); err == nil || !strings.Contains(err.Error(), "signing key conflict") {
			t.Errorf("restore of a key stored with other content: %v", err)
		}
	})
}
