package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// Path tricks (issue 4, "Path tricks"). Caddy's path matcher already folds
// letter case, cleans dot segments and merges slashes, and compares %2F as
// "/". Backends resolve some paths further than that: Tomcat, Jetty and
// Spring drop `;parameters` from path segments, IIS and many Windows
// stacks treat `\` as `/`, and some frameworks decode a path twice. A path
// that Caddy sees under a public or scope-free rule could reach such a
// backend as /admin/..., and Windows file systems drop trailing dots and
// spaces of a name (/admin./x is /admin/x; Caddy folds these only when it
// runs on Windows itself). So when a path holds `;`, `\` or `%`, or a
// segment ends in a dot or a space, the rules are also evaluated against
// what such a backend would make of it, and the strictest outcome applies.
// Ordinary paths pay nothing.

var (
	errControlInPath = errors.New("request path holds a control character")
)

// pathInterpretations returns the other readings a backend might give the
// decoded path p, each different from p.
func pathInterpretations(p string) []string {
	if !strings.ContainsAny(p, ";\\%") && !trailingDotOrSpace(p) {
		return nil
	}
	var out []string
	add := func(s string) {
		if s != p && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	full := p
	for i := 0; i < 2 && strings.Contains(full, "%"); i++ { // decoded again, twice at most
		s, err := url.PathUnescape(full)
		if err != nil {
			break
		}
		full = s
	}
	add(stripPathParams(full))
	add(trimSegments(stripPathParams(strings.ReplaceAll(full, `\`, "/"))))
	add(stripPathParams(p))
	add(strings.ReplaceAll(p, `\`, "/"))
	return out
}

// stripPathParams drops the `;params` of every segment, as servlet
// containers do: /admin;x/y -> /admin/y.
func stripPathParams(p string) string {
	if !strings.Contains(p, ";") {
		return p
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	return strings.Join(segs, "/")
}

// trailingDotOrSpace reports a segment ending in '.' or ' ' (other than
// the dot segments "." and "..", which Caddy cleans itself). It runs on
// every request, so it scans in place instead of splitting.
func trailingDotOrSpace(p string) bool {
	start := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			continue
		}
		seg := p[start:i]
		start = i + 1
		if seg == "" || seg == "." || seg == ".." {
			continue
		}
		if c := seg[len(seg)-1]; c == '.' || c == ' ' {
			return true
		}
	}
	return false
}

// trimSegments drops the trailing dots and spaces of every segment, as
// Windows does with file names.
func trimSegments(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if s != "." && s != ".." {
			segs[i] = strings.TrimRight(s, ". ")
		}
	}
	return strings.Join(segs, "/")
}

// hasControl reports a control character (NUL included) in p: no resource
// has one in its name, and C-based backends cut the path at NUL.
func hasControl(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return true
		}
	}
	return false
}

// matchRuleStrict is matchRule over the path as Caddy sees it and every
// other reading of it (see pathInterpretations), keeping the strictest
// outcome: a scoped rule over a scope-free one over a public one, and the
// union of scopes when several scoped rules apply.
func (h *Handler) matchRuleStrict(r *http.Request) (*Rule, error) {
	if hasControl(r.URL.Path) {
		return nil, errControlInPath
	}
	rule, err := h.matchRule(r)
	if err != nil {
		return nil, err
	}
	for _, p := range pathInterpretations(r.URL.Path) {
		u := *r.URL
		u.Path, u.RawPath = p, ""
		r2 := r.WithContext(r.Context())
		r2.URL = &u
		alt, err := h.matchRule(r2)
		if err != nil {
			return nil, err
		}
		rule = h.stricter(rule, alt)
	}
	return rule, nil
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
		challenge: fmt.Sprintf(`Bearer realm=%q, error="insufficient_scope", scope=%q`, h.Realm, union.String()),
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
