package cli

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/crudauth/caddy-crudauth/internal/backup"
)

// The host program's `crudauth` command: its usage line and help.
const (
	Usage = "user <add|passwd|revoke|disable|enable|del|scopes|show|list|import> ... | session <list|revoke> ... | key <list|rotate|retire> ... | backup <file> | restore <file> | migrate --from <store> --to <store> | explain --config <file> <METHOD> <target>"
	Short = "Manages the users of the crudauth gateway and explains its rules"
	Long  = `
Manages the users in a crudauth database, their sessions and the signing
keys, takes backups of it and restores them; explain shows how a config's
rules judge one request.

When no process holds the database file, the commands open it directly.
When a running Caddy holds it (or --address is given), they go through that
Caddy's admin API (admin.api.crudauth) instead, so users can be managed
while the gateway serves. The command line is the same either way; --verbose
says which path was taken, and which admin endpoint. The admin address
defaults to Caddy's own (localhost:2019, or the CADDY_ADMIN environment
variable). Before it sends anything there, a password above all, the command
asks the endpoint to identify itself as crudauth's admin API
(GET /crudauth/identity), and stops with an error naming the address if it
does not: while caddy is down, any program may listen on that address.

With --store etcd://HOST:PORT/PREFIX/ the commands work on an etcd store
directly: etcd is shared, so a running Caddy does not hold it, and every
gateway on the prefix sees the change through its watch.

Passwords are read from a prompt that does not echo, or from standard input
with --password-stdin; never from a flag.`
)

// Mount puts the command tree under root, the host's `crudauth` command.
// env must hold what the host provides (DefaultDB, DefaultAdmin,
// AdminAddress, ParseAddress, Settings, ExplainHost) before: the flags' help
// names the defaults.
func Mount(root *cobra.Command, env *Env) {
	root.AddCommand(Commands(env)...)
	requireSubcommand(root)
	root.SilenceUsage = true
}

// Commands are the subcommands of `caddy crudauth`, their flags bound to
// env: user, session, key, backup, restore, migrate and explain.
func Commands(env *Env) []*cobra.Command {
	return []*cobra.Command{userCommand(env), sessionCommand(env), keyCommand(env), backupCommand(env), restoreCommand(env), migrateCommand(env), explainCommand(env)}
}

// requireSubcommand makes a command that only groups others fail (exit
// status non-zero) when called without one or with an unknown one.
func requireSubcommand(c *cobra.Command) {
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unknown command %q; see '%s --help'", args[0], cmd.CommandPath())
		}
		return fmt.Errorf("a subcommand is needed; see '%s --help'", cmd.CommandPath())
	}
}

// addTargetFlags adds the flags that say which database to work on.
func addTargetFlags(env *Env, c *cobra.Command) {
	c.PersistentFlags().StringVar(&env.DB, "db", "", "database file (default: "+env.DefaultDB+")")
	c.PersistentFlags().StringVar(&env.Store, "store", "", "an etcd store, etcd://HOST:PORT[,HOST:PORT]/PREFIX/ (etcds:// for TLS), worked on directly; credentials from "+EnvEtcdUsername+" and "+EnvEtcdPassword)
	admin := cmp.Or(env.DefaultAdmin, "the default admin address")
	c.PersistentFlags().StringVar(&env.Address, "address", "", "admin API address of the running caddy to go through (default: used only when the file is locked, at "+admin+")")
	c.PersistentFlags().StringVar(&env.Realm, "realm", "", "a realm declared in the running caddy's global crudauth options, reached through its admin API")
	c.PersistentFlags().BoolVarP(&env.Verbose, "verbose", "v", false, "say whether the file or the admin API is used, and which admin endpoint")
}

