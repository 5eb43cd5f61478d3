package caddymodule

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/cli"
	"github.com/crudauth/caddy-crudauth/internal/explain"
)

// explainSite is a site with the rules of the README's example; rules
// replaces the crudauth block's rules. The database path and the secret
// are never used by explain: the database must not be created, and the
// environment variable is not set.
// siteExtra are lines for the site block, such as named matchers.
func explainSite(host, rules string, siteExtra ...string) string {
	return `http://` + host + ` {
` + strings.Join(siteExtra, "\n") + `
	@writes {
		path /reports /reports/*
		method POST PUT PATCH DELETE
	}
	crudauth {
		db ` + "{{DB}}" + `
		secret {env.CRUDAUTH_EXPLAIN_TEST_UNSET}
		default_scopes me:read
		grantable_scopes me:read reports:read reports:write admin
` + rules + `
	}
	reverse_proxy localhost:1
}
`
}

const explainRules = `		public /public/*
		require @writes reports:write
		require /admin/* admin`

// runExplain writes caddyfile to a file named Caddyfile (so the caddyfile
// adapter is picked as caddy run picks it) and runs
// `caddy crudauth explain --config <it> args...`.
func runExplain(t *testing.T, caddyfile string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	dir := t.TempDir()
	db := filepath.Join(dir, "never-created.db")
	cf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cf, []byte(strings.ReplaceAll(caddyfile, "{{DB}}", db)), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errOut}
	cmd := explainCommand(env)
	cmd.SetArgs(append([]string{"--config", cf}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err = cmd.Execute()
	if _, statErr := os.Stat(db); statErr == nil {
		t.Errorf("explain created the database %s", db)
	}
	return out.String(), errOut.String(), err
}

func TestExplain(t *testing.T) {
	site := explainSite("localhost", explainRules)
	const writes = `{"method":["POST","PUT","PATCH","DELETE"],"path":["/reports","/reports/*"]}`
	tests := []struct {
		name    string
		config  string
		args    []string
		want    string   // the whole output, when set
		lines   []string // lines the output must hold
		notLine []string // lines it must not hold
	}{
		{
			// The misconfiguration the tool is for: /admin/* does not
			// cover /admin, so any valid token reaches it.
			name:   "admin wildcard leaves /admin open",
			config: site,
			args:   []string{"GET", "/admin", "--scopes", "me:read"},
			want: `crudauth handler 1: server srv0, host localhost
  GET /admin  -> no rule (any valid token)
decision: needs any valid token
decision for scopes "me:read": allowed
`,
		},
		{
			name:   "admin and its subtree",
			config: explainSite("localhost", "\t\tpublic /public/*\n\t\trequire /admin /admin/* admin"),
			args:   []string{"GET", "/admin", "--scopes", "me:read"},
			want: `crudauth handler 1: server srv0, host localhost
  GET /admin  -> rules[1]: require {"path":["/admin","/admin/*"]} admin
decision: needs a valid token with scopes: admin
decision for scopes "me:read": denied (403 insufficient_scope: needs admin)
`,
		},
		{
			name:   "scopes allowed",
			config: site,
			args:   []string{"GET", "/admin/users", "--scopes", "admin me:read"},
			lines: []string{
				`  GET /admin/users  -> rules[2]: require {"path":["/admin/*"]} admin`,
				`decision: needs a valid token with scopes: admin`,
				`decision for scopes "admin me:read": allowed`,
			},
		},
		{
			name:   "logout endpoint",
			config: site,
			args:   []string{"POST", "/logout"},
			lines:  []string{`decision: logout endpoint`},
		},
		{
			name:   "sessions endpoint",
			config: explainSite("localhost", explainRules+"\n\t\tsessions_path /sessions"),
			args:   []string{"DELETE", "/sessions/s1"},
			lines:  []string{`decision: sessions endpoint`},
		},
		{
			// The handler serves the discovery endpoints without a token,
			// before any rule: explain must not say a token is needed.
			name:   "jwks endpoint",
			config: site,
			args:   []string{"GET", "/.well-known/jwks.json"},
			lines:  []string{`decision: JWKS endpoint (public)`},
		},
		{
			name:   "metadata endpoint",
			config: site,
			args:   []string{"GET", "/.well-known/oauth-authorization-server"},
			lines:  []string{`decision: metadata endpoint (public)`},
		},
		{
			name:   "preflight to a protected route",
			config: site,
			args:   []string{"OPTIONS", "/admin/users", "--header", "Origin: https://app.example", "--header", "Access-Control-Request-Method: DELETE"},
			lines:  []string{`decision: CORS preflight: passed on without a token and without identity headers`},
		},
		{
			name:    "OPTIONS that is no preflight",
			config:  site,
			args:    []string{"OPTIONS", "/admin/users", "--header", "Origin: https://app.example"},
			lines:   []string{`decision: needs a valid token with scopes: admin`},
			notLine: []string{`decision: CORS preflight: passed on without a token and without identity headers`},
		},
		{
			name:   "dot segment refused",
			config: site,
			args:   []string{"GET", "/admin/../public/x", "--scopes", "admin"},
			want: `crudauth handler 1: server srv0, host localhost
decision: refused (400): request path has a dot segment (. or ..) in some reading
`,
		},
		{
			name:   "encoded dot segment refused",
			config: site,
			args:   []string{"GET", "/public/%2e%2e/admin/x"},
			lines:  []string{`decision: refused (400): request path has a dot segment (. or ..) in some reading`},
		},
		{
			name:   "lower-case method refused",
			config: site,
			args:   []string{"delete", "/reports/q3"},
			lines:  []string{`decision: refused (400): request method is not in upper case`},
		},
		{
			name:   "_method in the query refused",
			config: site,
			args:   []string{"GET", "/reports/q3?_method=DELETE"},
			lines:  []string{`decision: refused (400): request query carries a _method override`},
		},
		{
			name:   "HEAD is also read as GET",
			config: site,
			args:   []string{"HEAD", "/admin/x"},
			want: `crudauth handler 1: server srv0, host localhost
  HEAD /admin/x  -> rules[2]: require {"path":["/admin/*"]} admin
  GET /admin/x   -> rules[2]: require {"path":["/admin/*"]} admin
decision: needs a valid token with scopes: admin
`,
		},
		{
			name:   "a form POST may be read as any method",
			config: site,
			args:   []string{"POST", "/reports", "--header", "Content-Type: application/x-www-form-urlencoded", "--scopes", "reports:read"},
			want: `crudauth handler 1: server srv0, host localhost
  POST /reports    -> rules[1]: require ` + writes + ` reports:write
  GET /reports     -> no rule (any valid token)
  PUT /reports     -> rules[1]: require ` + writes + ` reports:write
  PATCH /reports   -> rules[1]: require ` + writes + ` reports:write
  DELETE /reports  -> rules[1]: require ` + writes + ` reports:write
decision: needs a valid token with scopes: reports:write
decision for scopes "reports:read": denied (403 insufficient_scope: needs reports:write)
`,
		},
		{
			name:    "a POST without a form body is read as POST",
			config:  site,
			args:    []string{"POST", "/reports", "--header", "Content-Type: application/json"},
			lines:   []string{`  POST /reports  -> rules[1]: require ` + writes + ` reports:write`},
			notLine: []string{`  GET /reports  -> no rule (any valid token)`},
		},
		{
			name:   "GET from the named matcher is not a write",
			config: site,
			args:   []string{"GET", "/reports/q3"},
			want: `crudauth handler 1: server srv0, host localhost
  GET /reports/q3  -> no rule (any valid token)
decision: needs any valid token
`,
		},
		{
			name:   "encoded slash has its raw reading",
			config: explainSite("localhost", "\t\trequire /files/a/* admin"),
			args:   []string{"GET", "/files%2Fa/x"},
			want: `crudauth handler 1: server srv0, host localhost
  GET /files/a/x    -> rules[0]: require {"path":["/files/a/*"]} admin
  GET /files%2Fa/x  -> no rule (any valid token)
decision: needs a valid token with scopes: admin
`,
		},
		{
			name:   "public",
			config: site,
			args:   []string{"GET", "/public/logo.png", "--scopes", ""},
			want: `crudauth handler 1: server srv0, host localhost
  GET /public/logo.png  -> rules[0]: public {"path":["/public/*"]}
decision: public
decision for scopes "": allowed
`,
		},
		{
			name:   "token endpoint",
			config: site,
			args:   []string{"POST", "/token"},
			want:   "crudauth handler 1: server srv0, host localhost\ndecision: token endpoint\n",
		},
		{
			name:   "refresh endpoint",
			config: site,
			args:   []string{"POST", "/refresh"},
			lines:  []string{"decision: refresh endpoint"},
		},
		{
			name:   "a rule without matcher or scopes",
			config: explainSite("localhost", "\t\trequire *"),
			args:   []string{"GET", "/x"},
			lines:  []string{"  GET /x  -> rules[0]: require * (any valid token)", "decision: needs any valid token"},
		},
		{
			// Scopes outside grantable_scopes do not count (grants), so
			// a rule requiring one shuts its route for every token.
			name:   "scopes outside the ceiling do not count",
			config: explainSite("localhost", "\t\trequire /ops/* ops"),
			args:   []string{"GET", "/ops/x", "--scopes", "me:read ops"},
			lines: []string{
				`decision: needs a valid token with scopes: ops`,
				`decision for scopes "me:read ops": denied (403 insufficient_scope: needs ops); ops outside grantable_scopes, not counted`,
			},
		},
		{
			// ServeHTTP strips identity and override headers before the
			// rules see the request; a rule matching on one never applies.
			name:   "stripped headers do not reach the rules",
			config: explainSite("localhost", "\t\tpublic @forged", "\t@forged header X-User-Id *"),
			args:   []string{"GET", "/x", "--header", "X-User-Id: 1"},
			lines:  []string{"  GET /x  -> no rule (any valid token)", "decision: needs any valid token"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := runExplain(t, tc.config, tc.args...)
			if err != nil {
				t.Fatalf("explain %q: %v\n%s", tc.args, err, stderr)
			}
			if tc.want != "" && out != tc.want {
				t.Errorf("explain %q printed\n%s\nwant\n%s", tc.args, out, tc.want)
			}
			lines := strings.Split(out, "\n")
			for _, l := range tc.lines {
				if !contains(lines, l) {
					t.Errorf("explain %q: no line %q in\n%s", tc.args, l, out)
				}
			}
			for _, l := range tc.notLine {
				if contains(lines, l) {
					t.Errorf("explain %q: line %q in\n%s", tc.args, l, out)
				}
			}
		})
	}
}

func contains(lines []string, l string) bool {
	for _, x := range lines {
		if x == l {
			return true
		}
	}
	return false
}

// TestExplainHandlers: every crudauth handler of a config is explained,
// each headed by where it is; --handler and --host pick some.
func TestExplainHandlers(t *testing.T) {
	// The second handler is in a route block, so in a subroute's subroute.
	config := explainSite("a.example", "\t\trequire /admin/* admin") + `
http://b.example {
	route /api/* {
		crudauth {
			db {{DB}}
			grantable_scopes admin
			require /admin /admin/* admin
		}
		reverse_proxy localhost:1
	}
}
`
	out, stderr, err := runExplain(t, config, "GET", "/admin")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	want := `crudauth handler 1: server srv0, host a.example
  GET /admin  -> no rule (any valid token)
decision: needs any valid token

crudauth handler 2: server srv0, host b.example
  GET /admin  -> rules[0]: require {"path":["/admin","/admin/*"]} admin
decision: needs a valid token with scopes: admin
`
	if out != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}

	for _, args := range [][]string{{"--handler", "2"}, {"--host", "b.example"}} {
		out, stderr, err = runExplain(t, config, append([]string{"GET", "/admin"}, args...)...)
		if err != nil {
			t.Fatalf("%q: %v\n%s", args, err, stderr)
		}
		if !strings.HasPrefix(out, "crudauth handler 2: ") || strings.Contains(out, "handler 1") {
			t.Errorf("%q: got\n%s", args, out)
		}
	}
	if _, _, err := runExplain(t, config, "GET", "/admin", "--host", "c.example"); err == nil || !strings.Contains(err.Error(), `serves host "c.example"`) {
		t.Errorf("unknown host: %v", err)
	}
	if _, _, err := runExplain(t, config, "GET", "/admin", "--handler", "3"); err == nil || !strings.Contains(err.Error(), "has 2 crudauth handler(s)") {
		t.Errorf("--handler 3: %v", err)
	}
}

