package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Config is the store as an operator configures it (the
// crudauth.stores.etcd module): TLS as PEM files, the password as given.
// Check judges it before anything is read; Options turns it into the
// Options that Open takes. Messages start with "store etcd", as the
// Caddyfile block and the JSON backend are named.
type Config struct {
	Endpoints                 []string
	Prefix                    string // "": DefaultPrefix
	DialTimeout, MaxStaleness time.Duration
	TLS                       *TLSFiles // nil: plain text
	Username, Password        string
}

// TLSFiles are the TLS to the members, as PEM files: a CA to trust
// (default: the system roots), and a client certificate and its key.
type TLSFiles struct {
	CA, Cert, Key string
}

// Check rejects a configuration that cannot work, without reading the
// files it names.
func (c *Config) Check() error {
	if len(c.Endpoints) == 0 {
		return errors.New("store etcd: endpoints are required")
	}
	if c.Prefix != "" && (!strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/")) {
		return fmt.Errorf("store etcd: prefix %q must start and end with /", c.Prefix)
	}
	if c.DialTimeout < 0 || c.MaxStaleness < 0 {
		return errors.New("store etcd: dial_timeout and max_staleness must be positive")
	}
	if c.TLS != nil && (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("store etcd: tls: cert and key go together")
	}
	if c.Password != "" && c.Username == "" {
		return errors.New("store etcd: a password needs a username")
	}
	return nil
}

// Options checks c and returns the Options it stands for, with the TLS
// files read. The caller resolves placeholders in the password first and
// sets the logger.
func (c *Config) Options() (Options, error) {
	if err := c.Check(); err != nil {
		return Options{}, err
	}
	o := Options{
		Endpoints:    c.Endpoints,
		Prefix:       c.Prefix,
		DialTimeout:  c.DialTimeout,
		MaxStaleness: c.MaxStaleness,
		Username:     c.Username,
		Password:     c.Password,
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if c.TLS != nil {
		cfg, err := c.TLS.Config()
		if err != nil {
			return Options{}, fmt.Errorf("store etcd: tls: %w", err)
		}
		o.TLS = cfg
	}
	return o, nil
}

// Config reads the files into a TLS configuration of at least TLS 1.2.
func (t *TLSFiles) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca %s: no certificate in it", t.CA)
		}
		cfg.RootCAs = pool
	}
	if t.Cert != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
