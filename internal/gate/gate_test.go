package gate

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/paths"
	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// set is one matcher set, as a Caddyfile named matcher writes it: path
// patterns, methods and hosts.
type set map[string][]string

// rule builds a RuleConfig whose matcher is a small interpreter of its
// sets, with the semantics of Caddy's path, method and host matchers for
// the patterns these tests use: a path pattern is exact, or a prefix when
// it ends in `*`, and folds case; `*` alone matches every path. No set:
// the rule selects every request.
func rule(public bool, scopes []string, sets ...set) RuleConfig {
	rc := RuleConfig{Public: public, Scopes: scopes}
	if len(sets) == 0 {
		return rc
	}
	for _, s := range sets {
		m := map[string]json.RawMessage{}
		for k, v := range s {
			m[k], _ = json.Marshal(v)
		}
		rc.Matchers = append(rc.Matchers, m)
	}
	rc.Load = func() (func(*http.Request) (bool, error), error) {
		return func(r *http.Request) (bool, error) {
			for _, s := range sets {
				if matchSet(s, r) {
					return true, nil
				}
			}
			return false, nil
		}, nil
	}
	return rc
}

func matchSet(s set, r *http.Request) bool {
	if hosts, ok := s["host"]; ok && !slices.Contains(hosts, r.Host) {
		return false
	}
	if methods, ok := s["method"]; ok && !slices.Contains(methods, r.Method) {
		return false
	}
	if patterns, ok := s["path"]; ok {
		p := strings.ToLower(r.URL.Path)
		return slices.ContainsFunc(patterns, func(pat string) bool {
			pat = strings.ToLower(pat)
			if prefix, ok := strings.CutSuffix(pat, "*"); ok {
				return strings.HasPrefix(p, prefix)
			}
			return p == pat
		})
	}
	return true
}

func scopes(s ...string) []string { return s }

