package gate

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/explain"
	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// Explain judges r as the gateway does, through Route and the scope
// decision of Check, and records each reading and the rule it selected:
// what `caddy crudauth explain` prints. tokenScopes, when not nil, are the
// scopes of a valid token to decide for. It strips r's identity headers,
// as the gateway does first.
func (g *Gate) Explain(r *http.Request, tokenScopes *scope.Set) explain.Explanation {
	e := explain.Explanation{Readings: []explain.Reading{}}
	g.StripIdentity(r.Header) // rules may match on headers
	ep, rule, err := g.Route(r, func(rd Reading, rule *Rule) {
		e.Readings = append(e.Readings, explain.Reading{
			Method: rd.Method, Path: rd.Path, Rule: g.ruleIndex(rule), Text: g.describeRule(rule),
		})
	})
	// The same order of cases as the gateway's handler.
	switch {
	case IsRefusal(err):
		e.Decision, e.Status, e.Reason = "refused", http.StatusBadRequest, err.Error()
		return e
	case err != nil:
		e.Decision, e.Status, e.Reason = "error", http.StatusInternalServerError, err.Error()
		return e
	case ep != endpoints.None:
		e.Decision = endpointDecisions[ep]
		return e
	case endpoints.IsPreflight(r):
		// As the handler: a CORS preflight carries no token and goes on
		// without one and without identity.
		e.Decision = "preflight"
		return e
	case rule != nil && rule.Public:
		e.Decision = "public"
	case rule != nil && len(rule.Scopes) > 0:
		e.Decision, e.Needs = "scopes", slices.Clone(rule.Scopes)
	default:
		e.Decision = "any_token"
	}
	if tokenScopes == nil {
		return e
	}
	v := &explain.ScopeVerdict{Scopes: tokenScopes.String(), Ignored: g.ceiling.Missing(*tokenScopes)}
	if e.Decision == "public" {
		v.Allowed = true
	} else {
		effective, ok := g.grants(*tokenScopes, rule)
		v.Allowed = ok
		if !ok {
			v.Status, v.Missing = http.StatusForbidden, effective.Missing(rule.Scopes)
		}
	}
	e.ForToken = v
	return e
}

// describeRule writes a rule as `rules[i]: public|require <matchers>
// [scopes]`, its matchers as their JSON, several sets joined by "or", "*"
// for none.
func (g *Gate) describeRule(rule *Rule) string {
	i := g.ruleIndex(rule)
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
	case len(rule.Scopes) == 0:
		b.WriteString(" (any valid token)")
	default:
		b.WriteString(" " + rule.Scopes.String())
	}
	return b.String()
}

// endpointDecisions names the decision for each of the gateway's own
// endpoints: the handler answers them itself, before any rule.
var endpointDecisions = map[endpoints.Endpoint]string{
	endpoints.Token:    "token_endpoint",
	endpoints.Refresh:  "refresh_endpoint",
	endpoints.Password: "password_endpoint",
	endpoints.Logout:   "logout_endpoint",
	endpoints.Sessions: "sessions_endpoint",
	endpoints.JWKS:     "jwks_endpoint",
	endpoints.Metadata: "metadata_endpoint",
}
