package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/explain"
	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// The Caddy side of `caddy crudauth explain`, whose command is in
// internal/cli: a handler provisioned by provisionRules decides with its own
// route and grants, so what explain prints is what the gateway does.

// explainer is a handler provisioned for explain.
type explainer struct {
	h *Handler
}

// explain judges r as ServeHTTP does, through route and grants, and
// records each reading and the rule it selected. tokenScopes, when not nil,
// are the scopes of a valid token to decide for.
func (x explainer) explain(r *http.Request, tokenScopes *scope.Set) explain.Explanation {
	h := x.h
	e := explain.Explanation{Readings: []explain.Reading{}}
	h.identity.strip(r.Header) // as ServeHTTP does first: rules may match on headers
	ep, rule, err := h.route(r, func(rd reading, rule *Rule) {
		e.Readings = append(e.Readings, explain.Reading{
			Method: rd.method, Path: rd.path, Rule: h.ruleIndex(rule), Text: x.describeRule(rule),
		})
	})
	// The same order of cases as ServeHTTP.
	switch {
	case isRefusal(err):
		e.Decision, e.Status, e.Reason = "refused", http.StatusBadRequest, err.Error()
		return e
	case err != nil:
		e.Decision, e.Status, e.Reason = "error", http.StatusInternalServerError, err.Error()
		return e
	case ep == endpoints.Token:
		e.Decision = "token_endpoint"
		return e
	case ep == endpoints.Refresh:
		e.Decision = "refresh_endpoint"
		return e
	case ep == endpoints.Password:
		e.Decision = "password_endpoint"
		return e
	case ep == endpoints.Logout:
		e.Decision = "logout_endpoint"
		return e
	case ep == endpoints.Sessions:
		e.Decision = "sessions_endpoint"
		return e
	case endpoints.IsPreflight(r):
		// As ServeHTTP: a CORS preflight carries no token and goes on
		// without one and without identity.
		e.Decision = "preflight"
		return e
	case rule != nil && rule.Public:
		e.Decision = "public"
	case rule != nil && len(rule.scopes) > 0:
		e.Decision, e.Needs = "scopes", slices.Clone(rule.scopes)
	default:
		e.Decision = "any_token"
	}
	if tokenScopes == nil {
		return e
	}
	v := &explain.ScopeVerdict{Scopes: tokenScopes.String(), Ignored: h.ceiling.Missing(*tokenScopes)}
	if e.Decision == "public" {
		v.Allowed = true
	} else {
		effective, ok := h.grants(*tokenScopes, rule)
		v.Allowed = ok
		if !ok {
			v.Status, v.Missing = http.StatusForbidden, effective.Missing(rule.scopes)
		}
	}
	e.ForToken = v
	return e
}

// describeRule writes a rule as `rules[i]: public|require <matchers>
// [scopes]`, its matchers as their JSON, several sets joined by "or", "*"
// for none.
func (x explainer) describeRule(rule *Rule) string {
	i := x.h.ruleIndex(rule)
	if i < 0 {
		return "no rule (any valid token)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "rules[%d]: ", i)
	if rule.Public {
		b.WriteString("public ")
	} else {
		b.WriteString("require ")
	}
	b.WriteString(rule.describeMatchers())
	switch {
	case rule.Public:
	case len(rule.scopes) == 0:
		b.WriteString(" (any valid token)")
	default:
		b.WriteString(" " + rule.scopes.String())
	}
	return b.String()
}

// explainRequest parses the request as net/http's server does
// (explain.ParseRequest), and prepares it as Caddy does before handlers
// run, so that matchers find their replacer and vars.
func explainRequest(method, target, host string, headers []string) (*http.Request, error) {
	r, err := explain.ParseRequest(method, target, host, headers)
	if err != nil {
		return nil, err
	}
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), nil, nil)
	caddyhttp.SetVar(r.Context(), caddyhttp.ClientIPVarKey, "127.0.0.1")
	return r, nil
}

// provisionForExplain builds a handler from its JSON as Caddy would, but
// provisions only what deciding needs (provisionRules). cancel releases
// the matcher modules.
func provisionForExplain(raw []byte, logger *zap.Logger) (explainer, context.CancelFunc, error) {
	h := new(Handler)
	if err := caddy.StrictUnmarshalJSON(raw, h); err != nil {
		return explainer{}, nil, err
	}
	x := explainer{h: h}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	h.logger = logger
	if err := h.provisionRules(ctx); err != nil {
		cancel()
		return explainer{}, nil, err
	}
	return x, cancel, nil
}

// servesHost reports whether every route leading to the handler accepts
// r's Host, as Caddy's host matcher judges it.
func servesHost(f explain.Found, r *http.Request) bool {
	for _, hosts := range f.HostLevels {
		m := caddyhttp.MatchHost(slices.Clone(hosts))
		if err := m.Provision(caddy.Context{}); err != nil {
			return false
		}
		if ok, err := m.MatchWithError(r); err != nil || !ok {
			return false
		}
	}
	return true
}
