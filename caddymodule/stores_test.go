package caddymodule

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
)

// TestAdaptStore pins the JSON of the store subdirective and of its db
// shorthand, which keeps its old form.
func TestAdaptStore(t *testing.T) {
	for _, tc := range []struct{ name, block, want string }{
		{"db shorthand unchanged", "db /var/lib/c.db", `"db":"/var/lib/c.db"`},
		{"bolt", "store bolt {\n path /var/lib/c.db\n timeout 5s\n }", `"store":{"backend":"bolt","path":"/var/lib/c.db","timeout":5000000000}`},
		{"bolt without a block", "store bolt", `"store":{"backend":"bolt"}`},
		{"memory", "store memory", `"store":{"backend":"memory"}`},
		{"memory named", "store memory {\n name demo\n }", `"store":{"backend":"memory","name":"demo"}`},
		{"etcd", "store etcd {\n endpoints 10.0.0.1:2379 10.0.0.2:2379\n prefix /gw/\n dial_timeout 1s\n tls {\n ca /ca.pem\n cert /c.pem\n key /k.pem\n }\n username gw\n password {env.ETCD_PASSWORD}\n max_staleness 5s\n }",
			`"store":{"backend":"etcd","dial_timeout":1000000000,"endpoints":["10.0.0.1:2379","10.0.0.2:2379"],"max_staleness":5000000000,"password":"{env.ETCD_PASSWORD}","prefix":"/gw/","tls":{"ca":"/ca.pem","cert":"/c.pem","key":"/k.pem"},"username":"gw"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := adapt(t, "http://localhost:9080 {\ncrudauth {\n"+tc.block+"\nrefresh body\n}\n}")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(handlerJSON(t, out))
			want := `{"handler":"crudauth","refresh":"body",` + tc.want + `}`
			if tc.name == "db shorthand unchanged" {
				want = `{` + tc.want + `,"handler":"crudauth","refresh":"body"}`
			}
			if string(got) != want {
				t.Errorf("adapted handler:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestAdaptStoreErrors(t *testing.T) {
	for _, tc := range []struct{ name, block, want string }{
		{"db then store", "db /a.db\n store bolt", "db and store both name the store"},
		{"store then db", "store memory\n db /a.db", "db and store both name the store"},
		{"store twice", "store memory\n store bolt", "store is given twice"},
		{"no backend", "store", "wrong argument count"},
		{"unknown backend", "store redis", "crudauth.stores.redis"},
		{"etcd without endpoints", "store etcd", "store etcd: endpoints are required"},
		{"etcd unknown subdirective", "store etcd {\n endpoints 127.0.0.1:2379\n endpoint x\n }", `store etcd: unrecognized subdirective "endpoint"`},
		{"etcd endpoints twice", "store etcd {\n endpoints a:1\n endpoints b:1\n }", "store etcd endpoints is given twice"},
		{"etcd prefix without slashes", "store etcd {\n endpoints a:1\n prefix crudauth\n }", "must start and end with /"},
		{"etcd bad dial_timeout", "store etcd {\n endpoints a:1\n dial_timeout soon\n }", `dial_timeout "soon" is not a positive duration`},
		{"etcd password without username", "store etcd {\n endpoints a:1\n password x\n }", "a password needs a username"},
		{"etcd tls cert without key", "store etcd {\n endpoints a:1\n tls {\n cert /c.pem\n }\n }", "cert and key go together"},
		{"etcd tls unknown", "store etcd {\n endpoints a:1\n tls {\n pin x\n }\n }", `store etcd tls: unrecognized subdirective "pin"`},
		{"bolt unknown subdirective", "store bolt {\n paht /a.db\n }", `store bolt: unrecognized subdirective "paht"`},
		{"bolt path twice", "store bolt {\n path /a.db\n path /b.db\n }", "store bolt path is given twice"},
		{"bolt path without value", "store bolt {\n path\n }", "wrong argument count"},
		{"bolt timeout not a duration", "store bolt {\n timeout soon\n }", `timeout "soon" is not a positive duration`},
		{"bolt inline argument", "store bolt /a.db", "wrong argument count"},
		{"memory unknown subdirective", "store memory {\n size 10\n }", `store memory: unrecognized subdirective "size"`},
		{"memory name twice", "store memory {\n name a\n name b\n }", "store memory name is given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(t, "http://localhost:9080 {\ncrudauth {\n "+tc.block+"\n}\n}")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "Caddyfile:") {
				t.Errorf("error %q does not name the line", err)
			}
		})
	}
}

// TestStoreKeys: one key per backing state, however the config wrote it,
// and different keys for different states.
func TestStoreKeys(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	rel := &BoltStore{Path: "x/../users.db"}
	abs := &BoltStore{Path: filepath.Join(dir, "users.db")}
	for _, b := range []*BoltStore{rel, abs} {
		if err := b.resolve(); err != nil {
			t.Fatal(err)
		}
	}
	if rel.storeKey() != abs.storeKey() || rel.storeKey() != "bolt:"+filepath.Join(dir, "users.db") {
		t.Errorf("keys %q and %q", rel.storeKey(), abs.storeKey())
	}
	if k := (&MemoryStore{}).storeKey(); k != "memory:default" || k == (&MemoryStore{Name: "demo"}).storeKey() {
		t.Errorf("memory keys: %q", k)
	}
	for _, name := range []string{storeName(abs.storeKey()), "memory:demo"} {
		if key, ok := storeKeyOf(name); !ok || storeName(key) != name {
			t.Errorf("storeKeyOf(%q) = %q, %v", name, key, ok)
		}
	}
	if _, ok := storeKeyOf("relative.db"); ok {
		t.Error("storeKeyOf accepted a relative path")
	}
	if err := (&BoltStore{Timeout: caddy.Duration(-1)}).resolve(); err == nil {
		t.Error("negative timeout accepted")
	}
}

// TestIntegrationMemoryStore runs the gateway on `store memory`: login,
// a proxied request and a refresh work; the store outlives a reload; a
// revocation written through another handle on the same memory state (a
// second gateway) is seen at once; the admin API names the store.
func TestIntegrationMemoryStore(t *testing.T) {
	name := "it-" + strings.ReplaceAll(t.Name(), "/", "-")
	g := &gateway{memory: name, backend: newBackend(t), client: newClient()}
	st, key, err := acquireStore(&MemoryStore{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = releaseStore(key) })
	g.st = st
	auth := `
		refresh body
		default_scopes me:read`
	g.load(t, gwConfig{auth: auth})
	alice := g.addUser(t, "alice", nil)

	lr := g.mustLogin(t, "alice", "")
	wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
	wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "me:read")
	at := accessOf(t, g.refreshJSON(t, lr.refresh))
	wantStatus(t, g.get(t, "/api", at), http.StatusOK)
	g.backend.take()

	// A reload keeps the state, users and the generated signing key.
	g.load(t, gwConfig{auth: auth + `
		public /health`})
	wantStatus(t, g.get(t, "/health", ""), http.StatusOK)
	g.backend.take()
	wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
	g.backend.take()

	r := adminDo(t, http.MethodGet, "/crudauth/dbs", nil)
	wantStatus(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"memory:`+name+`"`) {
		t.Errorf("/crudauth/dbs = %s", r.body)
	}
	r = adminDo(t, http.MethodGet, "/crudauth/users/alice?db=memory:"+name, nil)
	wantStatus(t, r, http.StatusOK)
	// A memory store has no file to snapshot; its export holds alice.
	r = adminDo(t, http.MethodGet, "/crudauth/backup?format=bolt&db=memory:"+name, nil)
	wantAdminError(t, r, http.StatusBadRequest, "keeps no file")
	r = adminDo(t, http.MethodGet, "/crudauth/backup?db=memory:"+name, nil)
	wantStatus(t, r, http.StatusOK)
	if d, err := store.ReadExport(bytes.NewReader(r.body)); err != nil || len(d.Users) != 1 || d.Users[0].ID != alice.ID || len(d.Secrets) != 1 {
		t.Errorf("export of the memory store: %+v, %v", d, err)
	}

	other := memory.Open(name, memory.Options{})
	defer other.Close()
	if _, err := store.Revoke(t.Context(), other, alice.ID); err != nil {
		t.Fatal(err)
	}
	wantDenied(t, g.get(t, "/api", at), http.StatusUnauthorized, challenge("invalid_token"))
}

// TestDBAndStoreRefused: the JSON config may not name the store twice.
func TestDBAndStoreRefused(t *testing.T) {
	caddytest.NewTester(t).InitServer(testGlobalOptions+`
}
http://localhost:9080 {
	respond "up"
}`, "caddyfile")
	cfg := `{"admin": {"listen": "localhost:2999"},
		"apps": {"http": {"servers": {"srv0": {"listen": [":9080"], "routes": [{"handle": [
			{"handler": "crudauth", "db": "` + filepath.Join(t.TempDir(), "x.db") + `", "store": {"backend": "memory"}}
		]}]}}}}}`
	resp, err := newClient().Post("http://localhost:2999/load", "application/json", strings.NewReader(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode < 400 || !strings.Contains(string(body), "db and store are both set") {
		t.Errorf("status %d: %s", resp.StatusCode, body)
	}
}
