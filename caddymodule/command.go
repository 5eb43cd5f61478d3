package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/boltstore"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "crudauth",
		Usage: "user <add|passwd|revoke|disable|enable|del|show|list> ...",
		Short: "Manages the users of the crudauth gateway",
		Long: `
Manages the users in a crudauth database file. These commands open the file
directly, so they work while no Caddy process holds it; a running Caddy holds
the file locked, and the commands then say so.

Passwords are read from a prompt that does not echo, or from standard input
with --password-stdin; never from a flag.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(userCommand(&cliEnv{stdin: os.Stdin, stdout: os.Stdout}))
		},
	})
}

// cliEnv is what a subcommand works with; tests swap its streams.
type cliEnv struct {
	db            string
	passwordStdin bool
	jsonOut       bool
	stdin         io.Reader
	stdout        io.Writer
}

func userCommand(env *cliEnv) *cobra.Command {
	user := &cobra.Command{
		Use:   "user",
		Short: "Adds, changes and lists users",
	}
	user.PersistentFlags().StringVar(&env.db, "db", "", "database file (default: "+DefaultDBPath()+")")

	var scopes string
	add := &cobra.Command{
		Use:   "add <username>",
		Short: "Adds a user; the password is prompted for, or read with --password-stdin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.withStore(func(ctx context.Context, st store.Store) error {
				return env.addUser(ctx, st, args[0], scopes, cmd.Flags().Changed("scopes"))
			})
		},
	}
	add.Flags().StringVar(&scopes, "scopes", "", `space-separated scopes the user may hold, e.g. "me:read reports:read" (default: no per-user limit)`)
	add.Flags().BoolVar(&env.passwordStdin, "password-stdin", false, "read the password from standard input")

	passwd := &cobra.Command{
		Use:   "passwd <username>",
		Short: "Sets a new password and revokes every token issued before",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.withStore(func(ctx context.Context, st store.Store) error {
				return env.changePassword(ctx, st, args[0])
			})
		},
	}
	passwd.Flags().BoolVar(&env.passwordStdin, "password-stdin", false, "read the password from standard input")

	user.AddCommand(add, passwd,
		env.mutation("revoke", "Revokes every token of the user; the password stays", "tokens revoked",
			func(u *store.User) error { u.TokenVersion++; return nil }),
		env.mutation("disable", "Disables the user: no login, and existing tokens are refused", "disabled",
			func(u *store.User) error { u.Disabled = true; return nil }),
		env.mutation("enable", "Enables a disabled user", "enabled",
			func(u *store.User) error { u.Disabled = false; return nil }),
		env.deleteCommand(),
		env.showCommand(),
		env.listCommand(),
	)
	for _, c := range user.Commands() {
		c.SilenceUsage = true
	}
	return user
}

func (env *cliEnv) withStore(fn func(ctx context.Context, st store.Store) error) error {
	path := env.db
	if path == "" {
		path = DefaultDBPath()
	}
	st, err := boltstore.Open(path, boltstore.Options{Timeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(context.Background(), st)
}

func (env *cliEnv) addUser(ctx context.Context, st store.Store, username, scopeList string, scopesGiven bool) error {
	if err := checkUsername(username); err != nil || username == "" {
		return fmt.Errorf("invalid username %q", username)
	}
	var allowed []string
	if scopesGiven {
		set, err := scope.Parse(scopeList)
		if err != nil {
			return fmt.Errorf("--scopes: %w", err)
		}
		allowed = append([]string{}, set...) // non-nil: the user is limited to these
	}
	if _, err := st.GetUserByName(ctx, username); err == nil {
		return fmt.Errorf("user %q already exists; use 'caddy crudauth user passwd %s' to change the password", username, username)
	}
	hash, err := env.readNewPasswordHash()
	if err != nil {
		return err
	}
	u := &store.User{Username: username, PasswordHash: hash, AllowedScopes: allowed}
	if err := st.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrExists) {
			return fmt.Errorf("user %q already exists", username)
		}
		return err
	}
	fmt.Fprintf(env.stdout, "added user %s (id %s)\n", u.Username, u.ID)
	return nil
}

func (env *cliEnv) changePassword(ctx context.Context, st store.Store, username string) error {
	u, err := env.lookup(ctx, st, username)
	if err != nil {
		return err
	}
	hash, err := env.readNewPasswordHash()
	if err != nil {
		return err
	}
	u, err = store.SetPassword(ctx, st, u.ID, hash)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "password changed for %s; tokens issued before are revoked (token_version %d)\n", u.Username, u.TokenVersion)
	return nil
}

// mutation builds a subcommand that changes one user with fn.
func (env *cliEnv) mutation(name, short, done string, fn func(u *store.User) error) *cobra.Command {
	return &cobra.Command{
		Use:   name + " <username>",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.withStore(func(ctx context.Context, st store.Store) error {
				u, err := env.lookup(ctx, st, args[0])
				if err != nil {
					return err
				}
				if u, err = st.UpdateUser(ctx, u.ID, fn); err != nil {
					return err
				}
				fmt.Fprintf(env.stdout, "%s: %s (token_version %d)\n", u.Username, done, u.TokenVersion)
				return nil
			})
		},
	}
}

func (env *cliEnv) deleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "del <username>",
		Short: "Deletes a user; their tokens are refused from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.withStore(func(ctx context.Context, st store.Store) error {
				u, err := env.lookup(ctx, st, args[0])
				if err != nil {
					return err
				}
				if err := st.DeleteUser(ctx, u.ID); err != nil {
					return err
				}
				fmt.Fprintf(env.stdout, "deleted user %s (id %s)\n", u.Username, u.ID)
				return nil
			})
		},
	}
}

// userView is what show and list print: everything but the hash.
type userView struct {
	ID            string    `json:"id"`
	Username      string    `json:"username"`
	Disabled      bool      `json:"disabled"`
	AllowedScopes []string  `json:"allowed_scopes"`
	TokenVersion  uint64    `json:"token_version"`
	HashAlgorithm string    `json:"hash_algorithm"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

