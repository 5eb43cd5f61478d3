package caddymodule

import (
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
// the cases of unmarshal and that reference disagree.
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
	seen := seenSubdirectives{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if sub != "public" && sub != "require" { // rules repeat by design
			if err := seen.once(d, sub); err != nil {
				return err
			}
		}
		switch sub {
		case "db", "store", "secret", "argon2", "max_concurrent_hashes", "hash_queue_timeout", "throttle",
			"password_min_length", "password_max_length", "signing_alg", "key_publish_delay":
			if err := h.RealmSettings.unmarshalSub(d, sub); err != nil {
				return err
			}
		case "rotate_refresh", "refresh_reuse_grace", "refresh_sliding", "max_sessions", "logout_path", "sessions_path":
			if err := h.SessionSettings.unmarshalSub(d, sub); err != nil {
				return err
			}
		case "jwks_path", "metadata_path", "forward_token":
			if err := h.DiscoverySettings.unmarshalSub(d, sub); err != nil {
				return err
			}
		case "refresh", "token_path", "refresh_path", "issuer", "audience",
			"realm", "cookie_name", "user_id_header", "user_name_header", "scopes_header", "password_path",
			"cookie_same_site":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			*h.stringField(sub) = v
		case "access_ttl", "refresh_ttl":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := positiveDuration(d, sub, v)
			if err != nil {
				return err
			}
			if sub == "access_ttl" {
				h.AccessTTL = dur
			} else {
				h.RefreshTTL = dur
			}
		case "default_scopes", "grantable_scopes", "allowed_origins", "strip_headers":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			switch sub {
			case "default_scopes":
				h.DefaultScopes = append(h.DefaultScopes, args...)
			case "grantable_scopes":
				h.GrantableScopes = append(h.GrantableScopes, args...)
			case "strip_headers":
				h.StripHeaders = append(h.StripHeaders, args...)
			default:
				h.AllowedOrigins = append(h.AllowedOrigins, args...)
			}
		case "public", "require":
			rule, err := parseRule(hp, sub)
			if err != nil {
				return err
			}
			h.Rules = append(h.Rules, rule)
		default:
			return d.Errf("unrecognized subdirective %q", sub)
		}
	}
	return nil
}

// seenSubdirectives remembers where each subdirective of a block was
// given, so that a repeated one is refused instead of silently overriding
// or extending the first.
type seenSubdirectives map[string]int

func (s seenSubdirectives) once(d *caddyfile.Dispenser, name string) error {
	if line, ok := s[name]; ok {
		return d.Errf("%s is given twice (first on line %d): give it once", name, line)
	}
	s[name] = d.Line()
	return nil
}

// positiveDuration parses the duration argument v of subdirective name.
func positiveDuration(d *caddyfile.Dispenser, name, v string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("%s: %v", name, err)
	}
	if dur <= 0 {
		return 0, d.Errf("%s: must be positive", name)
	}
	return caddy.Duration(dur), nil
}

func (h *Handler) stringField(name string) *string {
	switch name {
	case "refresh":
		return &h.Refresh
	case "token_path":
		return &h.TokenPath
	case "refresh_path":
		return &h.RefreshPath
	case "issuer":
		return &h.Issuer
	case "audience":
		return &h.Audience
	case "realm":
		return &h.Realm
	case "cookie_name":
		return &h.CookieName
	case "user_id_header":
		return &h.UserIDHeader
	case "user_name_header":
		return &h.UserNameHeader
	case "scopes_header":
		return &h.ScopesHeader
	case "password_path":
		return &h.PasswordPath
	case "cookie_same_site":
		return &h.CookieSameSite
	}
	panic("crudauth: no string field " + name)
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