func TestExplainJSON(t *testing.T) {
	out, stderr, err := runExplain(t, explainSite("localhost", explainRules), "GET", "/admin", "--scopes", "me:read", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	var got explain.Output
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(got.Handlers) != 1 {
		t.Fatalf("handlers: %s", out)
	}
	e := got.Handlers[0]
	if got.Method != "GET" || got.Target != "/admin" || e.Server != "srv0" || e.Decision != "any_token" ||
		len(e.Readings) != 1 || e.Readings[0].Rule != -1 || e.ForToken == nil || !e.ForToken.Allowed ||
		e.Location != "apps.http.servers.srv0.routes[0].handle[0].routes[0].handle[0]" {
		t.Errorf("got %s", out)
	}
}

func TestExplainErrors(t *testing.T) {
	site := explainSite("localhost", explainRules)
	tests := []struct {
		config string
		args   []string
		want   string
	}{
		{`http://localhost {
	respond "hi"
}`, []string{"GET", "/"}, "no crudauth handler in "},
		{site, []string{"GET", "/", "--header", "Content-Type"}, `want "Name: value"`},
		{site, []string{"GET", "/", "--header", "Host: x"}, "--host"},
		{site, []string{"GET", "/", "--scopes", "a\"b"}, "--scopes"},
		{site, []string{"GET", "no-slash"}, "parsing the request"},
		{site, []string{"GET"}, "accepts 2 arg(s)"},
		{explainSite("localhost", "\t\trequire /a ops x\"y"), []string{"GET", "/"}, "rules[0].scopes"},
	}
	for _, tc := range tests {
		_, _, err := runExplain(t, tc.config, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("explain %q: err %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

// TestExplainWarnings: provisionRules' warnings reach the operator.
func TestExplainWarnings(t *testing.T) {
	_, stderr, err := runExplain(t, explainSite("localhost", "\t\trequire /ops/* ops"), "GET", "/ops/x")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "rule requires scopes outside grantable_scopes") {
		t.Errorf("stderr: %q", stderr)
	}
}

// TestExplainAgreesWithGateway runs requests through a real gateway and
// explain on the same Caddyfile: the status the gateway answers is the one
// explain's decision implies, for each request and token.
func TestExplainAgreesWithGateway(t *testing.T) {
	site := `
	@writes {
		path /reports /reports/*
		method POST PUT PATCH DELETE
	}`
	g := startGateway(t, gwConfig{site: site, auth: `
		secret ` + testSecret + `
		refresh body
		default_scopes me:read
		grantable_scopes me:read reports:read reports:write admin
		public /public/*
		require @writes reports:write
		require /admin/* admin`})
	g.addUser(t, "alice", nil)
	tokens := map[string]string{}
	for _, s := range []string{"me:read", "reports:read", "reports:write", "admin"} {
		tokens[s] = g.mustLogin(t, "alice", s).access
	}
	form := []string{"Content-Type", formType}
	cases := []struct {
		method, target, scopes string
		hdr                    []string
		want                   int // what the gateway must answer, as a check on the test itself
	}{
		{"GET", "/admin", "me:read", nil, http.StatusOK},
		{"GET", "/admin/x", "me:read", nil, http.StatusForbidden},
		{"GET", "/admin/x", "admin", nil, http.StatusOK},
		{"HEAD", "/admin/x", "me:read", nil, http.StatusForbidden},
		{"GET", "/admin/../public/x", "admin", nil, http.StatusBadRequest},
		{"delete", "/reports/q3", "reports:write", nil, http.StatusBadRequest},
		{"POST", "/reports/q3", "reports:read", form, http.StatusForbidden},
		{"POST", "/reports/q3", "reports:write", form, http.StatusOK},
		{"GET", "/reports/q3", "reports:read", nil, http.StatusOK},
		{"GET", "/public/x", "", nil, http.StatusOK},
		{"GET", "/x", "", nil, http.StatusUnauthorized},
		{"GET", "/a%2Fb", "me:read", nil, http.StatusOK},
	}
	cf := g.caddyfile(gwConfig{site: site, auth: `
		secret ` + testSecret + `
		refresh body
		default_scopes me:read
		grantable_scopes me:read reports:read reports:write admin
		public /public/*
		require @writes reports:write
		require /admin/* admin`})
	for _, tc := range cases {
		args := []string{tc.method, tc.target, "--json", "--host", "localhost"}
		hdr := tc.hdr
		if tc.scopes != "" {
			args = append(args, "--scopes", tc.scopes)
			hdr = append([]string{"Authorization", "Bearer " + tokens[tc.scopes]}, hdr...)
		}
		for i := 0; i+1 < len(tc.hdr); i += 2 {
			args = append(args, "--header", tc.hdr[i]+": "+tc.hdr[i+1])
		}
		out, stderr, err := runExplainFile(t, cf, args...)
		if err != nil {
			t.Fatalf("explain %q: %v\n%s", args, err, stderr)
		}
		var got explain.Output
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Handlers) != 1 {
			t.Fatalf("explain %q: %v\n%s", args, err, out)
		}
		implied := impliedStatus(got.Handlers[0], tc.scopes != "")
		resp := rawRequest(t, tc.method, tc.target, hdr...)
		if resp.status != implied || resp.status != tc.want {
			t.Errorf("%s %s with %q: gateway answered %d, explain implies %d (decision %s), test expects %d",
				tc.method, tc.target, tc.scopes, resp.status, implied, got.Handlers[0].Decision, tc.want)
		}
	}
}

// runExplainFile is runExplain on a Caddyfile used as it is.
func runExplainFile(t *testing.T, caddyfile string, args ...string) (string, string, error) {
	t.Helper()
	cf := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cf, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd := explainCommand(&cli.Env{Stdout: &out, Stderr: &errOut})
	cmd.SetArgs(append([]string{"--config", cf}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

// impliedStatus is the status the gateway answers, by explain's decision,
// for a request with a valid token (withToken) or none.
func impliedStatus(e explain.Explanation, withToken bool) int {
	switch {
	case e.Decision == "refused":
		return http.StatusBadRequest
	case e.Decision == "public":
		return http.StatusOK
	case !withToken:
		return http.StatusUnauthorized
	case e.ForToken != nil && e.ForToken.Allowed:
		return http.StatusOK
	case e.ForToken != nil:
		return e.ForToken.Status
	}
	return 0
}
