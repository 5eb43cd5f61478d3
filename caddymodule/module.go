// Package caddymodule plugs caddy-crudauth into Caddy: the HTTP handler
// http.handlers.crudauth, its Caddyfile directive, and the `caddy crudauth`
// subcommands. It is the only package of the project that imports Caddy; the
// logic lives in the Caddy-free packages under internal/.
package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/config"
	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/gate"
	"github.com/crudauth/caddy-crudauth/internal/keys"
	"github.com/crudauth/caddy-crudauth/internal/metrics"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the handler's configuration.
const (
	DefaultAccessTTL     = token.DefaultAccessTTL
	DefaultRefreshTTL    = token.DefaultRefreshTTL
	DefaultTokenPath     = "/token"
	DefaultRefreshPath   = "/refresh"
	DefaultIssuer        = "caddy-crudauth"
	DefaultAudience      = "caddy-crudauth"
	DefaultRealm         = "crudauth"
	DefaultCookieName    = "__Secure-crudauth_refresh"
	DefaultUserIDHeader  = "X-User-Id"
	DefaultUserHeader    = "X-User-Name"
	DefaultScopesHeader  = "X-User-Scopes"
	RefreshModeCookie    = config.RefreshModeCookie
	RefreshModeBody      = config.RefreshModeBody
	generatedSecretName  = "hs256"
	generatedSecretBytes = 32
)

// Handler is a bearer-token gateway. It serves POST requests to token_path
// (log in, get a token pair) and refresh_path (get a new access token from a
// refresh token), and checks every other request for a valid
// `Authorization: Bearer` access token against the configured rules before
// passing it on with the user's identity in request headers.
type Handler struct {
	// What the handler's own realm holds (db or store, secret, argon2,
	// max_concurrent_hashes, hash_queue_timeout, throttle, the password
	// policy), when the handler does not name a realm declared in the
	// global crudauth options. See RealmSettings.
	RealmSettings

	// Sessions: rotation of refresh tokens, logout, the session list.
	// See SessionSettings.
	SessionSettings

	// The JWKS and metadata endpoints, and whether the token goes
	// upstream. See DiscoverySettings.
	DiscoverySettings

	// Lifetime of access tokens. Default: 15m.
	AccessTTL caddy.Duration `json:"access_ttl,omitempty"`

	// Lifetime of refresh tokens (and of the refresh cookie). Default: 720h.
	RefreshTTL caddy.Duration `json:"refresh_ttl,omitempty"`

	// Where the refresh token travels: "cookie" (an HttpOnly, Secure
	// cookie scoped to refresh_path, SameSite as cookie_same_site says) or
	// "body" (the JSON response). Default: cookie.
	Refresh string `json:"refresh,omitempty"`

	// Scopes a login gets when it asks for none. Default: none. Must be a
	// subset of grantable_scopes.
	DefaultScopes []string `json:"default_scopes,omitempty"`

	// The ceiling: no token ever holds a scope outside this list, at login
	// or at refresh. Default: default_scopes.
	GrantableScopes []string `json:"grantable_scopes,omitempty"`

	// Path of the login endpoint. Default: /token.
	TokenPath string `json:"token_path,omitempty"`

	// Path of the refresh endpoint. Default: /refresh.
	RefreshPath string `json:"refresh_path,omitempty"`

	// The `iss` claim of issued tokens, checked on every token. Default:
	// caddy-crudauth.
	Issuer string `json:"issuer,omitempty"`

	// The `aud` claim of issued tokens, checked on every token. Default:
	// caddy-crudauth. Gateways that must not accept each other's tokens
	// while sharing a key need distinct audiences.
	Audience string `json:"audience,omitempty"`

	// The realm in `WWW-Authenticate` challenges. Default: crudauth.
	Realm string `json:"realm,omitempty"`

	// Name of the refresh cookie. Default: __Secure-crudauth_refresh.
	CookieName string `json:"cookie_name,omitempty"`

	// The refresh cookie's SameSite attribute: strict, lax or none.
	// Default: strict. With strict or lax every allowed origin must be
	// same-site with the gateway (the cookie never reaches another site);
	// with none the Origin check against allowed_origins is what keeps
	// other sites off the cookie endpoints.
	CookieSameSite string `json:"cookie_same_site,omitempty"`

	// Origins (scheme://host[:port]) besides the request's own that may call
	// the gateway's own endpoints from a browser: they get CORS answers with
	// credentials, preflights included, and in cookie mode they pass the
	// Origin check. Default: none.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`

	// Request header that carries the user's ID upstream. Default: X-User-Id.
	UserIDHeader string `json:"user_id_header,omitempty"`

	// Request header that carries the username upstream. Default: X-User-Name.
	UserNameHeader string `json:"user_name_header,omitempty"`

	// Request header that carries the token's scopes upstream,
	// space-separated. Default: X-User-Scopes.
	ScopesHeader string `json:"scopes_header,omitempty"`

	// Further request headers to remove from every request, in any spelling
	// (letter case, `_` or `.` for `-`), for a backend that trusts a header
	// that is not on the built-in list. The gateway's own identity headers,
	// the routing overrides (X-Original-Url, X-Http-Method-Override and the
	// like) and the identity headers of other auth layers
	// (ForeignIdentityHeaders: X-Forwarded-User, Remote-User,
	// X-Auth-Request-Email, X-Webauth-User and more) are always removed.
	// Default: none.
	StripHeaders []string `json:"strip_headers,omitempty"`

	// Access rules, applied in order; the first whose matchers match the
	// request decides. A request that matches no rule needs a valid token
	// with no particular scope.
	Rules []Rule `json:"rules,omitempty"`

	// Path of the self-service password change endpoint (POST with a valid
	// access token, current_password and new_password). Default: none, the
	// endpoint is off.
	PasswordPath string `json:"password_path,omitempty"`

	// runtime state, built in Provision and never mutated after it
	logger     *zap.Logger
	app        *App
	realm      *realm
	ownRealm   bool // realm is the handler's own, released in Cleanup
	realmNamed bool // the config gave `realm`
	tokens     *token.Manager
	keyRing    *keys.Ring // nil for HS256
	auth       *auth.Service
	defaults   scope.Set
	ceiling    scope.Set
	gate       *gate.Gate        // the decision on a request
	own        *endpoints.Server // the gateway's own endpoints
}

