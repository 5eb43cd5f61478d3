package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/crudauth/caddy-crudauth/internal/backup"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// AddUser adds username with a password read from the terminal or Stdin;
// scopesGiven says whether scopeList, the allowed scopes, was given (else
// the user has no per-user limit).
func (env *Env) AddUser(ctx context.Context, ops Ops, username, scopeList string, scopesGiven bool) error {
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
	if taken, err := ops.Exists(ctx, username); err != nil {
		return err
	} else if taken {
		return fmt.Errorf("user %q already exists; use 'caddy crudauth user passwd %s' to change the password", username, username)
	}
	pw, err := env.readNewPassword()
	if err != nil {
		return err
	}
	v, err := ops.Add(ctx, users.AddRequest{Username: username, Password: pw, AllowedScopes: allowed})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "added user %s (id %s)\n", v.Username, v.ID)
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

// ChangePassword sets a new password, read as AddUser reads it.
func (env *Env) ChangePassword(ctx context.Context, ops Ops, username string) error {
	if _, err := ops.Show(ctx, username); err != nil {
		return err
	}
	pw, err := env.readNewPassword()
	if err != nil {
		return err
	}
	v, err := ops.Passwd(ctx, username, pw)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "password changed for %s; tokens issued before are revoked (token_version %d)\n", v.Username, v.TokenVersion)
	return nil
}

func (env *Env) printUsers(views []users.View, asList bool) error {
	if env.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if asList {
			return enc.Encode(views)
		}
		return enc.Encode(views[0])
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
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
func (env *Env) readNewPassword() (string, error) {
	var pw string
	if env.PasswordStdin {
		b, err := io.ReadAll(io.LimitReader(bufio.NewReader(env.Stdin), password.MaxBytes+2))
		if err != nil {
			return "", fmt.Errorf("reading the password from stdin: %w", err)
		}
		pw = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	} else {
		f, ok := env.Stdin.(*os.File)
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

// Change applies m to username.
func (env *Env) Change(ctx context.Context, ops Ops, m Mutation, username string) error {
	v, err := ops.Change(ctx, username, m.Name)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s: %s (token_version %d)\n", v.Username, m.Done, v.TokenVersion)
	return nil
}

// Delete deletes username.
func (env *Env) Delete(ctx context.Context, ops Ops, username string) error {
	v, err := ops.Remove(ctx, username)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "deleted user %s (id %s)\n", v.Username, v.ID)
	return nil
}

// Show prints one user.
func (env *Env) Show(ctx context.Context, ops Ops, username string) error {
	v, err := ops.Show(ctx, username)
	if err != nil {
		return err
	}
	return env.printUsers([]users.View{v}, false)
}

// List prints every user.
func (env *Env) List(ctx context.Context, ops Ops) error {
	views, err := ops.List(ctx)
	if err != nil {
		return err
	}
	return env.printUsers(views, true)
}

// ScopesFromArgs reads `user scopes <username> [<scope>...]`: the scopes
// listed after the username, or none, or with unrestricted no per-user
// limit (nil).
func ScopesFromArgs(args []string, none, unrestricted bool) ([]string, error) {
	switch {
	case none && unrestricted:
		return nil, errors.New("--none and --unrestricted exclude each other")
	case (none || unrestricted) && len(args) > 1:
		return nil, errors.New("list scopes, or give --none or --unrestricted, not both")
	case none:
		return []string{}, nil
	case unrestricted:
		return nil, nil
	case len(args) == 1:
		return nil, errors.New("list the scopes the user may hold, or pass --none (no scope) or --unrestricted (no per-user limit)")
	}
	set, err := scope.Parse(strings.Join(args[1:], " "))
	if err != nil {
		return nil, err
	}
	return append([]string{}, set...), nil
}

// SetScopes sets the scopes username may hold (nil: no per-user limit).
func (env *Env) SetScopes(ctx context.Context, ops Ops, username string, allowed []string) error {
	v, err := ops.SetScopes(ctx, username, allowed)
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
	fmt.Fprintf(env.Stdout, "%s: allowed scopes %s\n", v.Username, desc)
	return nil
}

// Import adds the users of file, in format (empty: from the extension),
// all or none.
func (env *Env) Import(file, format string) error {
	f, err := users.ImportFormat(format, file)
	if err != nil {
		return err
	}
	data, err := readImportFile(file)
	if err != nil {
		return err
	}
	records, err := users.ParseImport(data, f)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	env.MayCreate = true
	return env.WithOps(func(ctx context.Context, ops Ops) error {
		n, err := ops.Import(ctx, records)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		fmt.Fprintf(env.Stdout, "imported %d users from %s\n", n, file)
		return nil
	})
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

// Restore imports the export src: all its users or none.
func (env *Env) Restore(src string) error {
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
	env.MayCreate = true
	return env.WithOps(func(ctx context.Context, ops Ops) error {
		stats, err := ops.Restore(ctx, d)
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		fmt.Fprintf(env.Stdout, "restored %d users, %d sessions and %d secrets (%d already there, equal), %d signing keys (%d already there, equal) from %s\n",
			stats.Users, stats.Sessions, stats.Secrets, stats.SecretsKept, stats.Keys, stats.KeysKept, src)
		return nil
	})
}

// Backup writes a consistent copy of the database to dest (mode 0600) in
// format, export or bolt; force overwrites an existing dest.
func (env *Env) Backup(dest, format string, force bool) error {
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
	err = env.WithOps(func(ctx context.Context, ops Ops) error {
		var err error
		n, err = ops.Backup(ctx, tmp, format)
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
	fmt.Fprintf(env.Stdout, "backup of %d users (%d bytes) written to %s\n", users, n, dest)
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