func userCommand(env *Env) *cobra.Command {
	user := &cobra.Command{
		Use:   "user",
		Short: "Adds, changes and lists users",
	}
	addTargetFlags(env, user)
	requireSubcommand(user)
	user.SilenceUsage = true

	var scopes string
	add := &cobra.Command{
		Use:   "add <username>",
		Short: "Adds a user; the password is prompted for, or read with --password-stdin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env.MayCreate = true
			return env.WithOps(func(ctx context.Context, ops Ops) error {
				return env.AddUser(ctx, ops, args[0], scopes, cmd.Flags().Changed("scopes"))
			})
		},
	}
	add.Flags().StringVar(&scopes, "scopes", "", `space-separated scopes the user may hold, e.g. "me:read reports:read" (default: no per-user limit)`)
	add.Flags().BoolVar(&env.PasswordStdin, "password-stdin", false, "read the password from standard input")

	passwd := &cobra.Command{
		Use:   "passwd <username>",
		Short: "Sets a new password and revokes every token issued before",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.WithOps(func(ctx context.Context, ops Ops) error {
				return env.ChangePassword(ctx, ops, args[0])
			})
		},
	}
	passwd.Flags().BoolVar(&env.PasswordStdin, "password-stdin", false, "read the password from standard input")

	user.AddCommand(add, passwd)
	for _, m := range Mutations {
		user.AddCommand(mutationCommand(env, m))
	}
	user.AddCommand(
		usernameCommand(env, "del", "Deletes a user; their tokens are refused from now on", env.Delete),
		scopesCommand(env),
		withJSONFlag(env, usernameCommand(env, "show", "Shows one user", env.Show)),
		listCommand(env),
		importCommand(env),
	)
	for _, c := range user.Commands() {
		c.SilenceUsage = true
	}
	return user
}

