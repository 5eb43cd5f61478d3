package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// adapt runs the Caddyfile adapter over src and returns the JSON, or the
// adapter's error.
func adapt(t *testing.T, src string) (string, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
	return string(out), err
}

// handlerJSON digs the crudauth handler out of an adapted config.
func handlerJSON(t *testing.T, adapted string) map[string]any {
	t.Helper()
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []map[string]any `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal([]byte(adapted), &cfg); err != nil {
		t.Fatalf("adapted config is not JSON: %v", err)
	}
	var found []map[string]any
	var walk func(hs []map[string]any)
	walk = func(hs []map[string]any) {
		for _, h := range hs {
			if h["handler"] == "crudauth" {
				found = append(found, h)
			}
			if routes, ok := h["routes"].([]any); ok {
				for _, r := range routes {
					if rm, ok := r.(map[string]any); ok {
						if sub, ok := rm["handle"].([]any); ok {
							var subs []map[string]any
							for _, s := range sub {
								subs = append(subs, s.(map[string]any))
							}
							walk(subs)
						}
					}
				}
			}
		}
	}
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			walk(r.Handle)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one crudauth handler, found %d in %s", len(found), adapted)
	}
	return found[0]
}

// TestAdaptFullBlock pins the Caddyfile-to-JSON mapping of every
// subdirective, including rules with each kind of matcher token.
func TestAdaptFullBlock(t *testing.T) {
	src := `
http://localhost:9080 {
	@writes {
		method POST PUT
		path /reports/*
	}
	crudauth {
		db /var/lib/crudauth/users.db
		secret {env.CRUDAUTH_SECRET}
		access_ttl 10m
		refresh_ttl 48h
		refresh body
		default_scopes me:read
		grantable_scopes me:read reports:read reports:write
		token_path /auth/token
		refresh_path /auth/refresh
		issuer https://gw.example
		audience api
		realm example
		cookie_name __Secure-rt
		allowed_origins https://app.example https://admin.example
		user_id_header X-Auth-Id
		user_name_header X-Auth-Name
		scopes_header X-Auth-Scopes
		argon2 65536 3 2
		max_concurrent_hashes 3
		hash_queue_timeout 500ms
		public /public/*
		require @writes reports:write
		require /reports /reports/* reports:read
		require *
	}
	reverse_proxy localhost:9000
}`
	out, err := adapt(t, src)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(handlerJSON(t, out))
	want := `{"access_ttl":600000000000,"allowed_origins":["https://app.example","https://admin.example"],` +
		`"argon2":{"memory":65536,"threads":2,"time":3},"audience":"api","cookie_name":"__Secure-rt",` +
		`"db":"/var/lib/crudauth/users.db","default_scopes":["me:read"],` +
		`"grantable_scopes":["me:read","reports:read","reports:write"],"handler":"crudauth",` +
		`"hash_queue_timeout":500000000,"issuer":"https://gw.example","max_concurrent_hashes":3,` +
		`"realm":"example","refresh":"body","refresh_path":"/auth/refresh","refresh_ttl":172800000000000,` +
		`"rules":[{"match":[{"path":["/public/*"]}],"public":true},` +
		`{"match":[{"method":["POST","PUT"],"path":["/reports/*"]}],"scopes":["reports:write"]},` +
		`{"match":[{"path":["/reports","/reports/*"]}],"scopes":["reports:read"]},{}],` +
		`"scopes_header":"X-Auth-Scopes","secret":"{env.CRUDAUTH_SECRET}","token_path":"/auth/token",` +
		`"user_id_header":"X-Auth-Id","user_name_header":"X-Auth-Name"}`
	if string(got) != want {
		t.Errorf("adapted handler:\n got %s\nwant %s", got, want)
	}
}

// TestAdaptOrder checks that crudauth runs after rewrite and before
// reverse_proxy without an `order` option, so rules see the upstream path.
func TestAdaptOrder(t *testing.T) {
	out, err := adapt(t, `
http://localhost:9080 {
	reverse_proxy localhost:9000
	crudauth
	rewrite /old /new
	respond /x "x"
}`)
	if err != nil {
		t.Fatal(err)
	}
	iRewrite := strings.Index(out, `"handler":"rewrite"`)
	iAuth := strings.Index(out, `"handler":"crudauth"`)
	iProxy := strings.Index(out, `"handler":"reverse_proxy"`)
	iRespond := strings.Index(out, `"handler":"static_response"`)
	if iRewrite < 0 || iAuth < 0 || iProxy < 0 || iRespond < 0 {
		t.Fatalf("missing handlers in %s", out)
	}
	if !(iRewrite < iAuth && iAuth < iProxy && iAuth < iRespond) {
		t.Errorf("order: rewrite@%d crudauth@%d reverse_proxy@%d respond@%d", iRewrite, iAuth, iProxy, iRespond)
	}
}

func TestCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ name, block, want string }{
		{"unknown subdirective", "crudauth {\n bogus 1\n}", `unrecognized subdirective "bogus"`},
		{"argument on directive", "crudauth now", "wrong argument count"},
		{"ttl not a duration", "crudauth {\n access_ttl soon\n}", "access_ttl"},
		{"ttl negative", "crudauth {\n access_ttl -5m\n}", "must be positive"},
		{"two db args", "crudauth {\n db a b\n}", "wrong argument count"},
		{"no scopes", "crudauth {\n default_scopes\n}", "wrong argument count"},
		{"rule without matcher", "crudauth {\n require\n}", "needs a matcher"},
		{"rule with bare word", "crudauth {\n require admin\n}", "needs a matcher"},
		{"public with scopes", "crudauth {\n public /p/* admin\n}", "public takes only a matcher"},
		{"unknown named matcher", "crudauth {\n require @nope admin\n}", "@nope"},
		{"path after * taken as a scope", "crudauth {\n require * /b admin\n}", "takes one matcher"},
		{"argon2 arity", "crudauth {\n argon2 1 2\n}", "three numbers"},
		{"repeated subdirective", "crudauth {\n access_ttl 5m\n refresh body\n access_ttl 10m\n}", "access_ttl is given twice (first on line 3)"},
		{"repeated list subdirective", "crudauth {\n grantable_scopes a\n grantable_scopes b\n}", "grantable_scopes is given twice"},
		{"repeated throttle", "crudauth {\n throttle off\n throttle off\n}", "throttle is given twice"},
		{"repeated throttle option", "crudauth {\n throttle {\n  window 1m\n  window 2m\n }\n}", "throttle window is given twice"},
		{"hashes not a number", "crudauth {\n max_concurrent_hashes lots\n}", "max_concurrent_hashes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(t, "http://localhost:9080 {\n"+tc.block+"\n}")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestUnmarshalCaddyfile covers the Unmarshaler used outside the directive.
func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`crudauth {
		refresh body
		default_scopes a b
		require /x/* a
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.Refresh != "body" || len(h.DefaultScopes) != 2 || len(h.Rules) != 1 || h.Rules[0].Scopes[0] != "a" {
		t.Errorf("unexpected handler %+v", h)
	}
}
