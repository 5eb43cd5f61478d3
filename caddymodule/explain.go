package caddymodule

import (
	"context"
	"net/http"
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/explain"
	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// The Caddy side of `caddy crudauth explain`, whose command is in
// internal/cli: a handler provisioned by provisionRules decides with its
// gate, the code that serves requests, so what explain prints is what the
// gateway does.

// explainer is a handler provisioned for explain.
type explainer struct {
	h *Handler
}

// explain judges r as ServeHTTP does (gate.Explain). tokenScopes, when
// not nil, are the scopes of a valid token to decide for.
func (x explainer) explain(r *http.Request, tokenScopes *scope.Set) explain.Explanation {
	return x.h.gate.Explain(r, tokenScopes)
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
