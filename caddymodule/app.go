package caddymodule

import (
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/config"
	"github.com/crudauth/caddy-crudauth/internal/metrics"
)

func init() {
	caddy.RegisterModule(new(App))
	httpcaddyfile.RegisterGlobalOption("crudauth", parseAppOption)
}

// App is the `crudauth` app: the realms of a config. A realm is a store, a
// password hasher with its hashing cap and policy, a login throttle and a
// signing key, shared by every crudauth handler that names it (`realm
// NAME`) and reached by name from the admin API (`?realm=NAME`).
// Handlers that name no realm have one of their own, which they register
// here while they live, so that the admin API finds it by its store.
type App struct {
	// Realms by name. Names are letters, digits, '-', '_' and '.'.
	Realms map[string]*RealmSettings `json:"realms,omitempty"`

	declared map[string]*realm
	logger   *zap.Logger

	mu  sync.Mutex
	own []*realm // handlers' own realms, in provisioning order
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "crudauth",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision builds every declared realm.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if err := metrics.Register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	a.declared = map[string]*realm{}
	for _, name := range slices.Sorted(maps.Keys(a.Realms)) {
		if err := config.CheckRealmName(name); err != nil {
			return err
		}
		s := a.Realms[name]
		if s == nil {
			s = new(RealmSettings)
		}
		r, err := s.provision(ctx)
		if err != nil {
			return fmt.Errorf("realm %s: %w", name, err)
		}
		r.name = name
		a.declared[name] = r
		a.logger.Info("realm ready", zap.String("realm", name), zap.String("store", storeName(r.storeKey)),
			zap.String("secret_source", r.secretSource))
	}
	return nil
}

// Start implements caddy.App; the realms are ready once provisioned.
func (a *App) Start() error { return nil }

// Stop implements caddy.App.
func (a *App) Stop() error { return nil }

// Cleanup releases the declared realms' stores and throttles.
func (a *App) Cleanup() error {
	var errs []error
	for _, r := range a.declared {
		if err := r.release(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("releasing realms: %v", errs)
	}
	return nil
}

// crudauthApp returns the config's crudauth app, which Caddy creates when
// the config declares none (a handler's own realm is registered there).
// A context without a config at all (a handler provisioned on its own, as
// benchmarks and unit tests do) makes caddy.Context.App dereference its
// missing config: such a handler gets an app of its own, with no realms.
func crudauthApp(ctx caddy.Context) (app *App, err error) {
	mod, err := ctx.AppIfConfigured("crudauth")
	if err == nil {
		return mod.(*App), nil
	}
	if !errors.Is(err, caddy.ErrNotConfigured) {
		return nil, err
	}
	defer func() {
		if v := recover(); v != nil {
			// Only the missing config's nil dereference is expected here;
			// anything else is a real failure and panics on.
			if re, ok := v.(runtime.Error); !ok || !strings.Contains(re.Error(), "nil pointer dereference") {
				panic(v)
			}
			app, err = new(App), nil
		}
	}()
	mod, err = ctx.App("crudauth")
	if err != nil {
		return nil, err
	}
	return mod.(*App), nil
}

// realm returns the declared realm of that name.
func (a *App) realm(name string) (*realm, bool) {
	r, ok := a.declared[name]
	return r, ok
}

// names lists the declared realms, sorted.
func (a *App) names() []string {
	return slices.Sorted(maps.Keys(a.declared))
}

// addOwn registers a handler's own realm; removeOwn forgets it.
func (a *App) addOwn(r *realm) {
	a.mu.Lock()
	a.own = append(a.own, r)
	a.mu.Unlock()
}

func (a *App) removeOwn(r *realm) {
	a.mu.Lock()
	a.own = slices.DeleteFunc(a.own, func(o *realm) bool { return o == r })
	a.mu.Unlock()
}

// byStore returns the realm whose store has pool key key: a declared one,
// or else the most recently provisioned handler's own.
func (a *App) byStore(key string) (*realm, bool) {
	for _, name := range a.names() {
		if r := a.declared[name]; r.storeKey == key {
			return r, true
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := len(a.own) - 1; i >= 0; i-- {
		if a.own[i].storeKey == key {
			return a.own[i], true
		}
	}
	return nil, false
}

// tokenLifetime is the longest a token of this config's handlers on the
// store with pool key key lives; zero when none of them signs with the
// store's key set.
func (a *App) tokenLifetime(key string) time.Duration {
	var life time.Duration
	for _, r := range a.declared {
		if r.storeKey == key {
			life = max(life, r.tokenLifetime())
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.own {
		if r.storeKey == key {
			life = max(life, r.tokenLifetime())
		}
	}
	return life
}

// parseAppOption parses the global option:
//
//	crudauth {
//		realm <name> {
//			<realm subdirective> <arguments...>
//		}
//	}
//
// A realm takes the subdirectives that a handler's own realm takes (db or
// store, secret, argon2, max_concurrent_hashes, hash_queue_timeout,
// throttle, password_min_length, password_max_length), documented in the
// Caddyfile reference of README.md.
func parseAppOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the crudauth global option is given twice: give it once")
	}
	app := &App{Realms: map[string]*RealmSettings{}}
	d.Next() // the option's name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if d.Val() != "realm" {
			return nil, d.Errf("unrecognized crudauth option %q (want: realm <name> { ... })", d.Val())
		}
		var name string
		if !d.NextArg() {
			return nil, d.ArgErr()
		}
		name = d.Val()
		if err := config.CheckRealmName(name); err != nil {
			return nil, d.Err(err.Error())
		}
		if _, ok := app.Realms[name]; ok {
			return nil, d.Errf("realm %s is declared twice", name)
		}
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		s := new(RealmSettings)
		err := s.subdirectives().parseBlock(d, "", func(sub string) error {
			return d.Errf("unrecognized realm subdirective %q", sub)
		})
		if err != nil {
			return nil, err
		}
		app.Realms[name] = s
	}
	return httpcaddyfile.App{Name: "crudauth", Value: caddyconfig.JSON(app, nil)}, nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
