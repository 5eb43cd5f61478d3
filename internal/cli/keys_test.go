package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/admin"
	"github.com/crudauth/caddy-crudauth/internal/keys"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// keyResolver resolves every request to the memory store name, with the
// key settings of a realm.
type keyResolver struct {
	name string
	keys users.KeySettings
}

func (k keyResolver) Stores() []string { return []string{"memory:" + k.name} }

func (k keyResolver) Resolve(url.Values) (admin.Target, error) {
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		return admin.Target{}, err
	}
	st := memory.Open(k.name, memory.Options{})
	return admin.Target{Name: "memory:" + k.name, Store: st, Settings: users.Settings{Hasher: hasher, Keys: k.keys},
		Release: func() { _ = st.Close() }}, nil
}

// runKeyCommand runs `key list|rotate|retire` with its flags, parsed as the
// command line would give them, on the ops WithOps picks.
func runKeyCommand(env *Env, args []string) error {
	var alg string
	var d time.Duration
	given := false
	rest := []string{}
	for i := 1; i < len(args); i++ {
		switch args[i] {
		case "--alg":
			i++
			alg = args[i]
		case "--token-lifetime", "--delay":
			i++
			d, _ = time.ParseDuration(args[i])
			given = true
		case "--json":
			env.JSON = true
		default:
			rest = append(rest, args[i])
		}
	}
	return env.WithOps(func(ctx context.Context, ops Ops) error {
		switch args[0] {
		case "list":
			return env.ListKeys(ctx, ops, alg, d)
		case "rotate":
			return env.RotateKey(ctx, ops, alg, d, given)
		}
		return env.RetireKey(ctx, ops, rest[0])
	})
}

