// Package gate is the gateway's decision on a request, without Caddy:
// which of the gateway's own endpoints serves it, or which access rule is
// in force under every reading a backend may give it (internal/paths),
// and whether its bearer token passes that rule. Caddy's part (loading the
// rules' matchers, the replacer, handle_errors) stays in caddymodule, which
// hands the matchers in as functions; `caddy crudauth explain` judges with
// the same code (Explain).
package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/headers"
	"github.com/crudauth/caddy-crudauth/internal/paths"
	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// Paths are the paths of the gateway's own endpoints; "" is off.
// Sessions also serves what lies under it (Sessions + "/...").
type Paths struct {
	Token, Refresh, Password, Logout, Sessions, JWKS, Metadata string
}

// RuleConfig is one access rule as configured.
type RuleConfig struct {
	// Public: the requests the rule selects need no token.
	Public bool
	// Scopes the token must hold, all of them.
	Scopes []string
	// Matchers are the rule's matcher sets as configured, each a map from
	// matcher name to its JSON: what describes the rule and what the
	// uncovered-prefix check reads ("path" and "method").
	Matchers []map[string]json.RawMessage
	// Load builds the rule's match function; nil, or a nil function, is a
	// rule that selects every request. New calls it in rule order, after
	// the rule's scopes were checked, so that a config with several
	// mistakes reports the first one. Its error is returned as it is.
	Load func() (func(*http.Request) (bool, error), error)
}

// Rule is a rule as New built it. Routing returns one (or a union of
// several, see stricter); callers read Public and Scopes.
type Rule struct {
	Public bool
	Scopes scope.Set

	match     func(*http.Request) (bool, error) // nil: every request
	matchers  []map[string]json.RawMessage
	challenge string // WWW-Authenticate for insufficient_scope, built once
}

// Identity are the names of the identity headers the gateway sets, and
// the further headers an operator wants removed from every request.
type Identity struct {
	ID, Name, Scopes string
	Strip            []string
}

// Config is what New builds a Gate from.
type Config struct {
	Paths Paths
	Rules []RuleConfig
	// Realm is the realm of WWW-Authenticate challenges.
	Realm string
	// Ceiling is grantable_scopes: a token's scopes outside it do not
	// count, and a rule that needs one is passed by no token.
	Ceiling  scope.Set
	Identity Identity
	// ForwardToken keeps the Authorization header on requests that go
	// upstream.
	ForwardToken bool
	// Prepare readies a request built by the gateway itself (the
	// uncovered-prefix check) as the server readies a received one, so
	// that matchers find what they expect in its context. Nil: as built.
	Prepare func(*http.Request) *http.Request
	// ClientIP is the client's address as the server determined it, for
	// logs. Default: the request's RemoteAddr.
	ClientIP func(*http.Request) string
	Logger   *zap.Logger
}

// Authenticator checks a bearer token: internal/auth's Service.
type Authenticator interface {
	Authenticate(ctx context.Context, bearer string) (auth.Principal, error)
}

// Gate decides on requests. It is built once and never changed after, so
// it serves concurrent requests.
type Gate struct {
	paths        Paths
	rules        []Rule
	realm        string
	ceiling      scope.Set
	identity     headers.Identity
	forwardToken bool
	challenges   map[string]string // WWW-Authenticate by error code
	clientIP     func(*http.Request) string
	logger       *zap.Logger
	auth         Authenticator // nil until WithAuth
}

