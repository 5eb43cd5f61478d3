package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/backup"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
	"github.com/crudauth/caddy-crudauth/internal/store/storetest"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// TestFailKinds: a refused user operation is answered with its kind next
// to its message, which the CLI rebuilds an error of the same kind from.
// The answer is written here, not returned to the host, which would log it
// as a request error.
func TestFailKinds(t *testing.T) {
	h := &Handler{Logger: zap.NewNop()}
	for _, tc := range []struct {
		err        error
		status     int
		kind       string
		retryAfter string
	}{
		{&users.Error{Kind: users.Invalid, Msg: `no user "alice"`}, http.StatusBadRequest, "invalid", ""},
		{&users.Error{Kind: users.NotFound, Msg: `no user "alice"`}, http.StatusNotFound, "not_found", ""},
		{&users.Error{Kind: users.Exists, Msg: `no user "alice"`}, http.StatusConflict, "exists", ""},
		{&users.Error{Kind: users.Conflict, Msg: `a rotation is already pending`}, http.StatusConflict, "conflict", ""},
		{&users.Error{Kind: users.Busy, Msg: `no user "alice"`}, http.StatusServiceUnavailable, "busy", "1"},
		{&users.Error{Kind: users.Internal, Msg: `no user "alice"`}, http.StatusInternalServerError, "internal", ""},
		// Errors that are not the users service's carry no kind.
		{backup.ErrNoFileSnapshot, http.StatusBadRequest, "", ""},
		// A store that cannot answer now: retry shortly, whether the
		// users service passed the failure on or the store itself did.
		{&users.Error{Kind: users.Internal, Err: fmt.Errorf("%w: context deadline exceeded", store.ErrUnavailable)},
			http.StatusServiceUnavailable, "internal", "1"},
		{fmt.Errorf("%w: no leader", store.ErrUnavailable), http.StatusServiceUnavailable, "", "1"},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			rec := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, "/crudauth/users/alice/revoke", nil)
			if err := h.fail(rec, r, "revoke", false, "memory:x", zap.String("username", "alice"), tc.err); err != nil {
				t.Errorf("fail returned %v to the host", err)
			}
			if rec.Code != tc.status || rec.Header().Get("Retry-After") != tc.retryAfter {
				t.Errorf("status %d, Retry-After %q; want %d, %q", rec.Code, rec.Header().Get("Retry-After"), tc.status, tc.retryAfter)
			}
			var body map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["kind"] != tc.kind || !strings.Contains(body["error"], tc.err.Error()) {
				t.Errorf("body %s (%v)", rec.Body, err)
			}
			if _, ok := body["kind"]; ok != (tc.kind != "") {
				t.Errorf("body %s: kind present %v", rec.Body, ok)
			}
		})
	}
}

// memResolver resolves every request to one memory store.
type memResolver struct{ settings users.Settings }

func (memResolver) Stores() []string { return []string{"memory:admin-test"} }

func (m memResolver) Resolve(q url.Values) (Target, error) {
	if q.Get("db") == "closed" {
		return Target{}, Errorf(http.StatusNotFound, "no crudauth database is open")
	}
	st := memory.Open("admin-test", memory.Options{})
	return Target{Name: "memory:admin-test", Store: st, Settings: m.settings, Release: func() { _ = st.Close() }}, nil
}

