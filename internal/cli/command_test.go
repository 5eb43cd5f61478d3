package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// runCLI runs `caddy crudauth user <args>` against db with stdin, with the
// defaults a host gives a file outside any running gateway: the default
// password policy and argon2id parameters, and an admin address where
// nothing answers.
func runCLI(t *testing.T, db, stdin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	env := &Env{Stdin: strings.NewReader(stdin), Stdout: &out,
		AdminAddress: func() string { return "127.0.0.1:1" }, ParseAddress: tcpAddress,
		Settings: func() (users.Settings, error) {
			h, err := password.NewHasher(password.DefaultParams)
			return users.Settings{Policy: password.DefaultPolicy, Hasher: h}, err
		}}
	cmd := userCommand(env)
	cmd.SetArgs(append(args, "--db", db))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.Execute()
	return out.String(), err
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

func TestCLIUserLifecycle(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sub", "users.db")

	if _, err := runCLI(t, db, "cli-test-password\n", "add", "Alice", "--password-stdin", "--scopes", "me:read reports:read"); err != nil {
		t.Fatalf("add: %v", err)
	}
	u := readUser(t, db, "alice")
	if u.Username != "Alice" || u.TokenVersion != 0 || strings.Join(u.AllowedScopes, " ") != "me:read reports:read" {
		t.Fatalf("stored user = %+v", u)
	}
	if !strings.HasPrefix(u.PasswordHash, "$argon2id$") || strings.Contains(u.PasswordHash, "cli-test-password") {
		t.Fatalf("password not stored as an argon2id hash")
	}
	id := u.ID

	if _, err := runCLI(t, db, "x\n", "add", "ALICE", "--password-stdin"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("duplicate add (other case): %v", err)
	}
	if _, err := runCLI(t, db, "short\n", "add", "bob", "--password-stdin"); err == nil || !strings.Contains(err.Error(), "password refused") {
		t.Errorf("short password: %v", err)
	}
	if _, err := runCLI(t, db, "", "add", "bob"); err == nil || !strings.Contains(err.Error(), "--password-stdin") {
		t.Errorf("no terminal and no --password-Stdin: %v", err)
	}

	before := u.PasswordHash
	if _, err := runCLI(t, db, "cli-test-password-2\n", "passwd", "alice", "--password-stdin"); err != nil {
		t.Fatalf("passwd: %v", err)
	}
	u = readUser(t, db, "alice")
	if u.TokenVersion != 1 || u.PasswordHash == before || u.ID != id {
		t.Errorf("after passwd: version %d, hash changed %v, id kept %v", u.TokenVersion, u.PasswordHash != before, u.ID == id)
	}

	if _, err := runCLI(t, db, "", "revoke", "alice"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	u = readUser(t, db, "alice")
	if u.TokenVersion != 2 || u.PasswordHash == before {
		t.Errorf("after revoke: version %d", u.TokenVersion)
	}

	if _, err := runCLI(t, db, "", "disable", "alice"); err != nil || !readUser(t, db, "alice").Disabled {
		t.Errorf("disable: %v", err)
	}
	if _, err := runCLI(t, db, "", "enable", "alice"); err != nil || readUser(t, db, "alice").Disabled {
		t.Errorf("enable: %v", err)
	}

	out, err := runCLI(t, db, "", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var list []users.View
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].ID != id || list[0].HashAlgorithm != "argon2id" {
		t.Errorf("list --json = %s (%v)", out, err)
	}
	if strings.Contains(out, "$argon2id$") {
		t.Error("list prints the password hash")
	}
	out, err = runCLI(t, db, "", "show", "alice")
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "me:read reports:read") {
		t.Errorf("show = %q, %v", out, err)
	}

	if _, err := runCLI(t, db, "", "revoke", "nobody"); err == nil || !strings.Contains(err.Error(), "no user") {
		t.Errorf("revoke unknown: %v", err)
	}
	if _, err := runCLI(t, db, "", "del", "alice"); err != nil {
		t.Fatalf("del: %v", err)
	}
	if _, err := runCLI(t, db, "", "show", "alice"); err == nil {
		t.Error("deleted user still shown")
	}
}

// TestCLILockedFile: while the file is held (as a running Caddy holds it),
// the CLI fails fast with a message that says so.
func TestCLILockedFile(t *testing.T) {
	db := filepath.Join(t.TempDir(), "users.db")
	st, err := bolt.Open(db, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = runCLI(t, db, "", "list")
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("list on a held file: %v", err)
	}
}
