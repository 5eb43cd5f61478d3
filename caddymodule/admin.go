package caddymodule

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/admin"
	"github.com/crudauth/caddy-crudauth/internal/metrics"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI is the `admin.api.crudauth` module: internal/admin's user
// administration API (see there for its endpoints) on Caddy's admin
// endpoint, under /crudauth/. Every request may name a realm declared in
// the global crudauth options with ?realm=<name>; with more than one store
// open and no realm named, it names the store with ?db=<absolute path> (a
// bbolt file) or ?db=memory:<name>.
type adminAPI struct {
	api *admin.Handler
}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  admin.ModuleID,
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Provision sets up the logger and the admin metrics.
func (a *adminAPI) Provision(ctx caddy.Context) error {
	a.api = newAdminHandler(caddy.Log().Named("admin.api.crudauth"))
	return metrics.Register(ctx.GetMetricsRegistry())
}

// newAdminHandler returns the admin API on the stores of this process.
// Admin routers are not loaded as submodules of the config, so the caller
// names the logger.
func newAdminHandler(logger *zap.Logger) *admin.Handler {
	return &admin.Handler{Resolver: poolResolver{}, Logger: logger, Observe: metrics.Admin}
}

// Routes implements caddy.AdminRouter.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/crudauth/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// serve hands a request to the API, and its refusals to Caddy's admin
// server, which answers and logs them.
func (a *adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	err := a.api.Serve(w, r)
	if e, ok := err.(*admin.Error); ok {
		return caddy.APIError{HTTPStatus: e.Status, Err: e, Message: e.Msg}
	}
	return err
}

// poolResolver finds stores in this process's pool, and realms in the
// running config's crudauth app.
type poolResolver struct{}

func (poolResolver) Stores() []string { return openDBPaths() }

func (poolResolver) Resolve(q url.Values) (admin.Target, error) {
	key, st, release, settings, err := resolveTarget(q)
	if err != nil {
		return admin.Target{}, err
	}
	return admin.Target{Name: storeName(key), Store: st, Settings: settings, Release: release}, nil
}

// openDBPaths lists the stores open in this process by name: a bbolt file
// by its absolute path, another store by its key (memory:<name>).
func openDBPaths() []string {
	paths := []string{}
	openStores(func(key string, _ store.Store) bool {
		paths = append(paths, storeName(key))
		return true
	})
	slices.Sort(paths)
	return paths
}

// resolveTarget finds the store a request is about, and how new passwords
// are hashed and checked there: `?realm=NAME` names a realm declared in the
// running config; otherwise `?db=` names a store (see resolveDB), with the
// settings of the realm that holds it.
func resolveTarget(q url.Values) (string, store.Store, func(), users.Settings, error) {
	name := q.Get("realm")
	if name == "" {
		key, st, release, err := resolveDB(q.Get("db"))
		if err != nil {
			return "", nil, nil, users.Settings{}, err
		}
		settings, err := settingsFor(key)
		if err != nil {
			release()
			return "", nil, nil, users.Settings{}, err
		}
		return key, st, release, settings, nil
	}
	if q.Get("db") != "" {
		return "", nil, nil, users.Settings{}, admin.Errorf(http.StatusBadRequest, "give realm or db, not both")
	}
	mod, err := caddy.ActiveContext().AppIfConfigured("crudauth")
	if err != nil {
		return "", nil, nil, users.Settings{}, admin.Errorf(http.StatusNotFound, "no realm is declared in the running config")
	}
	app := mod.(*App)
	r, ok := app.realm(name)
	if !ok {
		return "", nil, nil, users.Settings{}, admin.Errorf(http.StatusNotFound, "realm %q is not declared in the running config; declared: %s",
			name, strings.Join(app.names(), ", "))
	}
	key, st, release, err := resolveDB(storeName(r.storeKey))
	if err != nil {
		return "", nil, nil, users.Settings{}, err
	}
	return key, st, release, r.adminSettings(app), nil
}

// resolveDB finds the store a request is about (db: its name, as
// openDBPaths gives it; empty for the only one) and takes a reference to
// it for the request's duration, so a config reload that closes it waits
// until the request is done (a backup in particular). It returns the
// store's pool key.
func resolveDB(db string) (string, store.Store, func(), error) {
	paths := openDBPaths()
	if db == "" {
		switch len(paths) {
		case 0:
			return "", nil, nil, admin.Errorf(http.StatusNotFound, "no crudauth database is open in this caddy; is a crudauth handler configured?")
		case 1:
			db = paths[0]
		default:
			return "", nil, nil, admin.Errorf(http.StatusBadRequest, "several crudauth databases are open; pass ?db= with one of: %s", strings.Join(paths, ", "))
		}
	}
	key, ok := storeKeyOf(db)
	if !ok {
		return "", nil, nil, admin.Errorf(http.StatusBadRequest, "db %q must be an absolute path or a memory: name; open ones: %s", db, strings.Join(paths, ", "))
	}
	if !slices.Contains(paths, storeName(key)) {
		return "", nil, nil, admin.Errorf(http.StatusNotFound, "database %s is not open in this caddy; open ones: %s", storeName(key), strings.Join(paths, ", "))
	}
	val, _, err := storePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return nil, errors.New("closed meanwhile")
	})
	if err != nil {
		return "", nil, nil, admin.Errorf(http.StatusNotFound, "database %s was closed meanwhile; retry", storeName(key))
	}
	return key, val.(sharedStore).Store, func() { _ = releaseStore(key) }, nil
}

// Interface guards
var (
	_ caddy.Provisioner = (*adminAPI)(nil)
	_ caddy.AdminRouter = (*adminAPI)(nil)
	_ admin.Resolver    = poolResolver{}
)
