package caddymodule

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/paths"
	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// How a request is read before the rules: internal/paths refuses what a
// backend could read differently from the rules (dot segments in any
// reading, control characters, methods not in upper case, `_method` in the
// query), and lists the other readings of the rest; the rules are judged
// under every reading and the strictest outcome applies.

// reading is one way a backend may read a request.
type reading struct{ method, path string }

// route is the first half of ServeHTTP, and all of `caddy crudauth
// explain`: it refuses an ambiguous request (an error wrapping one of the
// internal/paths refusals), picks the gateway's own endpoint, or returns
// the rule in force (nil: none matched, any valid token passes). trace,
// when not nil, is told the rule each reading selected.
func (h *Handler) route(r *http.Request, trace func(reading, *Rule)) (endpoints.Endpoint, *Rule, error) {
	escaped := r.URL.EscapedPath()
	if err := paths.Check(r.Method, escaped, r.URL.Path, r.URL.RawQuery); err != nil {
		return endpoints.None, nil, err
	}
	switch {
	case r.URL.Path == h.TokenPath:
		return endpoints.Token, nil, nil
	case r.URL.Path == h.RefreshPath:
		return endpoints.Refresh, nil, nil
	case h.PasswordPath != "" && r.URL.Path == h.PasswordPath:
		return endpoints.Password, nil, nil
	case h.LogoutPath != "" && r.URL.Path == h.LogoutPath:
		return endpoints.Logout, nil, nil
	case h.SessionsPath != "" && (r.URL.Path == h.SessionsPath || strings.HasPrefix(r.URL.Path, h.SessionsPath+"/")):
		return endpoints.Sessions, nil, nil
	case discoveryPath(h.JWKSPath) != "" && r.URL.Path == h.JWKSPath:
		return endpoints.JWKS, nil, nil
	case discoveryPath(h.MetadataPath) != "" && r.URL.Path == h.MetadataPath:
		return endpoints.Metadata, nil, nil
	}
	rule, err := h.matchRuleStrict(r, escaped, trace)
	return endpoints.None, rule, err
}

// isRefusal reports whether err is one of the refusals of route, answered
// with 400.
func isRefusal(err error) bool {
	return errors.Is(err, paths.ErrDotSegment) || errors.Is(err, paths.ErrControl) ||
		errors.Is(err, paths.ErrMethodCase) || errors.Is(err, paths.ErrMethodOverride)
}

// matchRuleStrict is matchRule over the request as Caddy sees it and every
// other reading of its method and path (paths.AltMethods, paths.AltPaths),
// keeping the strictest outcome: a scoped rule over a scope-free one over
// a public one, and the union of scopes when several scoped rules apply.
func (h *Handler) matchRuleStrict(r *http.Request, escaped string, trace func(reading, *Rule)) (*Rule, error) {
	rule, err := h.matchRule(r)
	if err != nil {
		return nil, err
	}
	if trace != nil {
		trace(reading{r.Method, r.URL.Path}, rule)
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
			alt, err := h.matchRule(r2)
			if err != nil {
				return nil, err
			}
			if trace != nil {
				trace(reading{m, p}, alt)
			}
			rule = h.stricter(rule, alt)
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
	case len(r.scopes) == 0:
		return 1
	}
	return 2
}

func (h *Handler) stricter(a, b *Rule) *Rule {
	sa, sb := strictness(a), strictness(b)
	switch {
	case sa > sb:
		return a
	case sb > sa:
		return b
	case sa < 2 || a == b || a.scopes.Equal(b.scopes):
		return a // equally strict
	}
	union, err := scope.New(append(slices.Clone(a.scopes), b.scopes...)...)
	if err != nil { // both were valid sets: cannot happen
		return a
	}
	return &Rule{
		scopes:    union,
		challenge: buildChallenge(h.Realm, "insufficient_scope", union.String()),
	}
}

// routingOverrides are request headers with which some frameworks let a
// client replace the method or the path the server acts on. The gateway
// decides on the request line, so a backend that honored one of these
// could act on something the rules never saw: they are removed from every
// request, in identityHeaders.strip's pass over the headers.
var routingOverrides = []string{
	"X-Original-Url", "X-Original-Uri", "X-Rewrite-Url", "X-Forwarded-Uri", "X-Forwarded-Path",
	"X-Forwarded-Prefix", "X-Http-Method-Override", "X-Http-Method", "X-Method-Override",
	"X-Original-Method",
}

var normalizedOverrides = func() []string {
	out := make([]string, len(routingOverrides))
	for i, o := range routingOverrides {
		out[i] = normalizeHeaderName(o)
	}
	return out
}()