// TestKeyCommands runs `key list`, `key rotate` and `key retire` offline on
// a bolt file (nothing known of the realm: the defaults, and what the
// output says of them) and online through the admin API of an EdDSA realm
// with a 10m publish delay and 2h tokens. No output holds a private key.
func TestKeyCommands(t *testing.T) {
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	settings := func() (users.Settings, error) { return users.Settings{Hasher: hasher}, nil }
	ctx := context.Background()
	const ts = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`
	for _, path := range []string{"offline", "online"} {
		t.Run(path, func(t *testing.T) {
			var newEnv func(out, errOut *bytes.Buffer) *Env
			var outputs strings.Builder // every output, checked for private keys at the end
			delay := "1h0m0s"
			lifetimeLine := "verify-until is judged with a token lifetime of 720h0m0s, the default refresh_ttl; pass --token-lifetime with the gateways' longest refresh_ttl if it differs\n"
			if path == "offline" {
				db := filepath.Join(t.TempDir(), "keys.db")
				b, err := bolt.Open(db, bolt.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := keys.Ensure(ctx, b, store.AlgEdDSA, time.Now().Add(-time.Hour), 0); err != nil {
					t.Fatal(err)
				}
				newEnv = func(out, errOut *bytes.Buffer) *Env {
					return &Env{DB: db, Stdout: out, Stderr: errOut, Settings: settings, Verbose: true, LockWait: 100 * time.Millisecond}
				}
				// The command opens the file itself, each time.
				b.Close()
				t.Cleanup(func() {
					if t.Failed() {
						return
					}
					b, err := bolt.Open(db, bolt.Options{})
					if err != nil {
						t.Fatal(err)
					}
					defer b.Close()
					checkNoPrivateKeys(t, b, outputs.String())
				})
			} else {
				name := "cli-keys-test"
				keep := memory.Open(name, memory.Options{})
				t.Cleanup(func() { _ = keep.Close() })
				if _, err := keys.Ensure(ctx, keep, store.AlgEdDSA, time.Now().Add(-time.Hour), 0); err != nil {
					t.Fatal(err)
				}
				a := &admin.Handler{Resolver: keyResolver{name: name, keys: users.KeySettings{Alg: store.AlgEdDSA, PublishDelay: 10 * time.Minute, TokenLifetime: 2 * time.Hour}},
					Logger: zap.NewNop()}
				srv := httptest.NewServer(a)
				t.Cleanup(srv.Close)
				newEnv = func(out, errOut *bytes.Buffer) *Env {
					return &Env{Address: srv.Listener.Addr().String(), Stdout: out, Stderr: errOut, ParseAddress: tcpAddress, Verbose: true}
				}
				t.Cleanup(func() {
					if !t.Failed() {
						checkNoPrivateKeys(t, keep, outputs.String())
					}
				})
				delay = "10m0s"
				lifetimeLine = "verify-until is judged with a token lifetime of 2h0m0s, the longest refresh_ttl of the realm's handlers\n"
			}
			ids := map[string]string{}
			// Each step runs on the state the steps before it left.
			for _, tc := range []struct {
				args []string
				kind users.Kind
				err  string // regexp the whole message matches; "" : success
				out  string // regexp the whole output matches, {old} {new} {repl} for kids
				save string // the name to give the kid the output's first group matched
			}{
				{args: []string{"list"}, save: "old",
					out: `KID +ALG +STATE +CREATED +SIGNS_FROM +SIGNED_UNTIL +VERIFY_UNTIL +RETIRED\n` +
						`([\w-]{22}) +EdDSA +signing +` + ts + ` +` + ts + ` +- +- +-\n` + regexp.QuoteMeta(lifetimeLine)},
				{args: []string{"list", "--token-lifetime", "90m"},
					out: `(?s)KID.*{old} +EdDSA +signing.*\nverify-until is judged with a token lifetime of 1h30m0s \(--token-lifetime\)\n`},
				{args: []string{"list", "--alg", "HS256"},
					out: `note: signing_alg HS256 signs with one secret, never published and never rotated: there is no key set \(signing_alg EdDSA or ES256 keep published, rotatable keys\)\n`},
				{args: []string{"list", "--alg", "ES256"},
					out: `no ES256 keys in the store\nnote: the store also holds keys of EdDSA, which this list leaves out \(name one to list them\)\n.*\n`},
				{args: []string{"rotate", "--alg", "HS256"}, kind: users.Invalid, err: `nothing to rotate: signing_alg HS256 .*`},
				{args: []string{"rotate", "--delay", "-5m"}, kind: users.Invalid, err: `publish delay "-5m0s" is not a duration such as 1h \(0 or more\)`},
				{args: []string{"rotate"}, save: "new",
					out: `rotated EdDSA: new key ([\w-]{22}) is published now and signs from ` + ts + ` \(in ` + delay + `\)\n` +
						`key {old} signs until then; its tokens verify until they expire\n`},
				{args: []string{"rotate", "--delay", "0s"}, kind: users.Conflict,
					err: `a rotation is already pending: key {new} signs from ` + ts + `; rotate again once it signs, or retire it`},
				{args: []string{"list"},
					out: `(?s)KID.*\n{old} +EdDSA +signing +` + ts + ` +` + ts + ` +` + ts + ` +` + ts + ` +-\n{new} +EdDSA +pending .*\n` + regexp.QuoteMeta(lifetimeLine)},
				{args: []string{"list", "--json"},
					out: `(?s)\{\n  "(signing_alg": "EdDSA",\n  ")?token_lifetime": ".*"keys": \[\n    \{\n      "kid": "{old}",\n      "alg": "EdDSA",\n      "state": "signing",.*"kid": "{new}".*"state": "pending".*\]\n\}\n`},
				{args: []string{"retire", ".."}, kind: users.Invalid, err: `invalid key id ".."`},
				{args: []string{"retire", "nokey/x"}, kind: users.NotFound, err: `no signing key "nokey/x"; 'caddy crudauth key list' shows the keys`},
				// The old key signs and the new one is pending: retiring the
				// old one adds a replacement that signs now.
				{args: []string{"retire", "{old}"}, save: "repl",
					out: `key {old} \(EdDSA\) retired: every token it signed is refused from the next request on\n` +
						`no other EdDSA key signed: replacement key ([\w-]{22}) added, signing now\n`},
				{args: []string{"retire", "{old}"}, out: `key {old} \(EdDSA\) was already retired at ` + ts + `; nothing changed\n`},
				{args: []string{"retire", "{new}"}, out: `key {new} \(EdDSA\) retired: every token it signed is refused from the next request on\nno replacement needed: key {repl} signs\n`},
				{args: []string{"list"},
					out: `(?s)KID.*\n{old} +EdDSA +retired .* ` + ts + `\n{new} +EdDSA +retired .*\n{repl} +EdDSA +signing .*\n` + regexp.QuoteMeta(lifetimeLine)},
			} {
				t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
					expand := func(s string, quote bool) string {
						for k, v := range ids {
							if quote {
								v = regexp.QuoteMeta(v)
							}
							s = strings.ReplaceAll(s, "{"+k+"}", v)
						}
						return s
					}
					var out, errOut bytes.Buffer
					env := newEnv(&out, &errOut)
					args := make([]string, len(tc.args))
					for i, a := range tc.args {
						args[i] = expand(a, false)
					}
					err := runKeyCommand(env, args)
					stdout := out.String()
					outputs.WriteString(stdout + errOut.String())
					if err != nil {
						outputs.WriteString(err.Error())
					}
					if tc.err != "" {
						if err == nil || !regexp.MustCompile("^"+expand(tc.err, true)+"$").MatchString(err.Error()) || users.KindOf(err) != tc.kind {
							t.Fatalf("error %v (kind %v); want %s %s", err, users.KindOf(err), tc.kind, expand(tc.err, true))
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					m := regexp.MustCompile("^" + expand(tc.out, true) + "$").FindStringSubmatch(stdout)
					if m == nil {
						t.Fatalf("output:\n%s\nwant it to match\n%s", stdout, expand(tc.out, true))
					}
					if tc.save != "" {
						ids[tc.save] = m[1]
					}
					if path == "offline" && !strings.Contains(errOut.String(), "using the database file") {
						t.Errorf("did not work on the file: %q", errOut.String())
					}
					if path == "online" && !strings.Contains(errOut.String(), "identified itself as admin.api.crudauth") {
						t.Errorf("did not go through the admin API: %q", errOut.String())
					}
				})
			}
		})
	}
}

// checkNoPrivateKeys fails when text holds a private key of st's, in any
// base64 alphabet or raw.
func checkNoPrivateKeys(t *testing.T, st store.Store, text string) {
	t.Helper()
	ks, err := st.SigningKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ks.Keys) < 3 {
		t.Fatalf("%d keys in the store", len(ks.Keys))
	}
	for _, k := range ks.Keys {
		for _, enc := range []string{base64.StdEncoding.EncodeToString(k.Private), base64.RawStdEncoding.EncodeToString(k.Private),
			base64.URLEncoding.EncodeToString(k.Private), base64.RawURLEncoding.EncodeToString(k.Private), string(k.Private)} {
			if strings.Contains(text, enc) {
				t.Errorf("the output holds the private key of %s", k.ID)
			}
		}
	}
}
