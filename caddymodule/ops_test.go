package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/crudauth/caddy-crudauth/internal/cli"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// TestAdaptPasswordOptions pins the Caddyfile mapping of the password
// subdirectives.
func TestAdaptPasswordOptions(t *testing.T) {
	out, err := adapt(t, `
http://localhost:9080 {
	crudauth {
		password_min_length 12
		password_max_length 128
		password_path /account/password
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	got := handlerJSON(t, out)
	if got["password_min_length"] != 12.0 || got["password_max_length"] != 128.0 || got["password_path"] != "/account/password" {
		t.Errorf("adapted: %v", got)
	}
	for _, bad := range []string{"password_min_length", "password_min_length 0", "password_max_length x", "password_path"} {
		if _, err := adapt(t, "http://localhost:9080 {\n crudauth {\n  "+bad+"\n }\n}"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// provisionErr provisions h (no database is touched when the config is
// refused before that) and returns the error.
func provisionErr(t *testing.T, h *Handler) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if h.DB == "" {
		h.DB = filepath.Join(t.TempDir(), "users.db")
	}
	err := h.Provision(ctx)
	_ = h.Cleanup()
	return err
}

// TestPasswordPolicyLimits: the policy and the argon2 floor are enforced at
// start, with a message that names the setting.
func TestPasswordPolicyLimits(t *testing.T) {
	for name, tc := range map[string]struct {
		h    Handler
		want string // "" = accepted
	}{
		"defaults":             {Handler{}, ""},
		"min 12":               {Handler{RealmSettings: RealmSettings{PasswordMinLength: 12}}, ""},
		"max below 64":         {Handler{RealmSettings: RealmSettings{PasswordMaxLength: 63}}, "password_max_length"},
		"max above the cap":    {Handler{RealmSettings: RealmSettings{PasswordMaxLength: password.MaxBytes + 1}}, "password_max_length"},
		"min above max":        {Handler{RealmSettings: RealmSettings{PasswordMinLength: 100, PasswordMaxLength: 64}}, "password_min_length"},
		"min negative":         {Handler{RealmSettings: RealmSettings{PasswordMinLength: -1}}, "password_min_length"},
		"argon2 memory floor":  {Handler{RealmSettings: RealmSettings{Argon2: &Argon2Params{Memory: 19455}}}, "argon2"},
		"argon2 time floor":    {Handler{RealmSettings: RealmSettings{Argon2: &Argon2Params{Memory: 65536, Time: 1}}}, "argon2"},
		"argon2 stronger":      {Handler{RealmSettings: RealmSettings{Argon2: &Argon2Params{Memory: 19456, Time: 3}}}, ""},
		"password_path bad":    {Handler{PasswordPath: "account"}, "password_path"},
		"password_path clash":  {Handler{PasswordPath: "/token"}, "password_path"},
		"password_path wildcd": {Handler{PasswordPath: "/pw/*"}, "password_path"},
	} {
		t.Run(name, func(t *testing.T) {
			h := tc.h
			err := provisionErr(t, &h)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}

	// The configured policy is what the password endpoint and the admin
	// API apply.
	pol := password.Policy{MinLength: 12}
	for pw, ok := range map[string]bool{
		"":                                false,
		"elevenchars":                     false,
		"twelve-chars":                    true,
		strings.Repeat("x", 256):          true,
		strings.Repeat("x", 257):          false,
		strings.Repeat("é", 100):          true, // characters, not bytes
		strings.Repeat("x", 5000):         false,
		"correct horse battery staple ok": true,
	} {
		if err := pol.Check(pw); (err == nil) != ok {
			t.Errorf("Check(%.20q...) = %v, want ok=%v", pw, err, ok)
		}
	}
}

// runCLIFile runs a command on a file nobody holds, with --verbose.
func runCLIFile(t *testing.T, db, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := &cli.Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
		AdminAddress: func() string { return "localhost:1" }}
	cmd := userCommand(env)
	switch args[0] {
	case "backup":
		cmd, args = backupCommand(env), args[1:]
	case "restore":
		cmd, args = restoreCommand(env), args[1:]
	}
	cmd.SetArgs(append(args, "--db", db, "--verbose"))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

// TestCLIFileModeOps covers the user commands on a file: scopes,
// import and backup, and --verbose saying which path was taken.
func TestCLIFileModeOps(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "users.db")
	_, verbose, err := runCLIFile(t, db, "file-mode-password\n", "add", "alice", "--password-stdin")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(verbose, "using the database file") {
		t.Errorf("--verbose said %q", verbose)
	}

	for args, want := range map[string]string{
		"scopes alice":                       "--none",
		"scopes alice --none a":              "not both",
		"scopes alice --none --unrestricted": "exclude",
		"scopes nobody a":                    "no user",
	} {
		if _, _, err := runCLIFile(t, db, "", strings.Fields(args)...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
	if _, _, err := runCLIFile(t, db, "", "scopes", "alice", "me:read", "reports:read"); err != nil {
		t.Fatal(err)
	}
	if u := readUser(t, db, "alice"); strings.Join(u.AllowedScopes, " ") != "me:read reports:read" {
		t.Errorf("scopes = %#v", u.AllowedScopes)
	}
	runCLIFile(t, db, "", "scopes", "alice", "--none")
	if u := readUser(t, db, "alice"); u.AllowedScopes == nil || len(u.AllowedScopes) != 0 {
		t.Errorf("--none: %#v", u.AllowedScopes)
	}
	runCLIFile(t, db, "", "scopes", "alice", "--unrestricted")
	if u := readUser(t, db, "alice"); u.AllowedScopes != nil {
		t.Errorf("--unrestricted: %#v", u.AllowedScopes)
	}

	bc, _ := bcrypt.GenerateFromPassword([]byte("imported-password"), bcrypt.MinCost)
	bad := filepath.Join(dir, "users.htpasswd")
	writeFile(t, bad, "bob:"+string(bc)+"\ncarol:"+string(bc)+"\ndave:{SHA}abc=\n")
	if _, _, err := runCLIFile(t, db, "", "import", bad); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("bad import: %v", err)
	}
	out, _, err := runCLIFile(t, db, "", "list", "--json")
	var views []users.View
	if err != nil || json.Unmarshal([]byte(out), &views) != nil || len(views) != 1 {
		t.Fatalf("after a failed import: %s %v", out, err)
	}
	good := filepath.Join(dir, "good.htpasswd")
	writeFile(t, good, "bob:"+string(bc)+"\ncarol:"+string(bc)+"\n")
	if out, _, err := runCLIFile(t, db, "", "import", good); err != nil || !strings.Contains(out, "imported 2 users") {
		t.Fatalf("import: %q %v", out, err)
	}
	hasher, _ := password.NewHasher(password.DefaultParams)
	if ok, rehash, _ := hasher.Verify(readUser(t, db, "bob").PasswordHash, "imported-password"); !ok || !rehash {
		t.Errorf("imported bcrypt hash: ok=%v rehash=%v", ok, rehash)
	}

	// The default backup is an export that restores into a new database
	// with every user, and not into one that holds them.
	export := filepath.Join(dir, "backup.jsonl")
	out, _, err = runCLIFile(t, db, "", "backup", export)
	if err != nil || !strings.Contains(out, "backup of 3 users") {
		t.Fatalf("backup: %q %v", out, err)
	}
	if fi, err := os.Stat(export); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("export file: %v, mode %v", err, fi.Mode())
	}
	restored := filepath.Join(dir, "restored.db")
	out, _, err = runCLIFile(t, restored, "", "restore", export)
	if err != nil || !strings.Contains(out, "restored 3 users, 0 sessions and 0 secrets") {
		t.Fatalf("restore: %q %v", out, err)
	}
	for _, name := range []string{"alice", "bob", "carol"} {
		if got, want := readUser(t, restored, name), readUser(t, db, name); got.ID != want.ID ||
			got.PasswordHash != want.PasswordHash || got.TokenVersion != want.TokenVersion {
			t.Errorf("restored %s = %+v, want %+v", name, got, want)
		}
	}
	if _, _, err := runCLIFile(t, db, "", "restore", export); err == nil || !strings.Contains(err.Error(), "nothing imported") {
		t.Errorf("restore into the database it came from: %v", err)
	}
	if _, _, err := runCLIFile(t, db, "", "backup", filepath.Join(dir, "x"), "--format", "tar"); err == nil || !strings.Contains(err.Error(), "use export or bolt") {
		t.Errorf("--format tar: %v", err)
	}

	// --format bolt: the bbolt file itself.
	backup := filepath.Join(dir, "backup.db")
	out, _, err = runCLIFile(t, db, "", "backup", backup, "--format", "bolt")
	if err != nil || !strings.Contains(out, "backup of 3 users") {
		t.Fatalf("backup: %q %v", out, err)
	}
	if _, _, err := runCLIFile(t, restored, "", "restore", backup); err == nil || !strings.Contains(err.Error(), "putting the file in place") {
		t.Errorf("restore of a bolt snapshot: %v", err)
	}
	st, err := bolt.Open(backup, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetUserByName(context.Background(), "carol"); err != nil {
		t.Errorf("backup lacks carol: %v", err)
	}
	st.Close()
	if _, _, err := runCLIFile(t, db, "", "backup", backup, "--format", "bolt"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("overwrite without --force: %v", err)
	}
	if _, _, err := runCLIFile(t, db, "", "backup", backup, "--format", "bolt", "--force"); err != nil {
		t.Errorf("--force: %v", err)
	}
	if _, _, err := runCLIFile(t, db, "", "backup", export); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("overwrite of an export without --force: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".crudauth-backup-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}

	// --address to an admin API that does not answer: one line that says
	// what to do.
	_, _, err = runCLIFile(t, db, "", "list", "--address", "localhost:1")
	if err == nil || !strings.Contains(err.Error(), "cannot reach caddy's admin API at localhost:1") || strings.Contains(err.Error(), "\n") {
		t.Errorf("unreachable --address: %v", err)
	}
}

// TestCLILockedFallsBackToAdminAPI: when the file is locked and no admin API
// answers, the message says both and what to do.
func TestCLILockedFallsBackToAdminAPI(t *testing.T) {
	db := filepath.Join(t.TempDir(), "users.db")
	st, err := bolt.Open(db, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, verbose, err := runCLIFile(t, db, "", "list")
	if err == nil || !strings.Contains(err.Error(), "locked by another process") || !strings.Contains(err.Error(), "--address") {
		t.Errorf("locked file, no admin API: %v", err)
	}
	if !strings.Contains(verbose, "is held by another process; using the admin API at localhost:1") {
		t.Errorf("--verbose said %q", verbose)
	}
}
