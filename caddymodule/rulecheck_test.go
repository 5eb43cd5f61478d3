package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/crudauth/caddy-crudauth/internal/gate"
)

// rulesOnly adapts a site block holding a crudauth block and loads the
// handler's rule matchers, nothing else.
func rulesOnly(t *testing.T, site string) *Handler {
	t.Helper()
	return rulesOnlyLogged(t, site, zap.NewNop())
}

func rulesOnlyLogged(t *testing.T, site string, logger *zap.Logger) *Handler {
	t.Helper()
	out, err := adapt(t, "http://localhost:9080 {\n"+site+"\n}")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(handlerJSON(t, out))
	h := new(Handler)
	if err := json.Unmarshal(raw, h); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	h.logger = logger
	if err := h.provisionRules(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestUncoveredPrefixes runs the cases of internal/gate's test of the same
// name on the Caddyfile and Caddy's own matchers, with the requests
// readied by prepareOwnRequest: Caddy's path matcher needs the replacer
// in the context, and without it every rule would be skipped.
func TestUncoveredPrefixes(t *testing.T) {
	for _, tc := range []struct {
		name string
		site string
		want []gate.UncoveredPrefix
	}{
		{"the shipped mistake", "crudauth {\n require /admin/* admin\n public /public/*\n}",
			[]gate.UncoveredPrefix{{Rule: 0, Prefix: "/admin", Method: "GET", JudgeBy: -1}}},
		{"both patterns", "crudauth {\n require /admin /admin/* admin\n}", nil},
		{"a prefix pattern", "crudauth {\n require /admin* admin\n}", nil},
		{"covered by a later rule", "crudauth {\n require /admin/* admin\n require /admin admin\n}", nil},
		{"covered more strictly", "crudauth {\n require /admin/* admin\n require * admin root\n}", nil},
		{"judged by a weaker rule", "crudauth {\n require /admin/* admin\n require /admin me:read\n}",
			[]gate.UncoveredPrefix{{Rule: 0, Prefix: "/admin", Method: "GET", JudgeBy: 1}}},
		{"made public", "crudauth {\n public /reports\n require /reports/* reports:read\n}",
			[]gate.UncoveredPrefix{{Rule: 1, Prefix: "/reports", Method: "GET", JudgeBy: 0}}},
		{"a method rule", "@w {\n path /reports/*\n method POST\n}\ncrudauth {\n require @w reports:write\n require /reports /reports/* reports:read\n}",
			[]gate.UncoveredPrefix{{Rule: 0, Prefix: "/reports", Method: "POST", JudgeBy: 1}}},
		{"a public /x/* needs nothing", "crudauth {\n public /public/*\n}", nil},
		{"a host-gated rule is not guessed at", "@h {\n host api.example\n path /admin/*\n}\ncrudauth {\n require @h admin\n}", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := rulesOnly(t, tc.site)
			got := h.gate.UncoveredPrefixes(prepareOwnRequest)
			if len(got) != len(tc.want) {
				t.Fatalf("uncoveredPrefixes = %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("uncoveredPrefixes[%d] = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestUncoveredPrefixWarning: loading the rules warns about the shipped
// mistake, naming the rule and the fix.
func TestUncoveredPrefixWarning(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	rulesOnlyLogged(t, "crudauth {\n grantable_scopes admin\n require /admin/* admin\n}", zap.New(core))
	var found []string
	for _, e := range logs.All() {
		f := e.ContextMap()
		if strings.HasPrefix(e.Message, "a rule guards what lies under a path") {
			found = append(found, fmt.Sprintf("%v %v %v %v", f["rule"], f["covers"], f["not_covered"], f["fix"]))
		}
	}
	want := []string{"0 /admin/* /admin list both patterns, e.g. require /admin /admin/* admin"}
	if !slices.Equal(found, want) {
		t.Errorf("warnings %q, want %q", found, want)
	}
}
