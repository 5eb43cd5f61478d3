// Package explain is what `caddy crudauth explain` reports, apart from the
// judging itself, which is the gateway's own code: the crudauth handlers
// found in an adapted config, the request parsed as a server parses it,
// and the report, as text or JSON.
package explain

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Output is what explain prints, as text or with --json.
type Output struct {
	Method   string        `json:"method"`
	Target   string        `json:"target"`
	Host     string        `json:"host"`
	Handlers []Explanation `json:"handlers"`
}

// Handler says where a crudauth handler is in the config.
type Handler struct {
	Number   int      `json:"handler"`
	Server   string   `json:"server,omitempty"`
	Hosts    []string `json:"hosts,omitempty"`
	Location string   `json:"location"`
}

// Explanation is how one handler judges the request.
type Explanation struct {
	Handler
	Readings []Reading `json:"readings"`
	// Decision is one of refused, error, token_endpoint, refresh_endpoint,
	// password_endpoint, logout_endpoint, sessions_endpoint, jwks_endpoint,
	// metadata_endpoint, preflight, public, scopes, any_token.
	Decision string        `json:"decision"`
	Status   int           `json:"status,omitempty"` // refused, error
	Reason   string        `json:"reason,omitempty"` // refused, error
	Needs    []string      `json:"needs,omitempty"`  // scopes
	ForToken *ScopeVerdict `json:"for_scopes,omitempty"`
}

type Reading struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Rule   int    `json:"rule"` // index in rules; -1: no rule matched
	Text   string `json:"text"`
}

// ScopeVerdict is the decision for a valid token holding Scopes.
type ScopeVerdict struct {
	Scopes  string   `json:"scopes"`
	Allowed bool     `json:"allowed"`
	Status  int      `json:"status,omitempty"`  // 403 when not allowed
	Missing []string `json:"missing,omitempty"` // rule scopes the token lacks
	// Ignored are the token's scopes outside grantable_scopes, which do not
	// count (see grants).
	Ignored []string `json:"ignored,omitempty"`
}

// Print writes o as text.
func (o Output) Print(w io.Writer) error {
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

func (e Explanation) decisionText() string {
	switch e.Decision {
	case "refused", "error":
		return fmt.Sprintf("%s (%d): %s", e.Decision, e.Status, e.Reason)
	case "token_endpoint":
		return "token endpoint"
	case "refresh_endpoint":
		return "refresh endpoint"
	case "password_endpoint":
		return "password endpoint"
	case "logout_endpoint":
		return "logout endpoint"
	case "sessions_endpoint":
		return "sessions endpoint"
	case "jwks_endpoint":
		return "JWKS endpoint (public)"
	case "metadata_endpoint":
		return "metadata endpoint (public)"
	case "preflight":
		return "CORS preflight: passed on without a token and without identity headers"
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

// ParseRequest parses "METHOD TARGET HTTP/1.1" with the given Host and
// headers ("Name: value") as net/http's server parses a request, from
// 127.0.0.1.
func ParseRequest(method, target, host string, headers []string) (*http.Request, error) {
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
	return r, nil
}

// Found is a crudauth handler found in a config.
type Found struct {
	Handler
	Raw []byte // its JSON, without the "handler" key
	// hostLevels are the host matchers of the routes that lead to it,
	// outermost first, one list per route that matches on host only.
	HostLevels [][]string
}

// Find walks an adapted JSON config and returns every
// object with "handler": "crudauth", at any depth (subroutes, error
// routes), in a stable order: object keys sorted, arrays in order.
func Find(cfg []byte) ([]Found, error) {
	dec := json.NewDecoder(bytes.NewReader(cfg))
	dec.UseNumber() // durations and sizes stay exact
	var root any
	if err := dec.Decode(&root); err != nil {
		return nil, err
	}
	var out []Found
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
				f := Found{Raw: raw, HostLevels: hostLevels}
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