// Argon2Params are the argon2id parameters for new hashes.
type Argon2Params struct {
	// Memory in KiB. Default and minimum: 19456.
	Memory uint32 `json:"memory,omitempty"`
	// Iterations. Default and minimum: 2.
	Time uint32 `json:"time,omitempty"`
	// Parallelism. Default and minimum: 1.
	Threads uint8 `json:"threads,omitempty"`
}

// Rule is one access rule: requests matched by Match are either public (no
// token needed) or need a valid token holding every scope in Scopes.
type Rule struct {
	// Matcher sets, as in a route's `match`; any set matching selects the
	// rule. Empty matches every request.
	MatcherSetsRaw caddyhttp.RawMatcherSets `json:"match,omitempty" caddy:"namespace=http.matchers"`

	// Requests this rule selects need no token. Identity headers are still
	// removed from them.
	Public bool `json:"public,omitempty"`

	// Scopes the token must hold, all of them. Ignored when Public is set.
	Scopes []string `json:"scopes,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.crudauth",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults, resolves the secret, loads the rules' matchers and
// acquires the shared store.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.realmNamed = h.Realm != "" // before setDefaults gives it one
	if err := h.provisionRules(ctx); err != nil {
		return err
	}
	return h.provisionRuntime(ctx)
}

// provisionRules is the part of Provision that deciding on a request needs:
// defaults, the static checks, the scope sets and the rules' matchers. It
// opens nothing and resolves no secret, so `caddy crudauth explain` runs it
// on a config file and judges requests with the code that serves them.
func (h *Handler) provisionRules(ctx caddy.Context) error {
	h.setDefaults()

	if err := h.checkStatic(); err != nil {
		return err
	}

	var err error
	if h.defaults, err = scope.New(h.DefaultScopes...); err != nil {
		return fmt.Errorf("default_scopes: %w", err)
	}
	if h.GrantableScopes == nil {
		h.ceiling = h.defaults
	} else if h.ceiling, err = scope.New(h.GrantableScopes...); err != nil {
		return fmt.Errorf("grantable_scopes: %w", err)
	}
	if missing := h.ceiling.Missing(h.defaults); len(missing) > 0 {
		return fmt.Errorf("default_scopes (%s) must be a subset of grantable_scopes (%s): %s not grantable",
			h.defaults, h.ceiling, missing)
	}

	rules := make([]gate.RuleConfig, len(h.Rules))
	for i := range h.Rules {
		rules[i] = h.Rules[i].gateRule(ctx, i)
	}
	h.gate, err = gate.New(gate.Config{
		Paths: gate.Paths{
			Token: h.TokenPath, Refresh: h.RefreshPath, Password: h.PasswordPath, Logout: h.LogoutPath,
			Sessions: h.SessionsPath, JWKS: config.DiscoveryPath(h.JWKSPath), Metadata: config.DiscoveryPath(h.MetadataPath),
		},
		Rules:   rules,
		Realm:   h.Realm,
		Ceiling: h.ceiling,
		Identity: gate.Identity{
			ID: h.UserIDHeader, Name: h.UserNameHeader, Scopes: h.ScopesHeader, Strip: h.StripHeaders,
		},
		ForwardToken: h.ForwardToken,
		Prepare:      prepareOwnRequest,
		ClientIP:     clientIP,
		Logger:       h.logger,
	})
	return err
}

// gateRule is rule i as the gate takes it: Caddy loads its matchers, when
// the gate asks (gate.RuleConfig.Load).
func (rule *Rule) gateRule(ctx caddy.Context, i int) gate.RuleConfig {
	rc := gate.RuleConfig{Public: rule.Public, Scopes: rule.Scopes}
	if rule.MatcherSetsRaw == nil {
		return rc
	}
	// LoadModule drops the JSON; the gate keeps it to describe the rule.
	for _, set := range rule.MatcherSetsRaw {
		rc.Matchers = append(rc.Matchers, map[string]json.RawMessage(set))
	}
	rc.Load = func() (func(*http.Request) (bool, error), error) {
		mods, err := ctx.LoadModule(rule, "MatcherSetsRaw")
		if err != nil {
			return nil, fmt.Errorf("rules[%d]: loading matchers: %w", i, err)
		}
		var matchers caddyhttp.MatcherSets
		if err := matchers.FromInterface(mods); err != nil {
			return nil, fmt.Errorf("rules[%d]: %w", i, err)
		}
		if len(matchers) == 0 {
			return nil, nil
		}
		return matchers.AnyMatchWithError, nil
	}
	return rc
}

// prepareOwnRequest readies a request that the gate builds itself (to
// check the rules at load) as Caddy readies a received one, with the
// replacer and the vars in its context, so that matchers find them.
func prepareOwnRequest(r *http.Request) *http.Request {
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	return r.WithContext(ctx)
}

// provisionRuntime is the rest of Provision: the realm (a declared one
// the handler names, or its own), the tokens and the auth service.
func (h *Handler) provisionRuntime(ctx caddy.Context) error {
	var err error
	if h.app, err = crudauthApp(ctx); err != nil {
		return err
	}
	if err := metrics.Register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	if h.realmNamed && len(h.app.declared) > 0 {
		// With realms declared, `realm NAME` names one of them: a typo
		// must not quietly give the handler a store of its own.
		r, ok := h.app.realm(h.Realm)
		if !ok {
			return fmt.Errorf("realm %q is not declared in the global crudauth options (declared: %s)",
				h.Realm, strings.Join(h.app.names(), ", "))
		}
		if !h.RealmSettings.isZero() {
			return fmt.Errorf("%s belong to realm %q: set them in its declaration in the global crudauth options",
				strings.Join(h.RealmSettings.given(), ", "), h.Realm)
		}
		h.realm = r
	} else {
		if h.realmNamed && h.DB == "" && h.StoreRaw == nil {
			// Before realms, `realm` only named the challenge realm, and such
			// configs keep working; but a config that meant a declared realm
			// and lost the global option would land on the default store.
			h.logger.Warn("realm names no realm declared in the global crudauth options: the handler uses a store of its own, the default one",
				zap.String("realm", h.Realm), zap.String("store", DefaultDBPath()))
		}
		r, err := h.RealmSettings.provision(ctx)
		if err != nil {
			return err
		}
		h.realm, h.ownRealm = r, true
		// From here on the admin API finds this realm by its store.
		h.app.addOwn(r)
	}

	if err := h.provisionKeys(ctx); err != nil {
		_ = h.Cleanup() // the handler's own realm, taken above
		return err
	}
	var ks auth.KeySyncer
	if h.keyRing != nil {
		ks = h.keyRing
	}
	h.auth = auth.New(auth.Config{
		Store:     h.realm.store,
		Tokens:    h.tokens,
		Hasher:    h.realm.hasher,
		HashLimit: h.realm.hashLimit,
		Throttle:  h.realm.throttle,
		Policy:    h.realm.policy,
		Defaults:  h.defaults,
		Ceiling:   h.ceiling,
		Logger:    h.logger,
		OnHash:    beginLoginHash,
		Sessions:  h.SessionSettings.policy(),
		OnReuse:   metrics.RefreshReuse,
		Keys:      ks,
	})
	h.gate = h.gate.WithAuth(h.auth)
	h.own = h.newEndpoints()

	h.logger.Info("crudauth ready",
		zap.String("realm", h.realm.name),
		zap.String("store", storeName(h.realm.storeKey)),
		zap.String("signing_alg", h.realm.signingAlg),
		zap.String("secret_source", h.realm.secretSource),
		zap.String("kid", h.tokens.KeyID()),
		zap.String("refresh", h.Refresh),
		zap.Stringer("grantable_scopes", h.ceiling),
		zap.Int("rules", len(h.Rules)),
	)
	return nil
}

func (h *Handler) setDefaults() {
	orDefault(&h.AccessTTL, caddy.Duration(DefaultAccessTTL))
	orDefault(&h.RefreshTTL, caddy.Duration(DefaultRefreshTTL))
	orDefault(&h.Refresh, RefreshModeCookie)
	orDefault(&h.TokenPath, DefaultTokenPath)
	orDefault(&h.RefreshPath, DefaultRefreshPath)
	orDefault(&h.Issuer, DefaultIssuer)
	orDefault(&h.Audience, DefaultAudience)
	orDefault(&h.Realm, DefaultRealm)
	orDefault(&h.CookieName, DefaultCookieName)
	orDefault(&h.UserIDHeader, DefaultUserIDHeader)
	orDefault(&h.UserNameHeader, DefaultUserHeader)
	orDefault(&h.ScopesHeader, DefaultScopesHeader)
	h.SessionSettings.setDefaults()
	h.DiscoverySettings.setDefaults()
}

// orDefault sets *field to def when it holds the zero value.
func orDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// checkStatic rejects unsafe or contradictory settings that need nothing but
// the config itself (config.Gateway.Check). Each message names the field.
func (h *Handler) checkStatic() error {
	g := config.Gateway{
		AccessTTL:      time.Duration(h.AccessTTL),
		RefreshTTL:     time.Duration(h.RefreshTTL),
		Refresh:        h.Refresh,
		TokenPath:      h.TokenPath,
		RefreshPath:    h.RefreshPath,
		PasswordPath:   h.PasswordPath,
		CookieName:     h.CookieName,
		CookieSameSite: h.CookieSameSite,
		AllowedOrigins: h.AllowedOrigins,
		UserIDHeader:   h.UserIDHeader,
		UserNameHeader: h.UserNameHeader,
		ScopesHeader:   h.ScopesHeader,
		StripHeaders:   h.StripHeaders,
		Sessions:       h.SessionSettings.values(),
		Discovery:      config.Discovery{JWKSPath: h.JWKSPath, MetadataPath: h.MetadataPath},
		Realm:          h.RealmSettings.values(),
	}
	return g.Check()
}

// Validate is part of caddy.Validator. Everything that can be checked is
// checked in Provision, before the database is opened; this re-checks the
// static rules for configs provisioned some other way.
func (h *Handler) Validate() error {
	return h.checkStatic()
}

// Cleanup releases the shared store handle.
func (h *Handler) Cleanup() error {
	if h.realm != nil && h.keyRing != nil {
		h.realm.removeRing(h.keyRing)
	}
	if !h.ownRealm || h.realm == nil {
		return nil
	}
	if h.app != nil {
		h.app.removeOwn(h.realm)
	}
	return h.realm.release()
}

// DefaultDBPath is where the database lives when `db` is not set.
func DefaultDBPath() string {
	return filepath.Join(caddy.AppDataDir(), "crudauth", "crudauth.db")
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// Whatever happens next, the client never speaks for the gateway:
	// identity headers it sent are dropped on every request, public ones and
	// the token endpoints included, and so are the path and method override
	// headers (gate.RoutingOverrides), in the same pass over the headers.
	h.gate.StripIdentity(r.Header)

	ep, rule, err := h.gate.Route(r, nil)
	if err == nil && ep != endpoints.None {
		if done, err := h.own.CORS(w, r, ep); done {
			return err
		}
	}
	switch {
	case gate.IsRefusal(err):
		h.gate.LogDenial(r, http.StatusBadRequest, err)
		return caddyhttp.Error(http.StatusBadRequest, err)
	case err != nil:
		return caddyhttp.Error(http.StatusInternalServerError, err)
	case ep == endpoints.Token:
		return h.own.ServeToken(w, r)
	case ep == endpoints.Refresh:
		return h.own.ServeRefresh(w, r)
	case ep == endpoints.Password:
		return h.own.ServePassword(w, r)
	case ep == endpoints.Logout:
		return h.own.ServeLogout(w, r)
	case ep == endpoints.Sessions:
		return h.own.ServeSessions(w, r)
	case ep == endpoints.JWKS:
		return h.own.ServeJWKS(w, r)
	case ep == endpoints.Metadata:
		return h.own.ServeMetadata(w, r)
	}

	h.own.StripCookies(r)

	// A browser sends a CORS preflight without credentials, so it can carry
	// no token; it goes on without one, and without identity
	// (internal/endpoints/cors.go).
	if endpoints.IsPreflight(r) {
		return next.ServeHTTP(w, r)
	}

	if rule != nil && rule.Public {
		h.gate.DropToken(r)
		return next.ServeHTTP(w, r)
	}

	p, denied := h.gate.Check(r, rule)
	metrics.Bearer(denied.Status, denied.Err)
	if denied.Err != nil {
		if denied.Challenge != "" {
			w.Header().Set("WWW-Authenticate", denied.Challenge)
		}
		if denied.Status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		w.Header().Set("Cache-Control", "no-store")
		h.gate.LogDenial(r, denied.Status, denied.Err)
		return caddyhttp.Error(denied.Status, denied.Err)
	}

	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.auth.user.id", p.UserID)
	repl.Set("http.auth.user.name", p.Username)
	repl.Set("http.auth.user.scopes", p.ScopeString)
	h.gate.SetIdentity(r.Header, p)
	h.gate.DropToken(r)
	return next.ServeHTTP(w, r)
}

// clientIP is the client's address as Caddy determined it (trusted_proxies
// included), for logs and the login throttle.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok {
		return ip
	}
	return r.RemoteAddr
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
