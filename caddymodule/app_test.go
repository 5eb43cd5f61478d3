package caddymodule

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestAppModules: the app and both store backends are Caddy modules, as
// `caddy list-modules` shows them.
func TestAppModules(t *testing.T) {
	for _, id := range []string{"crudauth", "crudauth.stores.bolt", "crudauth.stores.memory", "http.handlers.crudauth", "admin.api.crudauth"} {
		if _, err := caddy.GetModule(id); err != nil {
			t.Errorf("module %s: %v", id, err)
		}
	}
}

// TestAdaptRealmOption pins the global option's JSON.
func TestAdaptRealmOption(t *testing.T) {
	out, err := adapt(t, `{
	crudauth {
		realm main {
			store memory {
				name shared
			}
			secret {env.X}
			max_concurrent_hashes 2
			throttle {
				max_failures 3
			}
		}
		realm other {
			db /var/lib/crudauth/other.db
		}
	}
}
http://localhost:9080 {
	crudauth {
		realm main
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatal(err)
	}
	want := `{"realms":{"main":{"store":{"backend":"memory","name":"shared"},"secret":"{env.X}","max_concurrent_hashes":2,` +
		`"throttle":{"max_failures":3}},"other":{"db":"/var/lib/crudauth/other.db"}}}`
	if got := string(cfg.Apps["crudauth"]); got != want {
		t.Errorf("crudauth app:\n got %s\nwant %s", got, want)
	}
	if h := handlerJSON(t, out); h["realm"] != "main" {
		t.Errorf("handler: %v", h)
	}

	for _, tc := range []struct{ name, src, want string }{
		{"unknown option", "{\n crudauth {\n  realms x\n }\n}", "unrecognized crudauth option"},
		{"no name", "{\n crudauth {\n  realm {\n  }\n }\n}", "wrong argument count"},
		{"bad name", "{\n crudauth {\n  realm a/b\n }\n}", "only letters"},
		{"twice", "{\n crudauth {\n  realm a\n  realm a\n }\n}", "declared twice"},
		{"repeated setting", "{\n crudauth {\n  realm a {\n   secret x\n   secret y\n  }\n }\n}", "secret is given twice"},
		{"handler setting", "{\n crudauth {\n  realm a {\n   refresh body\n  }\n }\n}", "unrecognized realm subdirective"},
		{"db and store", "{\n crudauth {\n  realm a {\n   db /x\n   store memory\n  }\n }\n}", "db"},
	} {
		if _, err := adapt(t, tc.src+"\nhttp://localhost:9080 {\n}"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// realmConfig is two sites of one Caddy naming one realm declared in the
// global options.
func realmConfig(backend string) string {
	site := func(addr string) string {
		return `
http://` + addr + ` {
	crudauth {
		realm main
		refresh body
		default_scopes read
		grantable_scopes read
	}
	reverse_proxy ` + backend + `
}`
	}
	return testGlobalOptions + `
	crudauth {
		realm main {
			store memory {
				name realm-test
			}
			secret {env.CRUDAUTH_ATTACK_SECRET}
			throttle {
				max_failures 3
			}
		}
	}
}` + site("localhost:9080") + site("127.0.0.1:9080")
}

// TestRealmSharedByHandlers: two handlers naming one declared realm share
// its users, its key (a token from one site works on the other), its
// epochs (a revocation through the admin API, by realm name, is refused on
// both) and its throttle (failures on one site count on the other).
func TestRealmSharedByHandlers(t *testing.T) {
	t.Setenv("CRUDAUTH_ATTACK_SECRET", attackSecret)
	b := newBackend(t)
	if status, body := loadError(t, realmConfig(b.addr())); status != http.StatusOK {
		t.Fatalf("load: %d %s", status, body)
	}
	wantStatus(t, adminDo(t, http.MethodPost, "/crudauth/users?realm=main",
		map[string]any{"username": "alice", "password": testPassword}), http.StatusCreated)

	post := func(base, path, body string) *response {
		t.Helper()
		resp, err := newClient().Post(base+path, formType, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return &response{status: resp.StatusCode, header: resp.Header, body: b}
	}
	get := func(base, access string) *response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+"/api", nil)
		req.Header.Set("Authorization", "Bearer "+access)
		resp, err := newClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return &response{status: resp.StatusCode, header: resp.Header}
	}
	// The CLI reaches the realm by name, through the admin API.
	if r := runCLIAgainst(t, "", "", "list", "--realm", "main"); r.err != nil || !strings.Contains(r.out, "alice") {
		t.Errorf("user list --realm main: %v\n%s%s", r.err, r.out, r.errOut)
	}
	if r := runCLIAgainst(t, "/tmp/x.db", "", "list", "--realm", "main"); r.err == nil {
		t.Errorf("--realm with --db was accepted")
	}

	const siteA, siteB = "http://localhost:9080", "http://127.0.0.1:9080"
	at := accessOf(t, post(siteA, "/token", formBody("username", "alice", "password", testPassword)))
	wantStatus(t, get(siteB, at), http.StatusOK)
	wantStatus(t, get(siteA, at), http.StatusOK)
	b.take()

	wantStatus(t, adminDo(t, http.MethodPost, "/crudauth/users/alice/revoke?realm=main", nil), http.StatusOK)
	wantStatus(t, get(siteA, at), http.StatusUnauthorized)
	wantStatus(t, get(siteB, at), http.StatusUnauthorized)
	b.wantNone(t)

	for i := 0; i < 3; i++ {
		wantStatus(t, post(siteA, "/token", formBody("username", "alice", "password", "wrong-password")), http.StatusBadRequest)
	}
	wantStatus(t, post(siteB, "/token", formBody("username", "alice", "password", testPassword)), http.StatusTooManyRequests)

	if r := adminDo(t, http.MethodGet, "/crudauth/users?realm=nope", nil); r.status != http.StatusNotFound || !strings.Contains(string(r.body), "main") {
		t.Errorf("undeclared realm: %s", r)
	}
}

// TestRealmRefusals: with realms declared, `realm NAME` must name one, and
// the realm's settings belong to its declaration, not to a handler naming
// it. A handler that names no realm still has its own.
func TestRealmRefusals(t *testing.T) {
	t.Setenv("CRUDAUTH_ATTACK_SECRET", attackSecret)
	b := newBackend(t)
	base := realmConfig(b.addr())
	for _, tc := range []struct{ name, site, want string }{
		{"undeclared", "crudauth {\n realm mian\n }", `realm \"mian\" is not declared`},
		{"realm setting on the handler", "crudauth {\n realm main\n db /tmp/x.db\n argon2 65536 3 1\n }", "db, argon2 belong to realm"},
	} {
		status, body := loadError(t, base+"\nhttp://localhost:9081 {\n"+tc.site+"\n}")
		if status == http.StatusOK || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want an error containing %s", tc.name, status, body, tc.want)
		}
	}
	own := base + "\nhttp://localhost:9081 {\n crudauth {\n  store memory {\n   name own\n  }\n }\n respond ok\n}"
	if status, body := loadError(t, own); status != http.StatusOK {
		t.Errorf("a handler with a realm of its own beside declared ones: %d %s", status, body)
	}
}

// TestRealmReleaseKeepsFields: releasing a realm (a reload cleaning up the
// old config) drops its pool references once however often it is called,
// and leaves its fields as they were, since an admin request of the old
// config may still read them; the race detector runs this with a reader.
func TestRealmReleaseKeepsFields(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	a := &App{Realms: map[string]*RealmSettings{"x": {DB: filepath.Join(t.TempDir(), "r.db")}}}
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	r, _ := a.realm("x")
	key := r.storeKey
	if n, ok := storePool.References(key); !ok || n != 1 {
		t.Fatalf("references before release: %d, %v", n, ok)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			if got, _ := a.realm("x"); got.storeKey != key {
				t.Error("a reader saw the realm change")
				return
			}
			a.byStore(key)
		}
	}()
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := a.Cleanup(); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
	<-done
	if _, ok := storePool.References(key); ok {
		t.Errorf("the store is still referenced after the realm was released")
	}
	if r.storeKey != key || r.store == nil {
		t.Errorf("release changed the realm: %q", r.storeKey)
	}
}
