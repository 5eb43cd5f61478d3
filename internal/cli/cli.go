// Package cli is the `caddy crudauth` command tree (user, session, key,
// backup, restore, migrate, explain) and what its commands do: on a
// database file the command opens itself (Local), or through a running
// Caddy's admin API (Remote), after it made sure that what answers there is
// crudauth's (GET /crudauth/identity). The flags are parsed into an Env; the
// host program fills in what only it knows (default paths and addresses,
// password settings, how to load a config and judge a request) and mounts
// the tree under its own command. Each operation writes what it reports to
// Env.Stdout. The package does not import Caddy.
package cli

import (
	"io"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/users"
)

// Env is a command's options and streams, and what the host program
// provides.
type Env struct {
	DB string // --db: the database file
	// Store is --store: an etcd store URL (etcd://, etcds://) the
	// commands open directly, as they open a file given with --db.
	Store         string
	Realm         string // --realm: a realm of the running caddy, through its admin API
	Address       string // --address: go through this admin API
	Verbose       bool   // say which path was taken, and which admin endpoint
	PasswordStdin bool   // read the password from Stdin rather than a terminal prompt
	JSON          bool   // print JSON
	// MayCreate: the command may create a missing database file (add,
	// import, restore); the others refuse to work on a file that does not
	// exist.
	MayCreate bool
	// LockWait is how long to wait for the file lock (default 500ms).
	LockWait time.Duration

	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer // nil: discard

	// DefaultDB is the database file when DB is empty.
	DefaultDB string
	// DefaultAdmin is the host's default admin address, as the help of
	// --address names it.
	DefaultAdmin string
	// AdminAddress returns the admin address used when Address is empty
	// and the file is locked or absent.
	AdminAddress func() string
	// ParseAddress turns an admin address (host:port, unix//path) into
	// what to dial.
	ParseAddress func(addr string) (Endpoint, error)
	// Settings returns how new passwords are hashed and checked on a file
	// outside any running gateway.
	Settings func() (users.Settings, error)
	// Getenv reads the etcd credentials (CRUDAUTH_ETCD_USERNAME,
	// CRUDAUTH_ETCD_PASSWORD); nil: os.Getenv.
	Getenv func(string) string
	// ExplainHost is what `explain` needs of the host: its config loading
	// and its handlers.
	ExplainHost ExplainHost
}

// Endpoint is where an admin API listens.
type Endpoint struct {
	Network string // as net.Dial takes it: tcp, unix
	Dial    string // the address to dial
	Origin  string // scheme and host of the request URLs
	Unix    bool   // a unix socket: no Origin header is sent
}

// Mutation is a one-step change of a user, without arguments.
type Mutation struct {
	Name  string // the action, as Ops.Change and the admin API name it
	Short string // what the command does, for its help
	Done  string // what it reports, after the username
}

// Mutations are the one-step changes, a subcommand each.
var Mutations = []Mutation{
	{"revoke", "Revokes every token of the user; the password stays", "tokens revoked"},
	{"disable", "Disables the user: no login, and existing tokens are refused", "disabled"},
	{"enable", "Enables a disabled user", "enabled"},
}
