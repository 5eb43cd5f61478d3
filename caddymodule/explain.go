package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/crudauth/caddy-crudauth/internal/cli"
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
			return explain(env, explainOptions{
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

func explain(env *cli.Env, o explainOptions) error {
	cfg, _, _, err := caddycmd.LoadConfig(o.configFile, o.adapter)
	if err != nil {
		return err
	}
	found, err := findCrudauthHandlers(cfg)
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

	out := explainOutput{Method: o.method, Target: o.target, Host: o.host}
	for _, f := range found {
		r, err := explainRequest(o.method, o.target, o.host, o.headers)
		if err != nil {
			return err
		}
		if o.hostGiven && !f.servesHost(r) {
			continue
		}
		x, cancel, err := provisionForExplain(f.raw, logger)
		if err != nil {
			return fmt.Errorf("crudauth handler %d (%s): %w", f.Number, f.Location, err)
		}
		e := x.explain(r, o.scopes)
		cancel()
		e.explainedHandler = f.explainedHandler
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
	return out.print(env.Stdout)
}

// explainOutput is what explain prints, as text or with --json.
type explainOutput struct {
	Method   string        `json:"method"`
	Target   string        `json:"target"`
	Host     string        `json:"host"`
	Handlers []explanation `json:"handlers"`
}

// explainedHandler says where a crudauth handler is in the config.
type explainedHandler struct {
	Number   int      `json:"handler"`
	Server   string   `json:"server,omitempty"`
	Hosts    []string `json:"hosts,omitempty"`
	Location string   `json:"location"`
}

// explanation is how one handler judges the request.
type explanation struct {
	explainedHandler
	Readings []explainedReading `json:"readings"`
	// Decision is one of refused, error, token_endpoint, refresh_endpoint,
	// password_endpoint, public, scopes, any_token.
	Decision string        `json:"decision"`
	Status   int           `json:"status,omitempty"` // refused, error
	Reason   string        `json:"reason,omitempty"` // refused, error
	Needs    []string      `json:"needs,omitempty"`  // scopes
	ForToken *scopeVerdict `json:"for_scopes,omitempty"`
}

type explainedReading struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Rule   int    `json:"rule"` // index in rules; -1: no rule matched
	Text   string `json:"text"`
}

// scopeVerdict is the decision for a valid token holding Scopes.
type scopeVerdict struct {
	Scopes  string   `json:"scopes"`
	Allowed bool     `json:"allowed"`
	Status  int      `json:"status,omitempty"`  // 403 when not allowed
	Missing []string `json:"missing,omitempty"` // rule scopes the token lacks
	// Ignored are the token's scopes outside grantable_scopes, which do not
	// count (see grants).
	Ignored []string `json:"ignored,omitempty"`
}

// explainer is a handler provisioned for explain.
type explainer struct {
	h *Handler
}

// explain judges r as ServeHTTP does, through route and grants, and
// records each reading and the rule it selected. tokenScopes, when not nil,
// are the scopes of a valid token to decide for.
func (x explainer) explain(r *http.Request, tokenScopes *scope.Set) explanation {
	h := x.h
	e := explanation{Readings: []explainedReading{}}
	h.identity.strip(r.Header) // as ServeHTTP does first: rules may match on headers
	ep, rule, err := h.route(r, func(rd reading, rule *Rule) {
		e.Readings = append(e.Readings, explainedReading{
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
	case ep == endpointToken:
		e.Decision = "token_endpoint"
		return e
	case ep == endpointRefresh:
		e.Decision = "refresh_endpoint"
		return e
	case ep == endpointPassword:
		e.Decision = "password_endpoint"
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
	v := &scopeVerdict{Scopes: tokenScopes.String(), Ignored: h.ceiling.Missing(*tokenScopes)}
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

func (o explainOutput) print(w io.Writer) error {
	for i, e := range o.Handlers {
		if i > 0 {
			fmt.Fprintln(w)
		}
		where := "crudauth handler " + strconv.Itoa(e.Number)
		if e.Server != "" {
			where += ": server " + e.Server
		}
		if len(e.Hosts) > 0 {
			where += ", host " + strings.Join(e.Hosts, " ")
		}
		fmt.Fprintln(w, where)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, rd := range e.Readings {
			fmt.Fprintf(tw, "  %s %s\t-> %s\n", rd.Method, quoteIfOdd(rd.Path), rd.Text)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w, "decision: "+e.decisionText())
		if v := e.ForToken; v != nil {
			line := fmt.Sprintf("decision for scopes %q: ", v.Scopes)
			if v.Allowed {
				line += "allowed"
			} else {
				line += fmt.Sprintf("denied (%d insufficient_scope: needs %s)", v.Status, strings.Join(v.Missing, " "))
			}
			if len(v.Ignored) > 0 {
				line += fmt.Sprintf("; %s outside grantable_scopes, not counted", strings.Join(v.Ignored, " "))
			}
			fmt.Fprintln(w, line)
		}
	}
	return nil
}

func (e explanation) decisionText() string {
	switch e.Decision {
	case "refused", "error":
		return fmt.Sprintf("%s (%d): %s", e.Decision, e.Status, e.Reason)
	case "token_endpoint":
		return "token endpoint"
	case "refresh_endpoint":
		return "refresh endpoint"
	case "password_endpoint":
		return "password endpoint"
	case "public":
		return "public"
	case "scopes":
		return "needs a valid token with scopes: " + strings.Join(e.Needs, " ")
	}
	return "needs any valid token"
}

// quoteIfOdd quotes a path that holds a space or a character that does not
// print, so that each reading stays one unambiguous word.
func quoteIfOdd(p string) string {
	for _, c := range p {
		if c == ' ' || !strconv.IsPrint(c) {
			return strconv.Quote(p)
		}
	}
	return p
}

// explainRequest parses "METHOD TARGET HTTP/1.1" with the given Host and
// headers as net/http's server parses a request, and prepares it as Caddy
// does before handlers run, so that matchers find their replacer and vars.
func explainRequest(method, target, host string, headers []string) (*http.Request, error) {
	if strings.ContainsAny(method+target+host, "\r\n") {
		return nil, errors.New("the method, target and host cannot hold a line break")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, host)
	for _, hv := range headers {
		name, _, ok := strings.Cut(hv, ":")
		switch {
		case !ok || strings.TrimSpace(name) == "":
			return nil, fmt.Errorf("--header %q: want \"Name: value\"", hv)
		case strings.ContainsAny(hv, "\r\n"):
			return nil, fmt.Errorf("--header %q: a header cannot hold a line break", hv)
		case strings.EqualFold(strings.TrimSpace(name), "Host"):
			return nil, errors.New("--header: give the Host with --host")
		}
		b.WriteString(hv + "\r\n")
	}
	b.WriteString("\r\n")
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(b.String())))
	if err != nil {
		return nil, fmt.Errorf("parsing the request %s %s: %w", method, target, err)
	}
	r.RemoteAddr = "127.0.0.1:0"
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

// foundHandler is a crudauth handler found in a config.
type foundHandler struct {
	explainedHandler
	raw []byte // its JSON, without the "handler" key
	// hostLevels are the host matchers of the routes that lead to it,
	// outermost first, one list per route that matches on host only.
	hostLevels [][]string
}

// servesHost reports whether every route leading to the handler accepts
// r's Host, as Caddy's host matcher judges it.
func (f foundHandler) servesHost(r *http.Request) bool {
	for _, hosts := range f.hostLevels {
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

// findCrudauthHandlers walks an adapted JSON config and returns every
// object with "handler": "crudauth", at any depth (subroutes, error
// routes), in a stable order: object keys sorted, arrays in order.
func findCrudauthHandlers(cfg []byte) ([]foundHandler, error) {
	dec := json.NewDecoder(bytes.NewReader(cfg))
	dec.UseNumber() // durations and sizes stay exact
	var root any
	if err := dec.Decode(&root); err != nil {
		return nil, err
	}
	var out []foundHandler
	var walk func(v any, loc, server string, hostLevels [][]string) error
	walk = func(v any, loc, server string, hostLevels [][]string) error {
		switch v := v.(type) {
		case []any:
			for i, x := range v {
				if err := walk(x, fmt.Sprintf("%s[%d]", loc, i), server, hostLevels); err != nil {
					return err
				}
			}
		case map[string]any:
			if v["handler"] == "crudauth" {
				m := make(map[string]any, len(v))
				for k, x := range v {
					if k != "handler" {
						m[k] = x
					}
				}
				raw, err := json.Marshal(m)
				if err != nil {
					return err
				}
				f := foundHandler{raw: raw, hostLevels: hostLevels}
				f.Number, f.Server, f.Location = len(out)+1, server, loc
				for _, hs := range hostLevels {
					f.Hosts = append(f.Hosts, hs...)
				}
				out = append(out, f)
				return nil
			}
			if _, isRoute := v["handle"]; isRoute {
				if hosts := routeHosts(v["match"]); hosts != nil {
					hostLevels = append(slices.Clip(hostLevels), hosts)
				}
			}
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				s := server
				if loc == "apps.http.servers" {
					s = k
				}
				next := k
				if loc != "" {
					next = loc + "." + k
				}
				if err := walk(v[k], next, s, hostLevels); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return out, walk(root, "", "", nil)
}

// routeHosts returns the hosts a route's matcher sets accept, or nil when
// some set does not match on host (the route then serves any host).
func routeHosts(match any) []string {
	sets, ok := match.([]any)
	if !ok || len(sets) == 0 {
		return nil
	}
	var hosts []string
	for _, s := range sets {
		set, _ := s.(map[string]any)
		hs, ok := set["host"].([]any)
		if !ok {
			return nil
		}
		for _, h := range hs {
			if str, ok := h.(string); ok {
				hosts = append(hosts, str)
			}
		}
	}
	return hosts
}
