package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/explain"
	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// twoHandlers is an adapted config with a crudauth handler on each of two
// hosts.
const twoHandlers = `{"apps":{"http":{"servers":{"srv0":{"routes":[
 {"match":[{"host":["a.example"]}],"handle":[{"handler":"crudauth","realm":"one"}]},
 {"match":[{"host":["b.example"]}],"handle":[{"handler":"crudauth","realm":"two"}]}
]}}}}}`

// fakeExplainHost is a host whose handlers decide by their realm: it
// records what explain asked of it.
type fakeExplainHost struct {
	config      string
	loaded      []string // file, adapter
	requests    []*http.Request
	explained   []string // the realms
	provisionBy string   // the realm whose provisioning fails
}

func (h *fakeExplainHost) hooks() ExplainHost {
	return ExplainHost{
		LoadConfig: func(file, adapter string) ([]byte, error) {
			h.loaded = append(h.loaded, file, adapter)
			if h.config == "" {
				return nil, errors.New("adapting: no such file")
			}
			return []byte(h.config), nil
		},
		Request: func(method, target, host string, headers []string) (*http.Request, error) {
			r, err := explain.ParseRequest(method, target, host, headers)
			h.requests = append(h.requests, r)
			return r, err
		},
		ServesHost: func(f explain.Found, r *http.Request) bool {
			return len(f.Hosts) == 1 && f.Hosts[0] == r.Host
		},
		Explain: func(raw []byte, r *http.Request, scopes *scope.Set, logger *zap.Logger) (explain.Explanation, error) {
			var cfg struct{ Realm string }
			if err := json.Unmarshal(raw, &cfg); err != nil {
				return explain.Explanation{}, err
			}
			if cfg.Realm == h.provisionBy {
				return explain.Explanation{}, errors.New("rules[0]: bad matcher")
			}
			logger.Warn("judged by " + cfg.Realm)
			h.explained = append(h.explained, cfg.Realm)
			e := explain.Explanation{Readings: []explain.Reading{{Method: r.Method, Path: r.URL.Path, Rule: -1}}, Decision: "any_token"}
			if scopes != nil {
				e.ForToken = &explain.ScopeVerdict{Scopes: scopes.String(), Allowed: true}
			}
			return e, nil
		},
	}
}

