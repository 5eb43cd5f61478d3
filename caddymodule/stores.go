package caddymodule

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
)

func init() {
	caddy.RegisterModule(BoltStore{})
	caddy.RegisterModule(MemoryStore{})
}

// storeOpener is what a crudauth.stores.* guest module gives the module
// that hosts it (the handler today): the key under which its open store is
// shared (see acquireStore), and how to open it. Handles with the same key
// are the same backing state, so the pool opens it once per process.
type storeOpener interface {
	storeKey() string
	openStore() (store.Store, error)
}

// BoltStore is the `crudauth.stores.bolt` module: users, token epochs and
// the generated signing key in one bbolt file. `db PATH` on the handler is
// short for it.
type BoltStore struct {
	// Path of the database file. Default: crudauth/crudauth.db in Caddy's
	// data directory. Sites and configs that name the same file share one
	// open handle: bbolt locks the file for one.
	Path string `json:"path,omitempty"`

	// How long opening waits for the file lock another process holds
	// before it fails with a message that names the file. Default: 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	abs string // Path made absolute, in Provision
}

// CaddyModule returns the Caddy module information.
func (BoltStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "crudauth.stores.bolt",
		New: func() caddy.Module { return new(BoltStore) },
	}
}

// Provision resolves the path.
func (b *BoltStore) Provision(caddy.Context) error { return b.resolve() }

// resolve makes Path absolute, so that the key of one file is the same
// however it was written.
func (b *BoltStore) resolve() error {
	if b.Timeout < 0 {
		return fmt.Errorf("store bolt: timeout must not be negative")
	}
	p := b.Path
	if p == "" {
		p = DefaultDBPath()
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return fmt.Errorf("store bolt: path: %w", err)
	}
	b.abs = abs
	return nil
}

func (b *BoltStore) storeKey() string { return boltKeyPrefix + b.abs }

func (b *BoltStore) openStore() (store.Store, error) {
	return bolt.Open(b.abs, bolt.Options{Timeout: time.Duration(b.Timeout)})
}

// UnmarshalCaddyfile sets up the store from Caddyfile tokens:
//
//	store bolt {
//		path    <file>
//		timeout <duration>
//	}
func (b *BoltStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return storeBlock(d, "store bolt", subdirectives{
		"path":    stringArg(&b.Path),
		"timeout": storeDurationArg("store bolt", &b.Timeout),
	})
}

// MemoryStore is the `crudauth.stores.memory` module: users kept in
// memory, gone when the process ends. For tests and throwaway demos.
type MemoryStore struct {
	// Name of the state. Every handler of the process that names the same
	// one shares its users, across reloads too. Default: "default".
	Name string `json:"name,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (MemoryStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "crudauth.stores.memory",
		New: func() caddy.Module { return new(MemoryStore) },
	}
}

func (m *MemoryStore) name() string {
	if m.Name == "" {
		return "default"
	}
	return m.Name
}

func (m *MemoryStore) storeKey() string { return memoryKeyPrefix + m.name() }

func (m *MemoryStore) openStore() (store.Store, error) {
	return memory.Open(m.name(), memory.Options{}), nil
}

// UnmarshalCaddyfile sets up the store from Caddyfile tokens:
//
//	store memory [{
//		name <name>
//	}]
func (m *MemoryStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return storeBlock(d, "store memory", subdirectives{"name": stringArg(&m.Name)})
}

// storeBlock reads a store module's Caddyfile block: the backend's name
// with no argument after it, then each subdirective of subs once.
func storeBlock(d *caddyfile.Dispenser, what string, subs subdirectives) error {
	d.Next() // the backend's name
	if d.NextArg() {
		return d.ArgErr()
	}
	return subs.parseBlock(d, what+" ", func(sub string) error {
		return d.Errf("%s: unrecognized subdirective %q", what, sub)
	})
}

// Interface guards
var (
	_ storeOpener           = (*BoltStore)(nil)
	_ caddy.Provisioner     = (*BoltStore)(nil)
	_ caddyfile.Unmarshaler = (*BoltStore)(nil)
	_ storeOpener           = (*MemoryStore)(nil)
	_ caddyfile.Unmarshaler = (*MemoryStore)(nil)
)
