package cli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// The environment variables that carry the etcd credentials: a URL or a
// flag would put the password in shell history and process listings.
const (
	EnvEtcdUsername = "CRUDAUTH_ETCD_USERNAME"
	EnvEtcdPassword = "CRUDAUTH_ETCD_PASSWORD"
)

// withStoreURL runs fn on the etcd store that --store names, opened
// directly. A running Caddy does not stand in the way as it does for a
// file: etcd is shared, and every gateway on the prefix sees the change
// through its watch. So --store excludes the flags that pick a file or a
// running caddy.
func (env *Env) withStoreURL(ctx context.Context, fn func(ctx context.Context, ops Ops) error) error {
	switch {
	case env.DB != "":
		return errors.New("give --store or --db, not both")
	case env.Address != "":
		return errors.New("--store works on etcd directly and --address through a running caddy: give one of them")
	case env.Realm != "":
		return errors.New("--store works on etcd directly and --realm through a running caddy: give one of them")
	}
	if !etcd.IsURL(env.Store) {
		// The value is not repeated: it may be a URL with a password in it.
		return errors.New("--store takes an etcd store URL, etcd://HOST:PORT[,HOST:PORT]/PREFIX/ or etcds://...; a database file is given with --db")
	}
	st, o, err := env.openEtcd(ctx, env.Store)
	if err != nil {
		return fmt.Errorf("--store: %w", err)
	}
	defer st.Close()
	env.verbosef("using the etcd store %s directly (running gateways on it see the change through their watch)", o.URL())
	settings, err := env.Settings() // outside any gateway: the defaults, as on a file
	if err != nil {
		return err
	}
	return hint(fn(ctx, &Local{st: st, svc: users.New(st, settings)}))
}

// etcdOptions parses a store URL and adds the credentials from the
// environment.
func (env *Env) etcdOptions(raw string) (etcd.Options, error) {
	o, err := etcd.ParseURL(raw)
	if err != nil {
		return o, err
	}
	getenv := env.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	o.Username, o.Password = getenv(EnvEtcdUsername), getenv(EnvEtcdPassword)
	if o.Password != "" && o.Username == "" {
		return etcd.Options{}, fmt.Errorf("%s is set but %s is not", EnvEtcdPassword, EnvEtcdUsername)
	}
	return o, nil
}

// openEtcd opens the etcd store at the URL raw.
func (env *Env) openEtcd(ctx context.Context, raw string) (*etcd.Store, etcd.Options, error) {
	o, err := env.etcdOptions(raw)
	if err != nil {
		return nil, o, err
	}
	st, err := env.openEtcdWith(ctx, o)
	return st, o, err
}

// openEtcdWith opens the etcd store o describes. It takes the parsed
// Options rather than their URL, which leaves out what is not an address
// (the dial timeout, the credentials).
func (env *Env) openEtcdWith(ctx context.Context, o etcd.Options) (*etcd.Store, error) {
	if o.Username != "" {
		env.verbosef("authenticating to etcd as %s (from %s)", o.Username, EnvEtcdUsername)
	}
	st, err := etcd.Open(ctx, o)
	if errors.Is(err, store.ErrUnavailable) {
		return nil, fmt.Errorf("etcd at %s did not answer: is the cluster up and reachable from here? (%w)", o.URL(), err)
	}
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", o.URL(), err)
	}
	return st, nil
}
