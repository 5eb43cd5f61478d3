package gate

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// UncoveredPrefix is a rule whose path pattern /x/* guards what lies
// under /x, while /x itself is judged more leniently, by another rule or
// by none. `require /admin/* admin` leaves GET /admin to any valid token,
// and most backends serve /admin and /admin/ with the same handler.
type UncoveredPrefix struct {
	Rule    int    // index of the /x/* rule
	Prefix  string // /x
	Method  string // the method the check used
	JudgeBy int    // index of the rule that judges /x, -1 for none
}

// UncoveredPrefixes lists, for every non-public rule with a `/x/*` path
// pattern, the prefixes /x that the rules judge more leniently than
// /x/... It asks the rules themselves (as a request would), so named
// matchers, methods and rule order all count. A rule whose own matchers
// do not select /x/... on a plain request (a host or header matcher, say)
// is skipped rather than guessed at. prepare readies each request as the
// server would (nil: as built).
func (g *Gate) UncoveredPrefixes(prepare func(*http.Request) *http.Request) []UncoveredPrefix {
	var out []UncoveredPrefix
	for i := range g.rules {
		rule := &g.rules[i]
		if rule.Public {
			continue
		}
		for _, set := range rule.matchers {
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
				under, err := g.judge(prepare, method, prefix+"/x")
				if err != nil || !atLeastAsStrict(under, rule) {
					continue // the rule does not select /x/... on its own
				}
				bare, err := g.judge(prepare, method, prefix)
				if err != nil || atLeastAsStrict(bare, under) {
					continue // covered
				}
				out = append(out, UncoveredPrefix{Rule: i, Prefix: prefix, Method: method, JudgeBy: g.ruleIndex(bare)})
			}
		}
	}
	return out
}

// atLeastAsStrict reports whether rule a asks at least what rule b asks
// (nil: no rule, any valid token).
func atLeastAsStrict(a, b *Rule) bool {
	sa, sb := strictness(a), strictness(b)
	return sa > sb || sa == sb && (sa < 2 || a.Scopes.ContainsAll(b.Scopes))
}

// judge returns the rule in force for a plain request (method, path). A
// matcher that panics on a request the server did not receive (none of
// Caddy's do on a request prepare readied) makes the check give up, not
// the load.
func (g *Gate) judge(prepare func(*http.Request) *http.Request, method, path string) (rule *Rule, err error) {
	defer func() {
		if recover() != nil {
			rule, err = nil, errors.New("matcher panicked")
		}
	}()
	r := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}, Host: "localhost"}
	if prepare != nil {
		r = prepare(r)
	}
	return g.matchRuleStrict(r, path, nil)
}

// warnUncoveredPrefixes logs each UncoveredPrefix, naming the rule and
// the fix.
func (g *Gate) warnUncoveredPrefixes(prepare func(*http.Request) *http.Request) {
	for _, u := range g.UncoveredPrefixes(prepare) {
		g.logger.Warn("a rule guards what lies under a path but not the path itself: add the path to the rule's patterns",
			zap.Int("rule", u.Rule),
			zap.String("matchers", g.rules[u.Rule].describeMatchers()),
			zap.String("covers", u.Prefix+"/*"),
			zap.String("not_covered", u.Prefix),
			zap.String("method", u.Method),
			zap.Int("judged_by_rule", u.JudgeBy),
			zap.String("fix", "list both patterns, e.g. require "+u.Prefix+" "+u.Prefix+"/* "+strings.Join(g.rules[u.Rule].Scopes, " ")))
	}
}
