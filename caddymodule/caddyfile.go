package caddymodule

import (
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/crudauth/caddy-crudauth/internal/config"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("crudauth", parseCaddyfile)
	// Rules must see the path as it will go upstream, so run after rewrite,
	// uri and try_files, and before anything that answers or proxies the
	// request (reverse_proxy, respond, file_server, handle blocks).
	httpcaddyfile.RegisterDirectiveOrder("crudauth", httpcaddyfile.Before, "basic_auth")
}

// parseCaddyfile sets up the handler from Caddyfile tokens:
//
//	crudauth {
//		<subdirective> <arguments...>
//	}
//
// The subdirectives, their arguments and defaults are documented once, in
// the Caddyfile reference of README.md; TestCaddyfileReference fails when
// the names of (*Handler).subdirectives and that reference disagree.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	if err := handler.unmarshal(h); err != nil {
		return nil, err
	}
	return handler, nil
}

// UnmarshalCaddyfile implements caddyfile.Unmarshaler. Named matchers are
// only available through the directive (which has the site's matcher
// definitions); here `@name` is an error.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return h.unmarshal(httpcaddyfile.Helper{Dispenser: d})
}

func (h *Handler) unmarshal(hp httpcaddyfile.Helper) error {
	d := hp.Dispenser
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	return h.subdirectives(hp).parseBlock(d, "", func(sub string) error {
		return d.Errf("unrecognized subdirective %q", sub)
	}, "public", "require") // rules repeat by design
}

// subdirectives are the handler's subdirectives: its own, its realm's,
// its sessions' and its discovery's.
func (h *Handler) subdirectives(hp httpcaddyfile.Helper) subdirectives {
	rule := func(_ *caddyfile.Dispenser, kind string) error {
		r, err := parseRule(hp, kind)
		if err != nil {
			return err
		}
		h.Rules = append(h.Rules, r)
		return nil
	}
	subs := subdirectives{
		"refresh":          stringArg(&h.Refresh),
		"token_path":       stringArg(&h.TokenPath),
		"refresh_path":     stringArg(&h.RefreshPath),
		"issuer":           stringArg(&h.Issuer),
		"audience":         stringArg(&h.Audience),
		"realm":            stringArg(&h.Realm),
		"cookie_name":      stringArg(&h.CookieName),
		"user_id_header":   stringArg(&h.UserIDHeader),
		"user_name_header": stringArg(&h.UserNameHeader),
		"scopes_header":    stringArg(&h.ScopesHeader),
		"password_path":    stringArg(&h.PasswordPath),
		"cookie_same_site": stringArg(&h.CookieSameSite),
		"access_ttl":       durationArg(&h.AccessTTL),
		"refresh_ttl":      durationArg(&h.RefreshTTL),
		"default_scopes":   listArgs(&h.DefaultScopes),
		"grantable_scopes": listArgs(&h.GrantableScopes),
		"allowed_origins":  listArgs(&h.AllowedOrigins),
		"strip_headers":    listArgs(&h.StripHeaders),
		"public":           rule,
		"require":          rule,
	}
	for _, more := range []subdirectives{h.RealmSettings.subdirectives(), h.SessionSettings.subdirectives(),
		h.DiscoverySettings.subdirectives()} {
		for name, parse := range more {
			if _, dup := subs[name]; dup {
				panic("crudauth: two parsers for subdirective " + name)
			}
			subs[name] = parse
		}
	}
	return subs
}

// parseFn parses the arguments (and block) of subdirective name, at which
// the Dispenser is.
type parseFn func(d *caddyfile.Dispenser, name string) error

// subdirectives maps the names a block takes to their parsers.
type subdirectives map[string]parseFn

// parseBlock parses the block at d: each subdirective with its parser,
// once unless it is repeatable (a repeat is refused with the line of the
// first, instead of silently overriding or extending it; what, such as
// "throttle ", prefixes the name in that error); unknown makes the error
// of a name that is not in subs.
func (subs subdirectives) parseBlock(d *caddyfile.Dispenser, what string, unknown func(sub string) error, repeatable ...string) error {
	seen := map[string]int{} // line of each subdirective given
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if line, ok := seen[sub]; ok {
			return d.Errf("%s is given twice (first on line %d): give it once", what+sub, line)
		}
		if !slices.Contains(repeatable, sub) {
			seen[sub] = d.Line()
		}
		parse, ok := subs[sub]
		if !ok {
			return unknown(sub)
		}
		if err := parse(d, sub); err != nil {
			return err
		}
	}
	return nil
}

// unrecognizedOneArg is the error of an unknown subdirective sub in a
// block whose subdirectives all take one argument: a wrong argument count
// is reported first, as it would be for a known one.
func unrecognizedOneArg(d *caddyfile.Dispenser, format string) func(sub string) error {
	unknown := oneArg(func(d *caddyfile.Dispenser, sub, _ string) error { return d.Errf(format, sub) })
	return func(sub string) error { return unknown(d, sub) }
}

