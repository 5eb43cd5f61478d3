package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// uncoveredPrefix is a rule whose path pattern /x/* guards what lies under
// /x, while /x itself is judged more leniently, by another rule or by none.
// `require /admin/* admin` leaves GET /admin to any valid token, and most
// backends serve /admin and /admin/ with the same handler.
type uncoveredPrefix struct {
	rule    int    // index of the /x/* rule
	prefix  string // /x
	method  string // the method the check used
	judgeBy int    // index of the rule that judges /x, -1 for none
}

// uncoveredPrefixes lists, for every non-public rule with a `/x/*` path
// pattern, the prefixes /x that the rules judge more leniently than /x/...
// It asks the rules themselves (matchRuleStrict, as a request would), so
// named matchers, methods and rule order all count. A rule whose own
// matchers do not select /x/... on a plain request (a host or header
// matcher, say) is skipped rather than guessed at.
func (h *Handler) uncoveredPrefixes() []uncoveredPrefix {
	var out []uncoveredPrefix
	for i := range h.Rules {
		rule := &h.Rules[i]
		if rule.Public {
			continue
		}
		for _, set := range rule.rawMatchers {
			var patterns, methods []string
			if raw, ok := set["path"]; ok {
				_ = json.Unmarshal(raw, &patterns)
			}
			if raw, ok := set["method"]; ok {
				_ = json.Unmarshal(raw, &methods)
			}
			method := http.MethodGet
			if len(methods) > 0 {
				method = methods[0]
			}
			for _, p := range patterns {
				prefix, ok := strings.CutSuffix(p, "/*")
				if !ok || prefix == "" || strings.ContainsAny(prefix, "*%") || slices.Contains(patterns, prefix) {
					continue
				}
				under, err := h.judge(method, prefix+"/x")
				if err != nil || !atLeastAsStrict(under, rule) {
					continue // the rule does not select /x/... on its own
				}
				bare, err := h.judge(method, prefix)
				if err != nil || atLeastAsStrict(bare, under) {
					continue // covered
				}
				out = append(out, uncoveredPrefix{rule: i, prefix: prefix, method: method, judgeBy: h.ruleIndex(bare)})
			}
		}
	}
	return out
}

// atLeastAsStrict reports whether rule a asks at least what rule b asks
// (nil: no rule, any valid token).
func atLeastAsStrict(a, b *Rule) bool {
	sa, sb := strictness(a), strictness(b)
	return sa > sb || sa == sb && (sa < 2 || a.scopes.ContainsAll(b.scopes))
}

// judge returns the rule in force for a plain request (method, path). A
// matcher that panics on a request without a server's context (none of
// Caddy's do with the replacer and vars set) makes the check give up, not
// the load.
func (h *Handler) judge(method, path string) (rule *Rule, err error) {
	defer func() {
		if recover() != nil {
			rule, err = nil, errors.New("matcher panicked")
		}
	}()
	ctx := context.WithValue(context.Background(), caddy.ReplacerCtxKey, caddy.NewReplacer())
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	r := (&http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}, Host: "localhost"}).WithContext(ctx)
	return h.matchRuleStrict(r, path, nil)
}

// ruleIndex returns the index of rule in h.Rules, or -1 (no rule, or a
// union of several made by stricter).
func (h *Handler) ruleIndex(rule *Rule) int {
	for i := range h.Rules {
		if &h.Rules[i] == rule {
			return i
		}
	}
	return -1
}

// warnUncoveredPrefixes logs each uncoveredPrefix at load, naming the rule
// and the fix.
func (h *Handler) warnUncoveredPrefixes() {
	for _, u := range h.uncoveredPrefixes() {
		h.logger.Warn("a rule guards what lies under a path but not the path itself: add the path to the rule's patterns",
			zap.Int("rule", u.rule),
			zap.String("matchers", h.Rules[u.rule].describeMatchers()),
			zap.String("covers", u.prefix+"/*"),
			zap.String("not_covered", u.prefix),
			zap.String("method", u.method),
			zap.Int("judged_by_rule", u.judgeBy),
			zap.String("fix", "list both patterns, e.g. require "+u.prefix+" "+u.prefix+"/* "+strings.Join(h.Rules[u.rule].scopes, " ")))
	}
}

// describeMatchers writes the rule's matcher sets as configured, as compact
// JSON with sorted keys, several sets joined by " or ", "*" for none.
func (rule *Rule) describeMatchers() string {
	var sets []string
	for _, set := range rule.rawMatchers {
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
