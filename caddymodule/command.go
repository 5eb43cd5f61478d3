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

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "crudauth",
		Usage: "user <add|passwd|revoke|disable|enable|del|scopes|show|list|import> ... | backup <file> | restore <file> | explain --config <file> <METHOD> <target>",
		Short: "Manages the users of the crudauth gateway and explains its rules",
		Long: `
Manages the users in a crudauth database, takes backups of it and restores
them; explain shows how a config's rules judge one request.

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

Passwords are read from a prompt that does not echo, or from standard input
with --password-stdin; never from a flag.`,
		CobraFunc: func(cmd *cobra.Command) {
			env := &cliEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
			cmd.AddCommand(userCommand(env), backupCommand(env), restoreCommand(env), explainCommand(env))
			requireSubcommand(cmd)
			cmd.SilenceUsage = true
		},
	})
}

// cliEnv is what a subcommand works with; tests swap its streams.
type cliEnv struct {
	db            string
	realm         string // --realm: a realm of the running caddy, through its admin API
	address       string // --address: go through this admin API
	verbose       bool
	passwordStdin bool
	jsonOut       bool
	stdin         io.Reader
	stdout        io.Writer
	stderr        io.Writer
	// lockWait is how long to wait for the file lock (default 500ms);
	// defaultAddress overrides the admin address used when the file is
	// locked. Both for tests.
	lockWait       time.Duration
	defaultAddress func() string
	// mayCreate: the command may create a missing database file (add,
	// import); the others refuse to work on a file that does not exist.
	mayCreate bool
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
func (env *cliEnv) addTargetFlags(c *cobra.Command) {
	c.PersistentFlags().StringVar(&env.db, "db", "", "database file (default: "+DefaultDBPath()+")")
	c.PersistentFlags().StringVar(&env.address, "address", "", "admin API address of the running caddy to go through (default: used only when the file is locked, at "+caddy.DefaultAdminListen+")")
	c.PersistentFlags().StringVar(&env.realm, "realm", "", "a realm declared in the running caddy's global crudauth options, reached through its admin API")
	c.PersistentFlags().BoolVarP(&env.verbose, "verbose", "v", false, "say whether the file or the admin API is used, and which admin endpoint")
}

func userCommand(env *cliEnv) *cobra.Command {
	user := &cobra.Command{
		Use:   "user",
		Short: "Adds, changes and lists users",
	}
	env.addTargetFlags(user)
	requireSubcommand(user)
	user.SilenceUsage = true

	var scopes string
	add := &cobra.Command{
		Use:   "add <username>",
		Short: "Adds a user; the password is prompted for, or read with --password-stdin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env.mayCreate = true
			return env.withOps(func(ctx context.Context, ops userOps) error {
				return env.addUser(ctx, ops, args[0], scopes, cmd.Flags().Changed("scopes"))
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
			return env.withOps(func(ctx context.Context, ops userOps) error {
				return env.changePassword(ctx, ops, args[0])
			})
		},
	}
	passwd.Flags().BoolVar(&env.passwordStdin, "password-stdin", false, "read the password from standard input")

	user.AddCommand(add, passwd,
		env.mutation("revoke", "Revokes every token of the user; the password stays", "tokens revoked"),
		env.mutation("disable", "Disables the user: no login, and existing tokens are refused", "disabled"),
		env.mutation("enable", "Enables a disabled user", "enabled"),
		env.deleteCommand(),
		env.scopesCommand(),
		env.showCommand(),
		env.listCommand(),
		env.importCommand(),
	)
	for _, c := range user.Commands() {
		c.SilenceUsage = true
	}
	return user
}

func (env *cliEnv) addUser(ctx context.Context, ops userOps, username, scopeList string, scopesGiven bool) error {
	if err := checkNewUsername(username); err != nil {
		return err
	}
	var allowed []string
	if scopesGiven {
		set, err := scope.Parse(scopeList)
		if err != nil {
			return fmt.Errorf("--scopes: %w", err)
		}
		allowed = append([]string{}, set...) // non-nil: the user is limited to these
	}
	// Before asking for a password: is the name free?
	if taken, err := ops.exists(ctx, username); err != nil {
		return err
	} else if taken {
		return fmt.Errorf("user %q already exists; use 'caddy crudauth user passwd %s' to change the password", username, username)
	}
	pw, err := env.readNewPassword()
	if err != nil {
		return err
	}
	v, err := ops.add(ctx, users.AddRequest{Username: username, Password: pw, AllowedScopes: allowed})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "added user %s (id %s)\n", v.Username, v.ID)
	return nil
}

// checkNewUsername refuses, before the password is asked for, a name the
// service would refuse once it has it.
func checkNewUsername(name string) error {
	if name == "" {
		return &users.Error{Kind: users.Invalid, Msg: "username is empty"}
	}
	if err := users.CheckUsername(name); err != nil {
		return &users.Error{Kind: users.Invalid, Msg: fmt.Sprintf("invalid username %.64q: %v", name, err), Err: err}
	}
	return nil
}

func (env *cliEnv) changePassword(ctx context.Context, ops userOps, username string) error {
	if _, err := ops.show(ctx, username); err != nil {
		return err
	}
	pw, err := env.readNewPassword()
	if err != nil {
		return err
	}
	v, err := ops.passwd(ctx, username, pw)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "password changed for %s; tokens issued before are revoked (token_version %d)\n", v.Username, v.TokenVersion)
	return nil
}

// mutation builds a subcommand that applies a one-step change: revoke,
// disable or enable.
func (env *cliEnv) mutation(name, short, done string) *cobra.Command {
	return &cobra.Command{
		Use:   name + " <username>",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.withOps(func(ctx context.Context, ops userOps) error {
				v, err := ops.change(ctx, args[0], name)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.stdout, "%s: %s (token_version %d)\n", v.Username, done, v.TokenVersion)
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
			return env.withOps(func(ctx context.Context, ops userOps) error {
				v, err := ops.remove(ctx, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(env.stdout, "deleted user %s (id %s)\n", v.Username, v.ID)
				return nil
			})
		},
	}
}

func (env *cliEnv) showCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "show <username>",
		Short: "Shows one user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return env.withOps(func(ctx context.Context, ops userOps) error {
				v, err := ops.show(ctx, args[0])
				if err != nil {
					return err
				}
				return env.printUsers([]users.View{v}, false)
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
			return env.withOps(func(ctx context.Context, ops userOps) error {
				views, err := ops.list(ctx)
				if err != nil {
					return err
				}
				return env.printUsers(views, true)
			})
		},
	}
	c.Flags().BoolVar(&env.jsonOut, "json", false, "print JSON")
	return c
}

func (env *cliEnv) printUsers(views []users.View, asList bool) error {
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

// readNewPassword reads a new password (stdin or a no-echo prompt asked
// twice). The policy is checked where it is hashed: by the running gateway's
// settings through the admin API, by the defaults on a file.
func (env *cliEnv) readNewPassword() (string, error) {
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
	return pw, nil
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
