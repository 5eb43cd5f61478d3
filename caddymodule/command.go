package caddymodule

import (
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/cli"
	"github.com/crudauth/caddy-crudauth/internal/explain"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// The `caddy crudauth` command tree lives in internal/cli; Caddy gives it
// the defaults, the admin address parsing and the handlers to explain with.
func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "crudauth",
		Usage: cli.Usage,
		Short: cli.Short,
		Long:  cli.Long,
		CobraFunc: func(cmd *cobra.Command) {
			cli.Mount(cmd, hostEnv(&cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}))
		},
	})
}

// hostEnv gives env what the CLI needs of Caddy: the default database,
// the admin address and its parsing, the default password settings, and
// what explain needs. It fills only what env leaves unset.
func hostEnv(env *cli.Env) *cli.Env {
	if env.DefaultDB == "" {
		env.DefaultDB = DefaultDBPath()
	}
	if env.DefaultAdmin == "" {
		env.DefaultAdmin = caddy.DefaultAdminListen
	}
	if env.AdminAddress == nil {
		// Caddy's default, as `caddy reload` determines it.
		env.AdminAddress = func() string {
			if a, err := caddycmd.DetermineAdminAPIAddress("", nil, "", ""); err == nil {
				return a
			}
			return caddy.DefaultAdminListen
		}
	}
	if env.ParseAddress == nil {
		env.ParseAddress = parseAdminAddress
	}
	if env.Settings == nil {
		env.Settings = func() (users.Settings, error) { return settingsFor("") }
	}
	if env.ExplainHost.LoadConfig == nil {
		env.ExplainHost = cli.ExplainHost{
			LoadConfig: func(file, adapter string) ([]byte, error) {
				cfg, _, _, err := caddycmd.LoadConfig(file, adapter)
				return cfg, err
			},
			Request:    explainRequest,
			ServesHost: servesHost,
			Explain:    explainHandler,
		}
	}
	return env
}

// explainHandler provisions the handler of raw for deciding only
// (provisionForExplain: no database, no secret) and judges r with it.
func explainHandler(raw []byte, r *http.Request, tokenScopes *scope.Set, logger *zap.Logger) (explain.Explanation, error) {
	x, cancel, err := provisionForExplain(raw, logger)
	if err != nil {
		return explain.Explanation{}, err
	}
	defer cancel()
	return x.explain(r, tokenScopes), nil
}

// parseAdminAddress reads an admin address as `caddy reload --address`
// does.
func parseAdminAddress(addr string) (cli.Endpoint, error) {
	parsed, err := caddy.ParseNetworkAddress(addr)
	if err != nil || parsed.PortRangeSize() > 1 {
		return cli.Endpoint{}, fmt.Errorf("invalid admin address %q: use host:port or unix//path", addr)
	}
	ep := cli.Endpoint{Network: parsed.Network, Dial: parsed.JoinHostPort(0), Origin: "http://" + parsed.JoinHostPort(0)}
	if parsed.IsUnixNetwork() {
		ep.Unix, ep.Origin = true, "http://127.0.0.1"
		ep.Dial, _, _ = strings.Cut(parsed.Host, "|") // drop socket permission bits
	}
	return ep, nil
}
