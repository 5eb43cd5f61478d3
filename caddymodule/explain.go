package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/crudauth/caddy-crudauth/internal/cli"
	"github.com/crudauth/caddy-crudauth/internal/explain"
	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// `caddy crudauth explain` shows how a config's rules judge one request:
// each reading of it, the rule each reading selects, and the decision. It
// decides with the handler's own route and grants, on a handler provisioned
// by provisionRules, so what it prints is what the gateway does; it opens no
// database and resolves no secret.

func explainCommand(env *cli.Env) *cobra.Command {
	var (
		configFile, adapter, host, scopeList string
		headers                              []string
		handlerNum                           int
	)
	c := &cobra.Command{
		Use:   "explain --config <file> <METHOD> <target>",
		Short: "Shows how the rules of a config judge a request, reading by reading",
		Long: `Shows how each crudauth handler of a config judges one request: every
reading of its method and path that a backend may act on, the rule each
reading selects, and the decision in force (refused, served by the
gateway, public, or the token and scopes it needs). With --scopes it also
says whether a valid token holding those scopes passes.

The target is the request target as sent on the wire (percent-encoding and
query included); it is parsed as the server parses a request line. The
decision is computed by the code that serves requests. Nothing is opened
but the config file: no database, no secret, no listener.

The adapter is chosen as caddy run chooses it: caddyfile for a file named
Caddyfile* or *.caddyfile, JSON otherwise, unless --adapter is given.`,
		Example: `  caddy crudauth explain --config Caddyfile GET /admin --scopes "me:read"
  caddy crudauth explain --config Caddyfile POST /reports \
      --header 'Content-Type: application/x-www-form-urlencoded'`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var tokenScopes *scope.Set
			if cmd.Flags().Changed("scopes") {
				set, err := scope.Parse(scopeList)
				if err != nil {
					return fmt.Errorf("--scopes: %w", err)
				}
				tokenScopes = &set
			}
			return explainConfig(env, explainOptions{
				configFile: configFile, adapter: adapter,
				method: args[0], target: args[1], host: host, hostGiven: cmd.Flags().Changed("host"),
				headers: headers, scopes: tokenScopes, handler: handlerNum,
			})
		},
	}
	c.Flags().StringVar(&configFile, "config", "", "config file (required)")
	c.Flags().StringVar(&adapter, "adapter", "", "config adapter (default: caddyfile for Caddyfile* and *.caddyfile, else JSON)")
	c.Flags().StringVar(&host, "host", "localhost", "Host of the request; when given, only the handlers of routes that serve this host are explained")
	c.Flags().StringArrayVar(&headers, "header", nil, `request header "Name: value" (repeatable), e.g. a Content-Type, which changes the readings of a POST`)
	c.Flags().StringVar(&scopeList, "scopes", "", `space-separated scopes of a valid token: also say whether it passes`)
	c.Flags().IntVar(&handlerNum, "handler", 0, "explain only the crudauth handler of this number (as numbered in the output; default: all)")
	c.Flags().BoolVar(&env.JSON, "json", false, "print JSON")
	_ = c.MarkFlagRequired("config")
	c.SilenceUsage = true
	return c
}

type explainOptions struct {
	configFile, adapter  string
	method, target, host string
	hostGiven            bool
	headers              []string
	scopes               *scope.Set // nil: no --scopes
	handler              int
}

func explainConfig(env *cli.Env, o explainOptions) error {
	cfg, _, _, err := caddycmd.LoadConfig(o.configFile, o.adapter)
	if err != nil {
		return err
	}
	found, err := explain.Find(cfg)
	if err != nil {
		return fmt.Errorf("reading %s: %w", o.configFile, err)
	}
	if len(found) == 0 {
		return fmt.Errorf("no crudauth handler in %s", o.configFile)
	}
	if o.handler != 0 {
		if o.handler < 0 || o.handler > len(found) {
			return fmt.Errorf("--handler %d: %s has %d crudauth handler(s)", o.handler, o.configFile, len(found))
		}
		found = found[o.handler-1 : o.handler]
	}

	stderr := env.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	// provisionRules warns about rules no token can pass: the operator
	// running explain wants to see that.
	logger := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.AddSync(stderr), zap.WarnLevel))

	out := explain.Output{Method: o.method, Target: o.target, Host: o.host}
	for _, f := range found {
		r, err := explainRequest(o.method, o.target, o.host, o.headers)
		if err != nil {
			return err
		}
		if o.hostGiven && !servesHost(f, r) {
			continue
		}
		x, cancel, err := provisionForExplain(f.Raw, logger)
		if err != nil {
			return fmt.Errorf("crudauth handler %d (%s): %w", f.Number, f.Location, err)
		}
		e := x.explain(r, o.scopes)
		cancel()
		e.Handler = f.Handler
		out.Handlers = append(out.Handlers, e)
	}
	if len(out.Handlers) == 0 {
		return fmt.Errorf("no crudauth handler of %s serves host %q", o.configFile, o.host)
	}
	if env.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return out.Print(env.Stdout)
}

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
