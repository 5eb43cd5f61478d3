package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/crudauth/caddy-crudauth/internal/backup"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// scopesCommand: caddy crudauth user scopes <username> <scope>... | --none | --unrestricted
func (env *cliEnv) scopesCommand() *cobra.Command {
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
			var allowed []string
			switch {
			case none && unrestricted:
				return errors.New("--none and --unrestricted exclude each other")
			case (none || unrestricted) && len(args) > 1:
				return errors.New("list scopes, or give --none or --unrestricted, not both")
			case none:
				allowed = []string{}
			case unrestricted:
				allowed = nil
			case len(args) == 1:
				return errors.New("list the scopes the user may hold, or pass --none (no scope) or --unrestricted (no per-user limit)")
			default:
				set, err := scope.Parse(strings.Join(args[1:], " "))
				if err != nil {
					return err
				}
				allowed = append([]string{}, set...)
			}
			return env.withOps(func(ctx context.Context, ops userOps) error {
				v, err := ops.setScopes(ctx, args[0], allowed)
				if err != nil {
					return err
				}
				desc := "(no per-user limit)"
				if v.AllowedScopes != nil {
					desc = strings.Join(v.AllowedScopes, " ")
					if desc == "" {
						desc = "(none)"
					}
				}
				fmt.Fprintf(env.stdout, "%s: allowed scopes %s\n", v.Username, desc)
				return nil
			})
		},
	}
	c.Flags().BoolVar(&none, "none", false, "the user may hold no scope")
	c.Flags().BoolVar(&unrestricted, "unrestricted", false, "remove the per-user limit")
	return c
}

// importCommand: caddy crudauth user import <file> [--format csv|json|htpasswd]
func (env *cliEnv) importCommand() *cobra.Command {
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
			f, err := users.ImportFormat(format, args[0])
			if err != nil {
				return err
			}
			data, err := readImportFile(args[0])
			if err != nil {
				return err
			}
			records, err := users.ParseImport(data, f)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			env.mayCreate = true
			return env.withOps(func(ctx context.Context, ops userOps) error {
				n, err := ops.importUsers(ctx, records)
				if err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				fmt.Fprintf(env.stdout, "imported %d users from %s\n", n, args[0])
				return nil
			})
		},
	}
	c.Flags().StringVar(&format, "format", "", "csv, json or htpasswd (default: from the extension; htpasswd otherwise)")
	return c
}

func readImportFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, users.MaxImportBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > users.MaxImportBytes {
		return nil, fmt.Errorf("%s is larger than %d MiB; split it", name, users.MaxImportBytes>>20)
	}
	return data, nil
}

// backupCommand: caddy crudauth backup <file> [--format export|bolt]
func backupCommand(env *cliEnv) *cobra.Command {
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
			return env.backup(args[0], format, force)
		},
	}
	env.addTargetFlags(c)
	c.Flags().BoolVar(&force, "force", false, "overwrite <file> if it exists")
	c.Flags().StringVar(&format, "format", backup.Export, "export (portable JSON lines) or bolt (the bbolt file)")
	return c
}

// restoreCommand: caddy crudauth restore <file>
func restoreCommand(env *cliEnv) *cobra.Command {
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
			return env.restore(args[0])
		},
	}
	env.addTargetFlags(c)
	return c
}

func (env *cliEnv) restore(src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	d, err := store.ReadExport(f)
	f.Close()
	if errors.Is(err, store.ErrNotExport) {
		return fmt.Errorf("%s: %w (a --format bolt backup is restored by stopping caddy and putting the file in place of the database)", src, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	env.mayCreate = true
	return env.withOps(func(ctx context.Context, ops userOps) error {
		stats, err := ops.restore(ctx, d)
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		fmt.Fprintf(env.stdout, "restored %d users and %d secrets (%d already there, equal) from %s\n",
			stats.Users, stats.Secrets, stats.SecretsKept, src)
		return nil
	})
}

func (env *cliEnv) backup(dest, format string, force bool) error {
	if format != backup.Export && format != backup.Bolt {
		return fmt.Errorf("--format %q: use export or bolt", format)
	}
	if _, err := os.Stat(dest); err == nil && !force {
		return fmt.Errorf("%s exists; choose another name or pass --force to overwrite it", dest)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	dir := filepath.Dir(dest)
	tmp, err := os.CreateTemp(dir, ".crudauth-backup-*")
	if err != nil {
		return fmt.Errorf("cannot write in %s: %w", dir, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // after a successful rename this fails harmlessly
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	var n int64
	err = env.withOps(func(ctx context.Context, ops userOps) error {
		var err error
		n, err = ops.backup(ctx, tmp, format)
		return err
	})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("backup failed, nothing written to %s: %w", dest, err)
	}
	var users int
	if format == backup.Bolt {
		users, err = countUsers(tmpName)
		if err != nil {
			return fmt.Errorf("backup failed: the copy does not open as a database (%v); nothing written to %s", err, dest)
		}
	} else {
		users, err = countExport(tmpName)
		if err != nil {
			return fmt.Errorf("backup failed: the copy does not read back as an export (%v); nothing written to %s", err, dest)
		}
	}
	if err := os.Rename(tmpName, dest); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "backup of %d users (%d bytes) written to %s\n", users, n, dest)
	return nil
}

// countExport reads an export back and counts its users, which also checks
// that it is whole (its end line counts what it holds).
func countExport(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	d, err := store.ReadExport(f)
	if err != nil {
		return 0, err
	}
	return len(d.Users), nil
}

// countUsers opens a database file and counts its users, which also checks
// that it is a whole, readable database.
func countUsers(path string) (int, error) {
	st, err := bolt.Open(path, bolt.Options{CacheSize: -1})
	if err != nil {
		return 0, err
	}
	defer st.Close()
	if err := st.Check(); err != nil {
		return 0, err
	}
	n := 0
	err = st.ListUsers(context.Background(), func(*store.User) error { n++; return nil })
	return n, err
}
