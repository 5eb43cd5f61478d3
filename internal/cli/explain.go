package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/crudauth/caddy-crudauth/internal/explain"
	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// `caddy crudauth explain` shows how a config's rules judge one request:
// each reading of it, the rule each reading selects, and the decision. The
// host decides with the handler's own route and grants, so what it prints
// is what the gateway does; it opens no database and resolves no secret.

// ExplainHost is what explain needs of the host program, whose config and
// handlers it explains.
type ExplainHost struct {
	// LoadConfig reads a config file into JSON with the adapter named, or
	// with the one `caddy run` would choose when adapter is empty.
	LoadConfig func(file, adapter string) ([]byte, error)
	// Request builds the request to judge as the server would hand it to
	// its handlers.
	Request func(method, target, host string, headers []string) (*http.Request, error)
	// ServesHost reports whether every route leading to the handler f
	// accepts r's Host.
	ServesHost func(f explain.Found, r *http.Request) bool
	// Explain provisions the handler of raw (its JSON), as far as deciding
	// needs, and judges r with it; scopes, when not nil, are those of a
	// valid token to decide for. The handler logs its warnings to logger.
	Explain func(raw []byte, r *http.Request, scopes *scope.Set, logger *zap.Logger) (explain.Explanation, error)
}

func explainCommand(env *Env) *cobra.Command {
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
			return env.Explain(ExplainOptions{
				ConfigFile: configFile, Adapter: adapter,
				Method: args[0], Target: args[1], Host: host, HostGiven: cmd.Flags().Changed("host"),
				Headers: headers, Scopes: tokenScopes, Handler: handlerNum,
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

// ExplainOptions are explain's arguments and flags.
type ExplainOptions struct {
	ConfigFile, Adapter  string
	Method, Target, Host string
	HostGiven            bool // --host given: skip the handlers of routes for other hosts
	Headers              []string
	Scopes               *scope.Set // nil: no --scopes
	Handler              int        // 0: every handler
}

// Explain judges the request o describes with each crudauth handler of the
// config file (or the one o.Handler numbers), and prints the explanations.
func (env *Env) Explain(o ExplainOptions) error {
	hooks := env.ExplainHost
	if hooks.LoadConfig == nil || hooks.Request == nil || hooks.ServesHost == nil || hooks.Explain == nil {
		return errors.New("explain is not available: the program did not provide its config loader and judge")
	}
	cfg, err := hooks.LoadConfig(o.ConfigFile, o.Adapter)
	if err != nil {
		return err
	}
	found, err := explain.Find(cfg)
	if err != nil {
		return fmt.Errorf("reading %s: %w", o.ConfigFile, err)
	}
	if len(found) == 0 {
		return fmt.Errorf("no crudauth handler in %s", o.ConfigFile)
	}
	if o.Handler != 0 {
		if o.Handler < 0 || o.Handler > len(found) {
			return fmt.Errorf("--handler %d: %s has %d crudauth handler(s)", o.Handler, o.ConfigFile, len(found))
		}
		found = found[o.Handler-1 : o.Handler]
	}

	stderr := env.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	// Provisioning warns about rules no token can pass: the operator
	// running explain wants to see that.
	logger := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.AddSync(stderr), zap.WarnLevel))

	out := explain.Output{Method: o.Method, Target: o.Target, Host: o.Host}
	for _, f := range found {
		// A new request for each handler: judging one changes it (the
		// handler strips its identity headers first, as it does when it
		// serves).
		r, err := hooks.Request(o.Method, o.Target, o.Host, o.Headers)
		if err != nil {
			return err
		}
		if o.HostGiven && !hooks.ServesHost(f, r) {
			continue
		}
		e, err := hooks.Explain(f.Raw, r, o.Scopes, logger)
		if err != nil {
			return fmt.Errorf("crudauth handler %d (%s): %w", f.Number, f.Location, err)
		}
		e.Handler = f.Handler
		out.Handlers = append(out.Handlers, e)
	}
	if len(out.Handlers) == 0 {
		return fmt.Errorf("no crudauth handler of %s serves host %q", o.ConfigFile, o.Host)
	}
	if env.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return out.Print(env.Stdout)
}
