package caddymodule

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/crudauth/caddy-crudauth/internal/gate"

	"go.uber.org/zap"
)

// rulesOnly adapts a site block holding a crudauth block and loads the
// handler's rule matchers, nothing else.
func rulesOnly(t *testing.T, site string) *Handler {
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
	h.logger = zap.NewNop()
	if err := h.provisionRules(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

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