// New checks and builds the rules and the rest of the gate. It warns, on
// cfg.Logger, about a rule that needs a scope outside the ceiling and
// about a rule that guards /x/* but leaves /x to a weaker rule. The gate
// decides on requests; checking bearer tokens needs WithAuth.
func New(cfg Config) (*Gate, error) {
	g := &Gate{
		paths:        cfg.Paths,
		realm:        cfg.Realm,
		ceiling:      cfg.Ceiling,
		forwardToken: cfg.ForwardToken,
		clientIP:     cfg.ClientIP,
		logger:       cfg.Logger,
		rules:        make([]Rule, len(cfg.Rules)),
	}
	if g.logger == nil {
		g.logger = zap.NewNop()
	}
	if g.clientIP == nil {
		g.clientIP = func(r *http.Request) string { return r.RemoteAddr }
	}
	for i, rc := range cfg.Rules {
		rule := &g.rules[i]
		if rc.Public && len(rc.Scopes) > 0 {
			return nil, fmt.Errorf("rules[%d]: a public rule cannot require scopes", i)
		}
		var err error
		if rule.Scopes, err = scope.New(rc.Scopes...); err != nil {
			return nil, fmt.Errorf("rules[%d].scopes: %w", i, err)
		}
		if missing := g.ceiling.Missing(rule.Scopes); len(missing) > 0 {
			// Not an error: lowering grantable_scopes with a reload while
			// keeping the rule is how an operator shuts a route for every
			// token at once, old ones included (see Check).
			g.logger.Warn("rule requires scopes outside grantable_scopes: no token passes it",
				zap.Int("rule", i),
				zap.Stringer("missing", missing),
				zap.Stringer("grantable_scopes", g.ceiling))
		}
		rule.Public = rc.Public
		rule.challenge = buildChallenge(g.realm, "insufficient_scope", rule.Scopes.String())
		rule.matchers = rc.Matchers
		if rc.Load != nil {
			if rule.match, err = rc.Load(); err != nil {
				return nil, err
			}
		}
	}
	// The headers StripIdentity removes before the rules see a request.
	g.identity = headers.NewIdentity(cfg.Identity.ID, cfg.Identity.Name, cfg.Identity.Scopes,
		slices.Concat(normalizedOverrides, cfg.Identity.Strip))
	g.challenges = map[string]string{}
	for _, code := range []string{"", "invalid_token", "invalid_request"} {
		g.challenges[code] = buildChallenge(g.realm, code, "")
	}
	g.warnUncoveredPrefixes(cfg.Prepare)
	return g, nil
}

// WithAuth returns a copy of g that checks bearer tokens with a. The
// copy shares g's rules, so a rule Route returned on either is the same.
func (g *Gate) WithAuth(a Authenticator) *Gate {
	c := *g
	c.auth = a
	return &c
}

// Reading is one way a backend may read a request.
type Reading struct{ Method, Path string }

// Route refuses an ambiguous request (an error wrapping one of the
// internal/paths refusals, see IsRefusal), picks the gateway's own
// endpoint, or returns the rule in force (nil: none matched, any valid
// token passes). trace, when not nil, is told the rule each reading
// selected.
func (g *Gate) Route(r *http.Request, trace func(Reading, *Rule)) (endpoints.Endpoint, *Rule, error) {
	escaped := r.URL.EscapedPath()
	if err := paths.Check(r.Method, escaped, r.URL.Path, r.URL.RawQuery); err != nil {
		return endpoints.None, nil, err
	}
	p, own := r.URL.Path, g.paths
	switch {
	case own.Token != "" && p == own.Token:
		return endpoints.Token, nil, nil
	case own.Refresh != "" && p == own.Refresh:
		return endpoints.Refresh, nil, nil
	case own.Password != "" && p == own.Password:
		return endpoints.Password, nil, nil
	case own.Logout != "" && p == own.Logout:
		return endpoints.Logout, nil, nil
	case own.Sessions != "" && (p == own.Sessions || strings.HasPrefix(p, own.Sessions+"/")):
		return endpoints.Sessions, nil, nil
	case own.JWKS != "" && p == own.JWKS:
		return endpoints.JWKS, nil, nil
	case own.Metadata != "" && p == own.Metadata:
		return endpoints.Metadata, nil, nil
	}
	rule, err := g.matchRuleStrict(r, escaped, trace)
	return endpoints.None, rule, err
}

// IsRefusal reports whether err is one of the refusals of Route, answered
// with 400.
func IsRefusal(err error) bool {
	return errors.Is(err, paths.ErrDotSegment) || errors.Is(err, paths.ErrControl) ||
		errors.Is(err, paths.ErrMethodCase) || errors.Is(err, paths.ErrMethodOverride)
}

// matchRule returns the first rule matching r, or nil. A matcher error
// fails closed.
func (g *Gate) matchRule(r *http.Request) (*Rule, error) {
	for i := range g.rules {
		rule := &g.rules[i]
		if rule.match == nil {
			return rule, nil
		}
		ok, err := rule.match(r)
		if err != nil {
			return nil, fmt.Errorf("evaluating rules[%d]: %w", i, err)
		}
		if ok {
			return rule, nil
		}
	}
	return nil, nil
}