// sessionCommand: caddy crudauth session list <username> | revoke <username> <sid>
func sessionCommand(env *Env) *cobra.Command {
	session := &cobra.Command{
		Use:   "session",
		Short: "Lists and ends the sessions (logins) of a user",
		Long: `A session is one login of a user on one device: its refresh token and the
access tokens issued from it. 'session list' shows the user's live sessions;
'session revoke' ends one of them, which refuses its refresh token and its
access tokens from the next request on while the user's other sessions go on.
'caddy crudauth user revoke' ends all of them.`,
	}
	addTargetFlags(env, session)
	requireSubcommand(session)
	session.SilenceUsage = true

	list := withJSONFlag(env, &cobra.Command{
		Use:   "list <username>",
		Short: "Lists a user's live sessions: sid, created, last used, expiry (UTC), address, user agent",
		Long: `Lists a user's live sessions, oldest first: the session ID (sid), when it
began, when it was last refreshed and when it expires (RFC 3339, UTC), and
the client's address and user agent at login. The user agent is the client's
own text: characters a terminal could act on are printed escaped (an ESC as \x1b).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.WithOps(func(ctx context.Context, ops Ops) error {
				return env.ListSessions(ctx, ops, args[0])
			})
		},
	})
	revoke := &cobra.Command{
		Use:   "revoke <username> <sid>",
		Short: "Ends one session of a user; its tokens are refused from the next request",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.WithOps(func(ctx context.Context, ops Ops) error {
				return env.RevokeSession(ctx, ops, args[0], args[1])
			})
		},
	}
	session.AddCommand(list, revoke)
	for _, c := range session.Commands() {
		c.SilenceUsage = true
	}
	return session
}

// keyCommand: caddy crudauth key list | rotate | retire <kid>
func keyCommand(env *Env) *cobra.Command {
	key := &cobra.Command{
		Use:   "key",
		Short: "Lists, rotates and retires the signing keys (signing_alg EdDSA or ES256)",
		Long: `With signing_alg EdDSA or ES256 the gateway signs tokens with a key pair
kept in the store, and publishes the public keys (the JWKS) so that
upstreams can verify tokens themselves. A key is:

  pending    published, signs from its SIGNS_FROM on
  signing    the key new tokens are signed with
  verifying  superseded by a newer key; verifies its tokens until the last
             one has expired (VERIFY_UNTIL), then leaves the JWKS
  expired    nothing it signed is still valid; pruned from the store
  retired    ended by 'key retire': every token it signed is refused

'key rotate' publishes a new key at once and lets it sign only after a
delay, so that upstreams caching the JWKS hold it first: no token is
refused by a rotation. 'key retire' ends a key at once (a compromised one):
its tokens are refused from the next request on.

Through a running caddy's admin API the commands use the realm's
signing_alg, key_publish_delay and token lifetime (its handlers' longest
refresh_ttl). On a store they opened themselves they know none of these:
list judges VERIFY_UNTIL with --token-lifetime (default 720h, the default
refresh_ttl), rotate needs --alg when the store holds keys of both
algorithms and waits --delay (default 1h), and no spent key is pruned.

HS256 signs with one secret: it has no key set, nothing to rotate.`,
	}
	addTargetFlags(env, key)
	requireSubcommand(key)
	key.SilenceUsage = true

	var listAlg string
	var lifetime time.Duration
	list := withJSONFlag(env, &cobra.Command{
		Use:   "list",
		Short: "Lists the signing keys: kid, algorithm, state, created, signs from, signed until, verify until, retired (UTC)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.WithOps(func(ctx context.Context, ops Ops) error {
				return env.ListKeys(ctx, ops, listAlg, lifetime)
			})
		},
	})
	list.Flags().StringVar(&listAlg, "alg", "", "list the keys of EdDSA or ES256 only (default: the realm's signing_alg; on a store opened directly, every algorithm present)")
	list.Flags().DurationVar(&lifetime, "token-lifetime", 0, "the longest a token lives, to judge VERIFY_UNTIL by (default: the realm's longest refresh_ttl; on a store opened directly, 720h)")

	var rotateAlg string
	var delay time.Duration
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Publishes a new signing key now; it signs after --delay, the old key keeps verifying its tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.WithOps(func(ctx context.Context, ops Ops) error {
				return env.RotateKey(ctx, ops, rotateAlg, delay, cmd.Flags().Changed("delay"))
			})
		},
	}
	rotate.Flags().StringVar(&rotateAlg, "alg", "", "EdDSA or ES256 (default: the realm's signing_alg; on a store opened directly, the one algorithm of its keys)")
	rotate.Flags().DurationVar(&delay, "delay", 0, "how long the new key is published before it signs (default: the realm's key_publish_delay; on a store opened directly, 1h)")

	retire := &cobra.Command{
		Use:   "retire <kid>",
		Short: "Ends a key at once: every token it signed is refused from the next request; a replacement signs if no other key does",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.WithOps(func(ctx context.Context, ops Ops) error {
				return env.RetireKey(ctx, ops, args[0])
			})
		},
	}
	key.AddCommand(list, rotate, retire)
	for _, c := range key.Commands() {
		c.SilenceUsage = true
	}
	return key
}

// mutationCommand builds a subcommand that applies a one-step change:
// revoke, disable or enable.
func mutationCommand(env *Env, m Mutation) *cobra.Command {
	return usernameCommand(env, m.Name, m.Short, func(ctx context.Context, ops Ops, username string) error {
		return env.Change(ctx, ops, m, username)
	})
}

// usernameCommand builds a subcommand that takes a username and runs op.
func usernameCommand(env *Env, name, short string, op func(ctx context.Context, ops Ops, username string) error) *cobra.Command {
	c := &cobra.Command{
		Use:   name + " <username>",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.WithOps(func(ctx context.Context, ops Ops) error {
				return op(ctx, ops, args[0])
			})
		},
	}
	return c
}

// withJSONFlag gives c the --json flag.
func withJSONFlag(env *Env, c *cobra.Command) *cobra.Command {
	c.Flags().BoolVar(&env.JSON, "json", false, "print JSON")
	return c
}

func listCommand(env *Env) *cobra.Command {
	return withJSONFlag(env, &cobra.Command{
		Use:   "list",
		Short: "Lists users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.WithOps(env.List)
		},
	})
}

// scopesCommand: caddy crudauth user scopes <username> <scope>... | --none | --unrestricted
func scopesCommand(env *Env) *cobra.Command {
	var none, unrestricted bool
	c := &cobra.Command{
		Use:   "scopes <username> [<scope>...]",
		Short: "Sets the scopes a user may hold; tokens holding a removed scope are refused from the next request",
		Long: `Sets the user's allowed scopes to the ones listed (replacing the old list),
or to no scope at all with --none, or removes the per-user limit with
--unrestricted (the user may then hold any of the gateway's grantable_scopes).
A token that carries a scope the user may no longer hold is refused from the
next request on.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			allowed, err := ScopesFromArgs(args, none, unrestricted)
			if err != nil {
				return err
			}
			return env.WithOps(func(ctx context.Context, ops Ops) error {
				return env.SetScopes(ctx, ops, args[0], allowed)
			})
		},
	}
	c.Flags().BoolVar(&none, "none", false, "the user may hold no scope")
	c.Flags().BoolVar(&unrestricted, "unrestricted", false, "remove the per-user limit")
	return c
}

// importCommand: caddy crudauth user import <file> [--format csv|json|htpasswd]
func importCommand(env *Env) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "import <file>",
		Short: "Adds users with existing password hashes (argon2id, bcrypt) from a CSV, JSON or htpasswd file; all or nothing",
		Long: `Adds users from a file of existing password hashes, for teams moving from
htpasswd or another system. Formats (by extension, or --format):

  csv       username,password_hash[,allowed_scopes[,disabled]]
            allowed_scopes space-separated, empty for no per-user limit,
            "-" for none; an optional header line starts with "username,"
  json      [{"username": ..., "password_hash": ..., "allowed_scopes": [...], "disabled": false}]
  htpasswd  username:hash (htpasswd -B, caddy hash-password)

Hashes must be argon2id or bcrypt; bcrypt ones are re-hashed with argon2id at
the user's next login. A bad line is reported with its number and nothing is
imported; an existing username fails the import the same way.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.Import(args[0], format)
		},
	}
	c.Flags().StringVar(&format, "format", "", "csv, json or htpasswd (default: from the extension; htpasswd otherwise)")
	return c
}

// backupCommand: caddy crudauth backup <file> [--format export|bolt]
func backupCommand(env *Env) *cobra.Command {
	var force bool
	var format string
	c := &cobra.Command{
		Use:   "backup <file>",
		Short: "Writes a consistent copy of the database to a file, also while caddy serves",
		Long: `Writes a consistent snapshot of the database to <file> (mode 0600). While a
running caddy holds the database, the snapshot comes through its admin API
and the gateway keeps serving.

The default format is crudauth's export: JSON lines with every user (password
hashes included) and the stored signing key, readable by any store backend.
Restore it with 'caddy crudauth restore'. --format bolt writes the bbolt
file itself instead (bolt stores only); restore that by stopping caddy and
putting the file in place of the database (or pointing db at it).