// runExplain runs `explain --config <file> args...` with host's hooks.
func runExplain(t *testing.T, host *fakeExplainHost, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cf := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(cf, []byte(host.config), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut, ExplainHost: host.hooks()}
	cmd := explainCommand(env)
	cmd.SetArgs(append([]string{"--config", cf}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// TestExplainLoop: explain asks the host for each handler of the config
// in turn, with a request of its own, filters them by --handler and by
// --host (only when given), and says which one failed to provision.
func TestExplainLoop(t *testing.T) {
	t.Run("every handler, each with its own request", func(t *testing.T) {
		h := &fakeExplainHost{config: twoHandlers}
		out, stderr, err := runExplain(t, h, "GET", "/x?y", "--json", "--adapter", "json", "--scopes", "me:read")
		if err != nil {
			t.Fatal(err)
		}
		if h.loaded[1] != "json" || !strings.HasSuffix(h.loaded[0], "caddy.json") {
			t.Errorf("LoadConfig(%q)", h.loaded)
		}
		if strings.Join(h.explained, " ") != "one two" {
			t.Errorf("explained %v, want one two", h.explained)
		}
		if len(h.requests) != 2 || h.requests[0] == h.requests[1] {
			t.Errorf("the handlers shared a request: %v", h.requests)
		}
		var o explain.Output
		if err := json.Unmarshal([]byte(out), &o); err != nil {
			t.Fatalf("--json printed %q: %v", out, err)
		}
		if o.Method != "GET" || o.Target != "/x?y" || o.Host != "localhost" || len(o.Handlers) != 2 ||
			o.Handlers[1].Number != 2 || o.Handlers[1].Hosts[0] != "b.example" || o.Handlers[1].Location == "" ||
			o.Handlers[0].ForToken == nil || o.Handlers[0].ForToken.Scopes != "me:read" {
			t.Errorf("--json printed %s", out)
		}
		if !strings.Contains(stderr, "judged by one") {
			t.Errorf("the handlers' warnings did not reach stderr: %q", stderr)
		}
	})
	t.Run("--host given", func(t *testing.T) {
		h := &fakeExplainHost{config: twoHandlers}
		out, _, err := runExplain(t, h, "GET", "/", "--host", "b.example")
		if err != nil || strings.Join(h.explained, " ") != "two" || !strings.Contains(out, "b.example") {
			t.Errorf("explained %v, printed %q, %v", h.explained, out, err)
		}
		_, _, err = runExplain(t, h, "GET", "/", "--host", "c.example")
		if err == nil || !strings.Contains(err.Error(), `serves host "c.example"`) {
			t.Errorf("--host no handler serves: %v", err)
		}
	})
	t.Run("--handler", func(t *testing.T) {
		h := &fakeExplainHost{config: twoHandlers}
		if _, _, err := runExplain(t, h, "GET", "/", "--handler", "2"); err != nil || strings.Join(h.explained, " ") != "two" {
			t.Errorf("--handler 2 explained %v, %v", h.explained, err)
		}
		for _, n := range []string{"3", "-1"} {
			if _, _, err := runExplain(t, h, "GET", "/", "--handler", n); err == nil || !strings.Contains(err.Error(), "has 2 crudauth handler(s)") {
				t.Errorf("--handler %s: %v", n, err)
			}
		}
	})
	t.Run("errors", func(t *testing.T) {
		h := &fakeExplainHost{config: twoHandlers, provisionBy: "two"}
		_, _, err := runExplain(t, h, "GET", "/")
		if err == nil || !strings.Contains(err.Error(), "crudauth handler 2 (apps.http.servers.srv0.routes[1].handle[0]): rules[0]: bad matcher") {
			t.Errorf("a handler that does not provision: %v", err)
		}
		_, _, err = runExplain(t, &fakeExplainHost{config: `{"apps":{}}`}, "GET", "/")
		if err == nil || !strings.Contains(err.Error(), "no crudauth handler in") {
			t.Errorf("no handler: %v", err)
		}
		_, _, err = runExplain(t, &fakeExplainHost{}, "GET", "/")
		if err == nil || err.Error() != "adapting: no such file" {
			t.Errorf("a config that does not load: %v", err)
		}
		_, _, err = runExplain(t, &fakeExplainHost{config: twoHandlers}, "GET", "/", "--scopes", "a\x00b")
		if err == nil || !strings.HasPrefix(err.Error(), "--scopes: ") {
			t.Errorf("bad --scopes: %v", err)
		}
	})
}

// TestGroupsNeedASubcommand: a command that only groups others fails
// without one, or with one it does not know, and names itself.
func TestGroupsNeedASubcommand(t *testing.T) {
	env := &Env{DefaultDB: "/nonexistent/crudauth.db", DefaultAdmin: "localhost:2019"}
	for _, c := range Commands(env) {
		if !c.HasSubCommands() {
			continue
		}
		for _, args := range [][]string{{}, {"bogus"}} {
			var out bytes.Buffer
			c.SetArgs(args)
			c.SetOut(&out)
			c.SetErr(&out)
			err := c.Execute()
			want := "a subcommand is needed; see '" + c.Name() + " --help'"
			if len(args) > 0 {
				want = `unknown command "bogus"; see '` + c.Name() + " --help'"
			}
			if err == nil || err.Error() != want {
				t.Errorf("%s %v: %v, want %q", c.Name(), args, err, want)
			}
		}
	}
	if names := len(Commands(env)); names != 7 {
		t.Errorf("%d commands, want 7", names)
	}
}

// TestExplainWithoutHost: a program that mounts the commands without the
// explain hooks gets an error from explain, not a crash.
func TestExplainWithoutHost(t *testing.T) {
	env := &Env{}
	err := env.Explain(ExplainOptions{ConfigFile: "Caddyfile", Method: "GET", Target: "/"})
	if err == nil || !strings.Contains(err.Error(), "explain is not available") {
		t.Errorf("explain without hooks: %v", err)
	}
	env.ExplainHost.LoadConfig = func(string, string) ([]byte, error) { return []byte(`{}`), nil }
	if err := env.Explain(ExplainOptions{ConfigFile: "Caddyfile", Method: "GET", Target: "/"}); err == nil {
		t.Error("explain with only some of the hooks: no error")
	}
}