// matchRuleStrict is matchRule over the request as the server sees it and
// every other reading of its method and path (paths.AltMethods,
// paths.AltPaths), keeping the strictest outcome: a scoped rule over a
// scope-free one over a public one, and the union of scopes when several
// scoped rules apply.
func (g *Gate) matchRuleStrict(r *http.Request, escaped string, trace func(Reading, *Rule)) (*Rule, error) {
	rule, err := g.matchRule(r)
	if err != nil {
		return nil, err
	}
	if trace != nil {
		trace(Reading{r.Method, r.URL.Path}, rule)
	}
	altPaths := paths.AltPaths(escaped, r.URL.Path)
	altMethods := paths.AltMethods(r.Method, hasFormBody(r))
	if altPaths == nil && altMethods == nil {
		return rule, nil
	}
	for _, m := range append([]string{r.Method}, altMethods...) {
		for _, p := range append([]string{r.URL.Path}, altPaths...) {
			if m == r.Method && p == r.URL.Path {
				continue // judged above
			}
			u := *r.URL
			if p != r.URL.Path {
				u.Path, u.RawPath = p, ""
			}
			r2 := r.WithContext(r.Context())
			r2.Method, r2.URL = m, &u
			alt, err := g.matchRule(r2)
			if err != nil {
				return nil, err
			}
			if trace != nil {
				trace(Reading{m, p}, alt)
			}
			rule = g.stricter(rule, alt)
		}
	}
	return rule, nil
}

// hasFormBody reports a form Content-Type among the request's, since a
// backend may read any of them, or none at all with a body (Rack reads a
// POST without a media type as a form; without a body there is no field).
func hasFormBody(r *http.Request) bool {
	if len(r.Header["Content-Type"]) == 0 {
		return r.ContentLength != 0 // -1: chunked, a body of unknown length
	}
	for _, v := range r.Header["Content-Type"] {
		if paths.IsFormBody(v) {
			return true
		}
	}
	return false
}

// strictness: 0 public, 1 any valid token (no rule, or a rule without
// scopes), 2 scopes needed.
func strictness(r *Rule) int {
	switch {
	case r == nil:
		return 1
	case r.Public:
		return 0
	case len(r.Scopes) == 0:
		return 1
	}
	return 2
}

// stricter returns the stricter of a and b; of two rules needing
// different scopes, a rule needing both.
func (g *Gate) stricter(a, b *Rule) *Rule {
	sa, sb := strictness(a), strictness(b)
	switch {
	case sa > sb:
		return a
	case sb > sa:
		return b
	case sa < 2 || a == b || a.Scopes.Equal(b.Scopes):
		return a // equally strict
	}
	union, err := scope.New(append(slices.Clone(a.Scopes), b.Scopes...)...)
	if err != nil { // both were valid sets: cannot happen
		return a
	}
	return &Rule{
		Scopes:    union,
		challenge: buildChallenge(g.realm, "insufficient_scope", union.String()),
	}
}

// ruleIndex returns the index of rule in the gate's rules, or -1 (no
// rule, or a union of several made by stricter).
func (g *Gate) ruleIndex(rule *Rule) int {
	for i := range g.rules {
		if &g.rules[i] == rule {
			return i
		}
	}
	return -1
}

// describeMatchers writes the rule's matcher sets as configured, as
// compact JSON with sorted keys, several sets joined by " or ", "*" for
// none.
func (rule *Rule) describeMatchers() string {
	var sets []string
	for _, set := range rule.matchers {
		js, err := json.Marshal(set)
		if err != nil {
			js = []byte("?")
		}
		sets = append(sets, string(js))
	}
	if len(sets) == 0 {
		return "*"
	}
	return strings.Join(sets, " or ")
}

// RoutingOverrides are request headers with which some frameworks let a
// client replace the method or the path the server acts on. The gateway
// decides on the request line, so a backend that honored one of these
// could act on something the rules never saw: they are removed from every
// request, in StripIdentity's pass over the headers.
var RoutingOverrides = []string{
	"X-Original-Url", "X-Original-Uri", "X-Rewrite-Url", "X-Forwarded-Uri", "X-Forwarded-Path",
	"X-Forwarded-Prefix", "X-Http-Method-Override", "X-Http-Method", "X-Method-Override",
	"X-Original-Method",
}

var normalizedOverrides = func() []string {
	out := make([]string, len(RoutingOverrides))
	for i, o := range RoutingOverrides {
		out[i] = headers.Normalize(o)
	}
	return out
}()
