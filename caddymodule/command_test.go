package caddymodule

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/crudauth/caddy-crudauth/internal/cli"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
)

// The subcommands of `caddy crudauth`, built as the registered command
// builds them (hostEnv fills in what env leaves unset), so that the tests
// run what operators run.
func userCommand(env *cli.Env) *cobra.Command    { return commandOf(env, "user") }
func sessionCommand(env *cli.Env) *cobra.Command { return commandOf(env, "session") }
func keyCommand(env *cli.Env) *cobra.Command     { return commandOf(env, "key") }
func backupCommand(env *cli.Env) *cobra.Command  { return commandOf(env, "backup") }
func restoreCommand(env *cli.Env) *cobra.Command { return commandOf(env, "restore") }
func explainCommand(env *cli.Env) *cobra.Command { return commandOf(env, "explain") }

func commandOf(env *cli.Env, name string) *cobra.Command {
	for _, c := range cli.Commands(hostEnv(env)) {
		if c.Name() == name {
			return c
		}
	}
	panic("no command crudauth " + name)
}

func readUser(t *testing.T, db, name string) *store.User {
	t.Helper()
	st, err := bolt.Open(db, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := st.GetUserByName(context.Background(), name)
	if err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	return u
}

// TestCrudauthCommandRegistered: `caddy crudauth` is registered with
// Caddy's command line and mounts the whole tree, whose help names Caddy's
// defaults (the database path, the admin address), and fails without a
// subcommand.
func TestCrudauthCommandRegistered(t *testing.T) {
	reg, ok := caddycmd.Commands()["crudauth"]
	if !ok {
		t.Fatal("no crudauth command registered")
	}
	if reg.Long != cli.Long || reg.Short != cli.Short || reg.Usage != cli.Usage {
		t.Error("the registered help is not the tree's")
	}
	root := &cobra.Command{Use: "crudauth"}
	reg.CobraFunc(root)
	var names []string
	for _, c := range root.Commands() {
		names = append(names, c.Name())
	}
	if want := []string{"backup", "explain", "key", "migrate", "restore", "session", "user"}; !slices.Equal(names, want) {
		t.Errorf("subcommands %v, want %v", names, want)
	}
	user, _, err := root.Find([]string{"user", "list"})
	if err != nil {
		t.Fatal(err)
	}
	if u := user.Flag("address").Usage; !strings.Contains(u, "at "+caddy.DefaultAdminListen+")") {
		t.Errorf("--address help %q does not name %s", u, caddy.DefaultAdminListen)
	}
	if u := user.Flag("db").Usage; !strings.Contains(u, "(default: "+DefaultDBPath()+")") {
		t.Errorf("--db help %q does not name %s", u, DefaultDBPath())
	}
	var out bytes.Buffer
	root.SetArgs([]string{}) // not nil: cobra would read os.Args
	root.SetOut(&out)
	root.SetErr(&out)
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "a subcommand is needed") {
		t.Errorf("crudauth without a subcommand: %v", err)
	}
}
