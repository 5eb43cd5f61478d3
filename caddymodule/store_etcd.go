package caddymodule

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd"
)

func init() {
	caddy.RegisterModule(EtcdStore{})
}

const etcdKeyPrefix = "etcd:"

// EtcdStore is the `crudauth.stores.etcd` module: users, epochs, sessions
// and the generated signing key in an etcd cluster, shared by every
// gateway that names the same endpoints and prefix. A warm bearer check
// reads a local cache that a watch keeps current; see docs/etcd.md.
type EtcdStore struct {
	// Client endpoints of the cluster's members (host:port or URLs).
	// Required.
	Endpoints []string `json:"endpoints,omitempty"`

	// Key prefix; gateways that share users share it. Default: /crudauth/.
	Prefix string `json:"prefix,omitempty"`

	// Bound on connecting and on every request; a request without an
	// answer by then gets 503 with Retry-After. Default: 2s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// TLS to the members: a CA to trust, and a client certificate and key.
	TLS *EtcdTLS `json:"tls,omitempty"`

	// Credentials of etcd's own authentication. The password takes
	// placeholders ({env.ETCD_PASSWORD}, {file.PATH}), resolved at start.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`

	// How long bearer checks go on from the local cache while it cannot be
	// confirmed current; past it they get 503 (fail closed). Default: 10s.
	MaxStaleness caddy.Duration `json:"max_staleness,omitempty"`
}

// EtcdTLS is the TLS of EtcdStore: files in PEM.
type EtcdTLS struct {
	CA   string `json:"ca,omitempty"`
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (EtcdStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "crudauth.stores.etcd",
		New: func() caddy.Module { return new(EtcdStore) },
	}
}

// Provision checks the configuration.
func (e *EtcdStore) Provision(caddy.Context) error { return e.check() }

// config is the store's configuration as internal/store/etcd takes it.
func (e *EtcdStore) config() etcd.Config {
	c := etcd.Config{
		Endpoints:    e.Endpoints,
		Prefix:       e.Prefix,
		DialTimeout:  time.Duration(e.DialTimeout),
		MaxStaleness: time.Duration(e.MaxStaleness),
		Username:     e.Username,
		Password:     e.Password,
	}
	if e.TLS != nil {
		c.TLS = &etcd.TLSFiles{CA: e.TLS.CA, Cert: e.TLS.Cert, Key: e.TLS.Key}
	}
	return c
}

func (e *EtcdStore) check() error {
	c := e.config()
	return c.Check()
}

func (e *EtcdStore) prefix() string {
	if e.Prefix == "" {
		return etcd.DefaultPrefix
	}
	return e.Prefix
}

// storeKey names the backing state: the cluster (its endpoints, in any
// order) and the prefix.
func (e *EtcdStore) storeKey() string {
	eps := slices.Clone(e.Endpoints)
	slices.Sort(eps)
	return etcdKeyPrefix + strings.Join(eps, ",") + e.prefix()
}

func (e *EtcdStore) openStore() (store.Store, error) {
	c := e.config()
	if err := c.Check(); err != nil {
		return nil, err
	}
	if c.Password != "" {
		pw, err := caddy.NewReplacer().ReplaceOrErr(c.Password, true, true)
		if err != nil {
			return nil, fmt.Errorf("store etcd: password: %w", err)
		}
		c.Password = strings.TrimRight(pw, "\r\n")
	}
	o, err := c.Options()
	if err != nil {
		return nil, err
	}
	o.Logger = caddy.Log().Named("crudauth.stores.etcd")
	// No bound on the whole Open: each request is bounded (an unreachable
	// cluster fails the start within about dial_timeout), but the first
	// load of a large prefix takes as long as it takes (minutes for a
	// million users on etcd 3.4), and a bound here would keep such a
	// gateway from ever starting.
	return etcd.Open(context.Background(), o)
}

// UnmarshalCaddyfile sets up the store from Caddyfile tokens:
//
//	store etcd {
//		endpoints     <host:port...>
//		prefix        <prefix>
//		dial_timeout  <duration>
//		tls {
//			ca   <file>
//			cert <file>
//			key  <file>
//		}
//		username      <name>
//		password      <password>
//		max_staleness <duration>
//	}
func (e *EtcdStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const what = "store etcd"
	err := storeBlock(d, what, subdirectives{
		"endpoints":     listArgs(&e.Endpoints),
		"prefix":        stringArg(&e.Prefix),
		"dial_timeout":  storeDurationArg(what, &e.DialTimeout),
		"tls":           e.parseTLS,
		"username":      stringArg(&e.Username),
		"password":      stringArg(&e.Password),
		"max_staleness": storeDurationArg(what, &e.MaxStaleness),
	})
	if err != nil {
		return err
	}
	if err := e.check(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// parseTLS parses the `tls { ca|cert|key <file> }` block.
func (e *EtcdStore) parseTLS(d *caddyfile.Dispenser, _ string) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	e.TLS = new(EtcdTLS)
	return subdirectives{
		"ca":   stringArg(&e.TLS.CA),
		"cert": stringArg(&e.TLS.Cert),
		"key":  stringArg(&e.TLS.Key),
	}.parseBlock(d, "store etcd tls ", unrecognizedOneArg(d, "store etcd tls: unrecognized subdirective %q"))
}

// Interface guards
var (
	_ storeOpener           = (*EtcdStore)(nil)
	_ caddy.Provisioner     = (*EtcdStore)(nil)
	_ caddyfile.Unmarshaler = (*EtcdStore)(nil)
)
