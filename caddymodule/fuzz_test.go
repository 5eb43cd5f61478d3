package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzCaddyfile feeds arbitrary crudauth blocks to the directive parser,
// both directly (UnmarshalCaddyfile) and through the whole httpcaddyfile
// adapter inside a site with a named matcher. Neither may panic, and a
// config that adapts must survive the static checks without panicking.
func FuzzCaddyfile(f *testing.F) {
	for _, s := range []string{
		"",
		"secret {env.CRUDAUTH_SECRET}\naccess_ttl 10m\nrefresh_ttl 24h\nrefresh body",
		"default_scopes read\ngrantable_scopes read write admin",
		"require /admin/* admin\npublic /public/*\nrequire @named read\nrequire * read",
		"argon2 19456 2 1\nmax_concurrent_hashes 2\nhash_queue_timeout 1s",
		"argon2 1 1 1", "argon2 x y z", "argon2 4294967296 2 256",
		"token_path /auth/token\nrefresh_path /auth/refresh\ncookie_name __Host-x",
		"user_id_header X-Id\nuser_name_header X-Name\nscopes_header X-Scopes",
		"allowed_origins https://a.example http://b.example:8080",
		"throttle {\n\tmax_failures 3\n\twindow 30s\n}",
		"public\nrequire", "require /x/* {\n}", "public @missing", "unknown 1",
		"access_ttl -1s", "access_ttl 1h\nrefresh_ttl 1m", "}", "{", "\"", "`", "{$X}",
		"default_scopes a\"b", "default_scopes \x00", "secret \"\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, block string) {
		// import reads files and snippets: not the parser under test.
		if strings.Contains(block, "import") {
			return
		}
		if tokens, err := caddyfile.Tokenize([]byte("crudauth {\n"+block+"\n}\n"), "Fuzzfile"); err == nil {
			h := new(Handler)
			if err := h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err == nil {
				h.setDefaults()
				_ = h.checkStatic()
			}
		}

		src := "{\n\tadmin off\n}\nhttp://localhost:9080 {\n\t@named path /named/*\n\tcrudauth {\n" +
			block + "\n\t}\n\trespond ok\n}\n"
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
		if err != nil {
			return
		}
		var cfg any
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatalf("adapter produced invalid JSON: %v", err)
		}
		for _, raw := range findHandlers(cfg) {
			b, _ := json.Marshal(raw)
			h := new(Handler)
			if err := json.Unmarshal(b, h); err != nil {
				t.Fatalf("adapted handler does not unmarshal: %v\n%s", err, b)
			}
			h.setDefaults()
			_ = h.checkStatic()
		}
	})
}

// findHandlers returns every object with "handler": "crudauth" in v.
func findHandlers(v any) []map[string]any {
	var out []map[string]any
	switch x := v.(type) {
	case map[string]any:
		if x["handler"] == "crudauth" {
			out = append(out, x)
		}
		for _, c := range x {
			out = append(out, findHandlers(c)...)
		}
	case []any:
		for _, c := range x {
			out = append(out, findHandlers(c)...)
		}
	}
	return out
}