// TestRoutes: the endpoints' answers before any operation runs, and the
// order in which a request is refused (a store that cannot be resolved
// before an unknown action or a wrong method).
func TestRoutes(t *testing.T) {
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	keep := memory.Open("admin-test", memory.Options{}) // the state outlives each request's handle
	defer keep.Close()
	h := &Handler{Resolver: memResolver{users.Settings{Hasher: hasher}}, Logger: zap.NewNop()}
	for _, tc := range []struct {
		method, path string
		status       int
		body, allow  string
	}{
		{"GET", "/crudauth/identity", 200, `{"module":"admin.api.crudauth","api":1}`, ""},
		{"POST", "/crudauth/identity", 405, `"method not allowed; use GET"`, "GET"},
		{"GET", "/crudauth/dbs", 200, `{"dbs":["memory:admin-test"]}`, ""},
		{"GET", "/crudauth/nothing", 404, `unknown endpoint /crudauth/nothing`, ""},
		{"GET", "/crudauth/", 404, `unknown endpoint /crudauth/`, ""},
		{"GET", "/crudauth/identity/x", 404, `unknown endpoint`, ""},
		{"PATCH", "/crudauth/users", 405, `use GET or POST`, "GET, POST"},
		{"PATCH", "/crudauth/users/alice", 405, `use GET or DELETE`, "GET, DELETE"},
		{"GET", "/crudauth/users/alice/password", 405, `use POST`, "POST"},
		{"GET", "/crudauth/users/alice/scopes", 405, `use PUT`, "PUT"},
		{"POST", "/crudauth/backup", 405, `use GET`, "GET"},
		{"GET", "/crudauth/restore", 405, `use POST`, "POST"},
		{"GET", "/crudauth/import", 405, `use POST`, "POST"},
		{"POST", "/crudauth/users/alice/fly", 404, `unknown action \"fly\"`, ""},
		{"POST", "/crudauth/users/alice/fly?db=closed", 404, `no crudauth database is open`, ""},
		{"PATCH", "/crudauth/users?db=closed", 404, `no crudauth database is open`, ""},
		{"GET", "/crudauth/users/a/b/c", 404, `unknown endpoint`, ""},
		{"POST", "/crudauth/users/alice/sessions", 405, `use GET`, "GET"},
		{"GET", "/crudauth/users/alice/sessions/s1", 405, `use DELETE`, "DELETE"},
		{"DELETE", "/crudauth/users/alice/sessions/s1/x", 404, `unknown endpoint`, ""},
		{"DELETE", "/crudauth/users/alice/sessions/s1?db=closed", 404, `no crudauth database is open`, ""},
		{"GET", "/crudauth/users/nobody/sessions", 404, `"kind":"not_found"`, ""},
		{"DELETE", "/crudauth/users/nobody/sessions/s1", 404, `no user \"nobody\"`, ""},
		{"GET", "/crudauth/users", 200, `[]`, ""},
		{"GET", "/crudauth/users/nobody?exists=1", 200, `{"exists":false}`, ""},
		{"GET", "/crudauth/users/nobody", 404, `"kind":"not_found"`, ""},
		{"PUT", "/crudauth/users/nobody/scopes", 400, `the body needs \"allowed_scopes\"`, ""},
		{"GET", "/crudauth/backup?format=tar", 400, `unknown backup format`, ""},
		{"POST", "/crudauth/restore", 400, `not a crudauth export`, ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			body := strings.NewReader("{}")
			if tc.method == "POST" && strings.Contains(tc.path, "restore") {
				body = strings.NewReader("")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, body))
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.body) || rec.Header().Get("Allow") != tc.allow {
				t.Errorf("%d %q Allow %q; want %d %q Allow %q", rec.Code, rec.Body, rec.Header().Get("Allow"), tc.status, tc.body, tc.allow)
			}
		})
	}
}

// TestRestoreKeys: a restore reports the signing keys it added and kept,
// and a key stored with other content is a conflict (409), as a secret is.
func TestRestoreKeys(t *testing.T) {
	keep := memory.Open("admin-restore-keys", memory.Options{})
	defer keep.Close()
	mine := storetest.NewSigningKey(t, store.AlgEdDSA, time.Now())
	if _, err := keep.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		ks.Keys = append(ks.Keys, mine)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{Resolver: namedResolver{"admin-restore-keys", users.Settings{Hasher: hasher}}, Logger: zap.NewNop()}
	restore := func(user string, keys ...store.SigningKey) *httptest.ResponseRecorder {
		var buf bytes.Buffer
		d := &store.Dump{Users: []*store.User{{ID: "u" + user, Username: user, PasswordHash: "h"}}, Keys: keys}
		if err := store.WriteExport(&buf, d); err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/crudauth/restore", &buf))
		return rec
	}
	rec := restore("alice", mine, storetest.NewSigningKey(t, store.AlgES256, time.Now()))
	var got RestoreResult
	if err := json.Unmarshal(rec.Body.Bytes(), &got); rec.Code != http.StatusOK || err != nil ||
		got != (RestoreResult{Users: 1, Keys: 1, KeysKept: 1}) {
		t.Errorf("restore with a stored key and a new one: %d %s", rec.Code, rec.Body)
	}
	other := mine
	other.Private = storetest.NewSigningKey(t, store.AlgEdDSA, time.Now()).Private
	if rec := restore("bob", other); rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), mine.ID) {
		t.Errorf("restore with a key stored with other content: %d %s", rec.Code, rec.Body)
	}
	if _, err := keep.GetUserByName(t.Context(), "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused restore stored its user: %v", err)
	}
}