func newGate(t *testing.T, cfg Config) *Gate {
	t.Helper()
	if cfg.Realm == "" {
		cfg.Realm = "crudauth"
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestNewRuleErrors(t *testing.T) {
	loadErr := errors.New("rules[1]: loading matchers: boom")
	failing := rule(false, nil, set{"path": {"/x"}})
	failing.Load = func() (func(*http.Request) (bool, error), error) { return nil, loadErr }
	loaded := false
	second := rule(false, nil, set{"path": {"/y"}})
	second.Load = func() (func(*http.Request) (bool, error), error) { loaded = true; return nil, nil }
	for _, tc := range []struct {
		name  string
		rules []RuleConfig
		want  string
	}{
		{"public with scopes", []RuleConfig{rule(true, scopes("a"))}, "rules[0]: a public rule cannot require scopes"},
		{"invalid scope", []RuleConfig{rule(false, nil), rule(false, scopes("a\"b"))}, "rules[1].scopes: "},
		{"matchers fail to load", []RuleConfig{rule(false, nil), failing}, loadErr.Error()},
		// The first mistake in rule order is the one reported: rule 0's
		// scopes before rule 1's matchers, which are never loaded.
		{"in rule order", []RuleConfig{rule(false, scopes("a\"b")), second}, "rules[0].scopes: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{Rules: tc.rules})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
	if loaded {
		t.Error("a rule after the failing one was loaded")
	}
}

func TestUncoveredPrefixes(t *testing.T) {
	w := set{"path": {"/reports/*"}, "method": {"POST"}}
	for _, tc := range []struct {
		name  string
		rules []RuleConfig
		want  []UncoveredPrefix
	}{
		{"the shipped mistake", []RuleConfig{rule(false, scopes("admin"), set{"path": {"/admin/*"}}), rule(true, nil, set{"path": {"/public/*"}})},
			[]UncoveredPrefix{{Rule: 0, Prefix: "/admin", Method: "GET", JudgeBy: -1}}},
		{"both patterns", []RuleConfig{rule(false, scopes("admin"), set{"path": {"/admin", "/admin/*"}})}, nil},
		{"a prefix pattern", []RuleConfig{rule(false, scopes("admin"), set{"path": {"/admin*"}})}, nil},
		{"covered by a later rule", []RuleConfig{rule(false, scopes("admin"), set{"path": {"/admin/*"}}), rule(false, scopes("admin"), set{"path": {"/admin"}})}, nil},
		{"covered more strictly", []RuleConfig{rule(false, scopes("admin"), set{"path": {"/admin/*"}}), rule(false, scopes("admin", "root"))}, nil},
		{"judged by a weaker rule", []RuleConfig{rule(false, scopes("admin"), set{"path": {"/admin/*"}}), rule(false, scopes("me:read"), set{"path": {"/admin"}})},
			[]UncoveredPrefix{{Rule: 0, Prefix: "/admin", Method: "GET", JudgeBy: 1}}},
		{"made public", []RuleConfig{rule(true, nil, set{"path": {"/reports"}}), rule(false, scopes("reports:read"), set{"path": {"/reports/*"}})},
			[]UncoveredPrefix{{Rule: 1, Prefix: "/reports", Method: "GET", JudgeBy: 0}}},
		{"a method rule", []RuleConfig{rule(false, scopes("reports:write"), w), rule(false, scopes("reports:read"), set{"path": {"/reports", "/reports/*"}})},
			[]UncoveredPrefix{{Rule: 0, Prefix: "/reports", Method: "POST", JudgeBy: 1}}},
		{"a public /x/* needs nothing", []RuleConfig{rule(true, nil, set{"path": {"/public/*"}})}, nil},
		{"a host-gated rule is not guessed at", []RuleConfig{rule(false, scopes("admin"), set{"host": {"api.example"}, "path": {"/admin/*"}})}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate(t, Config{Rules: tc.rules})
			got := g.UncoveredPrefixes(nil)
			if len(got) != len(tc.want) {
				t.Fatalf("UncoveredPrefixes = %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("UncoveredPrefixes[%d] = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestUncoveredPrefixesPrepare: the check's requests go through prepare,
// and a matcher that panics on a request it did not expect makes the
// check skip the rule, not fail the load.
func TestUncoveredPrefixesPrepare(t *testing.T) {
	type key struct{}
	mistake := rule(false, scopes("admin"), set{"path": {"/admin/*"}})
	inner, _ := mistake.Load()
	mistake.Load = func() (func(*http.Request) (bool, error), error) {
		return func(r *http.Request) (bool, error) {
			_ = r.Context().Value(key{}).(bool) // panics unless prepared
			return inner(r)
		}, nil
	}
	g := newGate(t, Config{Rules: []RuleConfig{mistake}})
	if got := g.UncoveredPrefixes(nil); len(got) != 0 {
		t.Errorf("unprepared: %+v, want none (the matcher panicked)", got)
	}
	prepare := func(r *http.Request) *http.Request {
		return r.WithContext(context.WithValue(r.Context(), key{}, true))
	}
	want := []UncoveredPrefix{{Rule: 0, Prefix: "/admin", Method: "GET", JudgeBy: -1}}
	if got := g.UncoveredPrefixes(prepare); !slices.Equal(got, want) {
		t.Errorf("prepared: %+v, want %+v", got, want)
	}
}

var ownPaths = Paths{Token: "/token", Refresh: "/refresh", Password: "/password", Logout: "/logout",
	Sessions: "/sessions", JWKS: "/.well-known/jwks.json", Metadata: "/.well-known/oauth-authorization-server"}

func TestRoute(t *testing.T) {
	g := newGate(t, Config{Paths: ownPaths, Rules: []RuleConfig{
		rule(true, nil, set{"path": {"/public/*"}}),
		rule(false, scopes("reports:write"), set{"path": {"/reports", "/reports/*"}, "method": {"POST", "PUT", "PATCH", "DELETE"}}),
		rule(false, scopes("reports:read"), set{"path": {"/reports", "/reports/*"}}),
		rule(false, scopes("admin"), set{"path": {"/admin", "/admin/*"}, "method": {"GET"}}),
	}})
	for _, tc := range []struct {
		method, target, contentType string
		ep                          endpoints.Endpoint
		refusal                     error
		public                      bool
		need                        []string // nil: any valid token
	}{
		{method: "POST", target: "/token", ep: endpoints.Token},
		{method: "POST", target: "/refresh", ep: endpoints.Refresh},
		{method: "POST", target: "/password", ep: endpoints.Password},
		{method: "POST", target: "/logout", ep: endpoints.Logout},
		{method: "GET", target: "/sessions", ep: endpoints.Sessions},
		{method: "DELETE", target: "/sessions/abc", ep: endpoints.Sessions},
		{method: "GET", target: "/sessionsx", need: nil},
		{method: "GET", target: "/.well-known/jwks.json", ep: endpoints.JWKS},
		{method: "GET", target: "/public/x", public: true},
		{method: "GET", target: "/reports/q3", need: scopes("reports:read")},
		{method: "DELETE", target: "/reports/q3", need: scopes("reports:write")},
		// Other readings: HEAD is served as GET, a form POST may become any
		// method, a percent-encoded slash may be decoded once more.
		{method: "HEAD", target: "/admin/x", need: scopes("admin")},
		{method: "POST", target: "/admin/x", contentType: "application/x-www-form-urlencoded", need: scopes("admin")},
		{method: "POST", target: "/admin/x", contentType: "application/json", need: nil},
		{method: "GET", target: "/public%2f..%2fadmin/x", refusal: paths.ErrDotSegment},
		{method: "delete", target: "/reports/q3", refusal: paths.ErrMethodCase},
		{method: "POST", target: "/reports?_method=DELETE", refusal: paths.ErrMethodOverride},
	} {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		if tc.contentType != "" {
			r.Header.Set("Content-Type", tc.contentType)
		}
		ep, got, err := g.Route(r, nil)
		switch {
		case tc.refusal != nil:
			if !errors.Is(err, tc.refusal) || !IsRefusal(err) {
				t.Errorf("%s %s: err %v, want %v", tc.method, tc.target, err, tc.refusal)
			}
			continue
		case err != nil:
			t.Errorf("%s %s: %v", tc.method, tc.target, err)
			continue
		}
		if ep != tc.ep {
			t.Errorf("%s %s: endpoint %v, want %v", tc.method, tc.target, ep, tc.ep)
		}
		if ep != endpoints.None {
			continue
		}
		public := got != nil && got.Public
		var need []string
		if got != nil {
			need = got.Scopes
		}
		if public != tc.public || !slices.Equal(need, tc.need) {
			t.Errorf("%s %s: rule %+v, want public %v, scopes %q", tc.method, tc.target, got, tc.public, tc.need)
		}
	}
}

// TestRouteMatcherError: a matcher error fails closed, naming the rule.
func TestRouteMatcherError(t *testing.T) {
	broken := rule(false, nil, set{"path": {"/x"}})
	broken.Load = func() (func(*http.Request) (bool, error), error) {
		return func(*http.Request) (bool, error) { return false, errors.New("boom") }, nil
	}
	g := newGate(t, Config{Rules: []RuleConfig{rule(true, nil, set{"path": {"/public/*"}}), broken}})
	_, got, err := g.Route(httptest.NewRequest("GET", "/y", nil), nil)
	if err == nil || err.Error() != "evaluating rules[1]: boom" || got != nil || IsRefusal(err) {
		t.Errorf("Route = %+v, %v", got, err)
	}
}

// fakeAuth answers Authenticate with err, or with a principal holding the
// scopes that tokenScopes gives the token.
type fakeAuth struct{ err error }

var tokenScopes = map[string]string{"admin": "admin", "both": "admin reports:read", "none": ""}

func (f fakeAuth) Authenticate(_ context.Context, bearer string) (auth.Principal, error) {
	if f.err != nil {
		return auth.Principal{}, f.err
	}
	s, ok := tokenScopes[bearer]
	if !ok {
		return auth.Principal{}, errors.New("unexpected token " + bearer)
	}
	set := scope.MustNew(strings.Fields(s)...)
	return auth.Principal{UserID: "u1", Username: "alice", Scopes: set, ScopeString: set.String()}, nil
}

func TestCheck(t *testing.T) {
	g := newGate(t, Config{Rules: []RuleConfig{rule(false, scopes("admin", "reports:read"))}})
	admin := &g.rules[0]
	const (
		plain        = `Bearer realm="crudauth"`
		invalidToken = `Bearer realm="crudauth", error="invalid_token"`
	)
	verifyErr := errors.New("token is expired")
	for _, tc := range []struct {
		name   string
		authz  []string
		auth   fakeAuth
		rule   *Rule
		status int
		chal   string
		err    error
	}{
		{name: "no header", status: http.StatusUnauthorized, chal: plain, err: endpoints.ErrNoToken},
		{name: "two headers", authz: []string{"Bearer admin", "Bearer both"}, status: http.StatusBadRequest,
			chal: `Bearer realm="crudauth", error="invalid_request"`, err: ErrMultipleAuth},
		{name: "another scheme", authz: []string{"Basic YTpi"}, status: http.StatusUnauthorized, chal: plain, err: endpoints.ErrNoToken},
		{name: "an empty header", authz: []string{""}, status: http.StatusUnauthorized, chal: plain, err: endpoints.ErrNoToken},
		{name: "a malformed bearer", authz: []string{"Bearer a b"}, status: http.StatusUnauthorized, chal: invalidToken},
		{name: "a refused token", authz: []string{"Bearer x"}, auth: fakeAuth{&auth.Error{Code: auth.CodeInvalidToken, Err: verifyErr}},
			status: http.StatusUnauthorized, chal: invalidToken, err: verifyErr},
		{name: "the store cannot tell", authz: []string{"Bearer x"}, auth: fakeAuth{&auth.Error{Code: auth.CodeTemporarilyUnavailable}},
			status: http.StatusServiceUnavailable},
		{name: "the store fails", authz: []string{"Bearer x"}, auth: fakeAuth{errors.New("reading user state: boom")},
			status: http.StatusInternalServerError, chal: plain},
		{name: "a scope missing", authz: []string{"Bearer admin"}, rule: admin, status: http.StatusForbidden,
			chal: `Bearer realm="crudauth", error="insufficient_scope", scope="admin reports:read"`, err: auth.ErrInsufficientScope},
		{name: "the scopes held", authz: []string{"Bearer both"}, rule: admin},
		{name: "no rule", authz: []string{"bearer  none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/x", nil)
			for _, v := range tc.authz {
				r.Header.Add("Authorization", v)
			}
			p, d := g.WithAuth(tc.auth).Check(r, tc.rule)
			if d.Status != tc.status || d.Challenge != tc.chal {
				t.Errorf("Check = %d %q (%v), want %d %q", d.Status, d.Challenge, d.Err, tc.status, tc.chal)
			}
			switch {
			case tc.status == 0 && (d.Err != nil || p.UserID != "u1"):
				t.Errorf("Check = %+v, %v, want the principal", p, d.Err)
			case tc.status != 0 && (d.Err == nil || p.UserID != ""):
				t.Errorf("Check = %+v, %v, want a denial and no principal", p, d.Err)
			case tc.err != nil && !errors.Is(d.Err, tc.err):
				t.Errorf("Check: reason %v, want %v", d.Err, tc.err)
			}
		})
	}
}

// TestIdentityAndToken: identity and routing override headers go in
// every spelling, the gateway's are set from the principal, and the token
// goes upstream only with ForwardToken.
func TestIdentityAndToken(t *testing.T) {
	for _, forward := range []bool{false, true} {
		g := newGate(t, Config{Identity: Identity{ID: "X-User-Id", Name: "X-User-Name", Scopes: "X-User-Scopes",
			Strip: []string{"X-Tenant"}}, ForwardToken: forward})
		h := http.Header{}
		for _, k := range []string{"X-User-Id", "x_user_name", "X-Original-URL", "x.http.method.override", "X-Tenant", "Remote-User", "Accept"} {
			h[k] = []string{"forged"}
		}
		h.Set("Authorization", "Bearer t")
		g.StripIdentity(h)
		if len(h) != 2 || h.Get("Accept") == "" {
			t.Fatalf("after StripIdentity: %v", h)
		}
		g.SetIdentity(h, auth.Principal{UserID: "u1", Username: "alice", ScopeString: "a b"})
		if h.Get("X-User-Id") != "u1" || h.Get("X-User-Name") != "alice" || h.Get("X-User-Scopes") != "a b" {
			t.Errorf("after SetIdentity: %v", h)
		}
		r := &http.Request{Header: h}
		g.DropToken(r)
		if kept := h.Get("Authorization") != ""; kept != forward {
			t.Errorf("ForwardToken %v: token kept %v", forward, kept)
		}
	}
}

// TestExplain: the explanation of a request lists each reading with the
// rule it selected, and decides as Route and Check do.
func TestExplain(t *testing.T) {
	g := newGate(t, Config{Paths: ownPaths, Ceiling: scope.MustNew("admin", "reports:read"), Rules: []RuleConfig{
		rule(true, nil, set{"path": {"/public/*"}}),
		rule(false, scopes("admin"), set{"path": {"/admin", "/admin/*"}, "method": {"GET"}}),
		rule(false, nil, set{"path": {"/any"}}),
	}})
	held := scope.MustNew("reports:read", "other")
	e := g.Explain(httptest.NewRequest("HEAD", "/admin/x", nil), &held)
	want := []string{
		`HEAD /admin/x -1 no rule (any valid token)`,
		`GET /admin/x 1 rules[1]: require {"method":["GET"],"path":["/admin","/admin/*"]} admin`,
	}
	var got []string
	for _, rd := range e.Readings {
		got = append(got, rd.Method+" "+rd.Path+" "+strings.TrimSpace(strings.Join([]string{itoa(rd.Rule), rd.Text}, " ")))
	}
	if !slices.Equal(got, want) {
		t.Errorf("readings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if e.Decision != "scopes" || !slices.Equal(e.Needs, []string{"admin"}) || e.ForToken == nil ||
		e.ForToken.Allowed || e.ForToken.Status != http.StatusForbidden ||
		!slices.Equal(e.ForToken.Missing, []string{"admin"}) || !slices.Equal(e.ForToken.Ignored, []string{"other"}) {
		t.Errorf("explanation %+v, verdict %+v", e, e.ForToken)
	}
	for _, tc := range []struct{ method, target, decision, text string }{
		{"POST", "/token", "token_endpoint", ""},
		{"GET", "/sessions/x", "sessions_endpoint", ""},
		{"GET", "/.well-known/jwks.json", "jwks_endpoint", ""},
		{"GET", "/.well-known/oauth-authorization-server", "metadata_endpoint", ""},
		{"GET", "/public/x", "public", `rules[0]: public {"path":["/public/*"]}`},
		{"GET", "/any", "any_token", `rules[2]: require {"path":["/any"]} (any valid token)`},
		{"GET", "/a/../b", "refused", ""},
	} {
		e := g.Explain(httptest.NewRequest(tc.method, tc.target, nil), nil)
		if e.Decision != tc.decision || tc.text != "" && (len(e.Readings) != 1 || e.Readings[0].Text != tc.text) {
			t.Errorf("%s %s: %+v, want %s %q", tc.method, tc.target, e, tc.decision, tc.text)
		}
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