Either file holds the signing key and every password hash: keep it as
secret as the database. The copy is read back before the command reports
success.`,
		Args:         cobra.ExactArgs(1),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.Backup(args[0], format, force)
		},
	}
	addTargetFlags(env, c)
	c.Flags().BoolVar(&force, "force", false, "overwrite <file> if it exists")
	c.Flags().StringVar(&format, "format", backup.Export, "export (portable JSON lines) or bolt (the bbolt file)")
	return c
}

// restoreCommand: caddy crudauth restore <file>
func restoreCommand(env *Env) *cobra.Command {
	c := &cobra.Command{
		Use:   "restore <file>",
		Short: "Imports a backup taken in the export format: all its users or none",
		Long: `Imports <file>, written by 'caddy crudauth backup' in the default (export)
format, into the database: users keep their IDs, password hashes and token
versions, and the signing key comes along, so tokens issued before the
backup stay valid. Nothing is written if any user of the file exists in the
database (by name or ID), or if the database holds a signing key that
differs from the file's (tokens signed with one of them would break). So
restore into a new database, or one that holds none of these users.

While a running caddy holds the database, the import goes through its admin
API. A missing database file is created.`,
		Args:         cobra.ExactArgs(1),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.Restore(args[0])
		},
	}
	addTargetFlags(env, c)
	return c
}

// migrateCommand: caddy crudauth migrate --from <store> --to <store>
func migrateCommand(env *Env) *cobra.Command {
	var from, to string
	c := &cobra.Command{
		Use:   "migrate --from <file|etcd://...> --to <file|etcd://...>",
		Short: "Copies every user, session and secret from one store to another (a bolt file, an etcd prefix), exactly",
		Long: `Copies every user (ID, password hash, token_version, scopes), every live
session (with its generation) and every secret, the signing key included,
from one store to another: from a bolt file to an etcd prefix, back, or
between two of either. Tokens issued before the move keep working after it.

A store is the path of a bolt file, or an etcd URL:

  etcd://HOST:PORT[,HOST:PORT...]/PREFIX/[?dial_timeout=2s]
  etcds://...     the same over TLS, checked against the system's roots

The port defaults to 2379 and the prefix to /crudauth/. Credentials are
never read from the URL: set ` + EnvEtcdUsername + ` and ` + EnvEtcdPassword + `.

The source bolt file must not be held by a running caddy (stop it, or take
a backup through its admin API and restore that with --store). The target
must be empty: no user and no secret, so migrate before starting gateways
on a new prefix. A new target file appears only once the copy is verified:
both sides are read again and compared, and the command prints their counts
and the SHA-256 of what they hold.`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.Migrate(from, to)
		},
	}
	c.Flags().StringVar(&from, "from", "", "the store to copy from: a bolt file or etcd://...")
	c.Flags().StringVar(&to, "to", "", "the empty store to copy into: a bolt file (created) or etcd://...")
	c.Flags().BoolVarP(&env.Verbose, "verbose", "v", false, "say what is read, copied and verified")
	return c
}