// oneArg parses the one argument v of subdirective name with fn.
func oneArg(fn func(d *caddyfile.Dispenser, name, v string) error) parseFn {
	return func(d *caddyfile.Dispenser, name string) error {
		var v string
		if !d.AllArgs(&v) {
			return d.ArgErr()
		}
		return fn(d, name, v)
	}
}

// stringArg parses one argument into *p.
func stringArg(p *string) parseFn {
	return oneArg(func(_ *caddyfile.Dispenser, _, v string) error { *p = v; return nil })
}

// durationArg parses one positive duration into *p.
func durationArg(p *caddy.Duration) parseFn {
	return oneArg(func(d *caddyfile.Dispenser, name, v string) error {
		dur, err := caddy.ParseDuration(v)
		if err != nil {
			return d.Errf("%s: %v", name, err)
		}
		if dur <= 0 {
			return d.Errf("%s: must be positive", name)
		}
		*p = caddy.Duration(dur)
		return nil
	})
}

// storeDurationArg parses one positive duration into *p, in the block of
// store module what.
func storeDurationArg(what string, p *caddy.Duration) parseFn {
	return oneArg(func(d *caddyfile.Dispenser, name, v string) error {
		dur, err := caddy.ParseDuration(v)
		if err != nil || dur <= 0 {
			return d.Errf("%s: %s %q is not a positive duration", what, name, v)
		}
		*p = caddy.Duration(dur)
		return nil
	})
}

// positiveIntArg parses one positive integer into *p.
func positiveIntArg(p *int) parseFn {
	return oneArg(func(d *caddyfile.Dispenser, name, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return d.Errf("%s: %q is not a positive number", name, v)
		}
		*p = n
		return nil
	})
}

// onOff parses one argument, on or off, into *p.
func onOff(p *bool) parseFn {
	return oneArg(func(d *caddyfile.Dispenser, name, v string) error {
		if v != "on" && v != "off" {
			return d.Errf("%s: %q is not one of on, off", name, v)
		}
		*p = v == "on"
		return nil
	})
}

// listArgs appends one or more arguments to *p.
func listArgs(p *[]string) parseFn {
	return func(d *caddyfile.Dispenser, _ string) error {
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		*p = append(*p, args...)
		return nil
	}
}

// pathArg parses one endpoint path into *p; off too when offAllowed.
func pathArg(p *string, offAllowed bool) parseFn {
	return oneArg(func(d *caddyfile.Dispenser, name, v string) error {
		if !offAllowed || v != config.PathOff {
			if err := config.CheckEndpointPath(name, v); err != nil {
				return d.Err(err.Error())
			}
		}
		*p = v
		return nil
	})
}

// parseRule parses `public <matcher>` or `require <matcher> [<scope...>]`.
// <matcher> is `*`, `@name`, or one or more path patterns, which make one
// path matcher: `require /admin /admin/* admin` covers /admin itself as
// well as what lies under it.
func parseRule(hp httpcaddyfile.Helper, kind string) (Rule, error) {
	d := hp.Dispenser
	var matcherSet caddy.ModuleMap
	var isMatcher bool
	var err error
	if d.CountRemainingArgs() > 0 {
		if d.NextArg(); strings.HasPrefix(d.Val(), "/") {
			patterns := caddyhttp.MatchPath{d.Val()}
			for d.NextArg() {
				if !strings.HasPrefix(d.Val(), "/") {
					d.Prev()
					break
				}
				patterns = append(patterns, d.Val())
			}
			matcherSet = caddy.ModuleMap{"path": caddyconfig.JSON(patterns, nil)}
			isMatcher = true
		} else {
			d.Prev()
			matcherSet, isMatcher, err = hp.MatcherToken()
			if err != nil {
				return Rule{}, d.Errf("%s: %v", kind, err)
			}
		}
	}
	if !isMatcher {
		return Rule{}, d.Errf("%s needs a matcher first: *, a path such as /reports/*, or @name", kind)
	}
	rule := Rule{Public: kind == "public"}
	if matcherSet != nil {
		rule.MatcherSetsRaw = caddyhttp.RawMatcherSets{matcherSet}
	}
	scopes := d.RemainingArgs()
	for _, sc := range scopes {
		// `require /a /b scope` would silently make /b a scope
		if strings.HasPrefix(sc, "/") || strings.HasPrefix(sc, "@") || sc == "*" {
			return Rule{}, d.Errf("%s takes one matcher (path patterns count as one); %q looks like a second one: define a named matcher (@name) that matches both", kind, sc)
		}
	}
	if rule.Public && len(scopes) > 0 {
		return Rule{}, d.Errf("public takes only a matcher; to require scopes use: require <matcher> %s", scopes[0])
	}
	rule.Scopes = scopes
	return rule, nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)

// errDBAndStore refuses a block that names the store twice, once with db
// and once with store.
func errDBAndStore(d *caddyfile.Dispenser) error {
	return d.Err("db and store both name the store: db <path> is short for store bolt { path <path> }, use one of them")
}