func viewOf(u *store.User) userView {
	return userView{
		ID: u.ID, Username: u.Username, Disabled: u.Disabled, AllowedScopes: u.AllowedScopes,
		TokenVersion: u.TokenVersion, HashAlgorithm: password.Algorithm(u.PasswordHash),
		CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt,
	}
}

func (env *cliEnv) showCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "show <username>",
		Short: "Shows one user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.withStore(func(ctx context.Context, st store.Store) error {
				u, err := env.lookup(ctx, st, args[0])
				if err != nil {
					return err
				}
				return env.printUsers([]userView{viewOf(u)}, false)
			})
		},
	}
	c.Flags().BoolVar(&env.jsonOut, "json", false, "print JSON")
	return c
}

func (env *cliEnv) listCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "list",
		Short: "Lists users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.withStore(func(ctx context.Context, st store.Store) error {
				views := []userView{}
				if err := st.ListUsers(ctx, func(u *store.User) error {
					views = append(views, viewOf(u))
					return nil
				}); err != nil {
					return err
				}
				return env.printUsers(views, true)
			})
		},
	}
	c.Flags().BoolVar(&env.jsonOut, "json", false, "print JSON")
	return c
}

func (env *cliEnv) printUsers(views []userView, asList bool) error {
	if env.jsonOut {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if asList {
			return enc.Encode(views)
		}
		return enc.Encode(views[0])
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USERNAME\tID\tSTATUS\tTOKEN_VERSION\tALLOWED_SCOPES")
	for _, v := range views {
		status := "enabled"
		if v.Disabled {
			status = "disabled"
		}
		scopes := "(any grantable)"
		if v.AllowedScopes != nil {
			scopes = strings.Join(v.AllowedScopes, " ")
			if scopes == "" {
				scopes = "(none)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", v.Username, v.ID, status, v.TokenVersion, scopes)
	}
	return tw.Flush()
}

func (env *cliEnv) lookup(ctx context.Context, st store.Store, username string) (*store.User, error) {
	u, err := st.GetUserByName(ctx, username)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no user %q; 'caddy crudauth user list' shows who exists", username)
	}
	return u, err
}

// readNewPasswordHash reads a new password (stdin or a no-echo prompt
// asked twice), checks it against the policy and hashes it.
func (env *cliEnv) readNewPasswordHash() (string, error) {
	var pw string
	if env.passwordStdin {
		b, err := io.ReadAll(io.LimitReader(bufio.NewReader(env.stdin), password.MaxBytes+2))
		if err != nil {
			return "", fmt.Errorf("reading the password from stdin: %w", err)
		}
		pw = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	} else {
		f, ok := env.stdin.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return "", errors.New("standard input is not a terminal: pipe the password in with --password-stdin")
		}
		first, err := prompt(f, "New password: ")
		if err != nil {
			return "", err
		}
		second, err := prompt(f, "Repeat it: ")
		if err != nil {
			return "", err
		}
		if first != second {
			return "", errors.New("the two passwords differ; nothing changed")
		}
		pw = first
	}
	if err := password.DefaultPolicy.Check(pw); err != nil {
		return "", fmt.Errorf("password refused: %w", err)
	}
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		return "", err
	}
	return hasher.Hash(pw)
}

func prompt(f *os.File, label string) (string, error) {
	fmt.Fprint(os.Stderr, label)
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	return string(b), nil
}
