package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/admin"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// hostileAgent is a user agent as a client may send it: a terminal escape
// (clear screen, set the title), a C1 CSI, a tab, a bidirectional override,
// a backslash, a byte that is not UTF-8, spaces.
const hostileAgent = "Mozilla/5.0 (X11) \x1b[2J\x1b]0;pwned\x07 \u009b31m\tA\u202eB \\x1b \xff end"

// sessionFixture stores alice with two sessions (the second with
// hostileAgent), bob with one, and carol with none, in the memory store
// name, and returns the session IDs by "alice1", "alice2", "bob1".
func sessionFixture(t *testing.T, st store.Store) map[string]string {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	ids := map[string]string{}
	for _, u := range []struct {
		name   string
		agents []string
	}{{"alice", []string{"curl/8.5.0", hostileAgent}}, {"bob", []string{"bob's"}}, {"carol", nil}} {
		su := &store.User{Username: u.name, PasswordHash: "x"}
		if err := st.CreateUser(ctx, su); err != nil {
			t.Fatal(err)
		}
		for i, ua := range u.agents {
			s := &store.Session{UserID: su.ID, Generation: 1, CreatedAt: now.Add(time.Duration(i-5) * time.Minute),
				ExpiresAt: now.Add(time.Hour), UserAgent: ua, Address: "2001:db8::1"}
			if _, err := st.CreateSession(ctx, s, 0); err != nil {
				t.Fatal(err)
			}
			ids[u.name+string(rune('1'+i))] = s.ID
		}
	}
	return ids
}

// sessionOps returns the local ops on the memory store name, and the remote
// ones through the admin API over it.
func sessionOps(t *testing.T, name string) map[string]Ops {
	t.Helper()
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	st := memory.Open(name, memory.Options{})
	t.Cleanup(func() { _ = st.Close() })
	a := &admin.Handler{Resolver: memResolver{t: t, name: "memory:" + name}, Logger: zap.NewNop()}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	env := &Env{ParseAddress: tcpAddress}
	return map[string]Ops{
		"local":  &Local{st: st, svc: users.New(st, users.Settings{Hasher: hasher})},
		"remote": env.Remote(srv.Listener.Addr().String(), "memory:"+name),
	}
}

// TestSessionCommands runs `session list` and `session revoke` on a store
// the CLI opened and through the admin API: the same output, the same
// errors, and client-supplied text never reaches the terminal raw.
func TestSessionCommands(t *testing.T) {
	for _, path := range []string{"local", "remote"} {
		t.Run(path, func(t *testing.T) {
			name := "cli-sessions-" + path
			ops := sessionOps(t, name)[path]
			keep := memory.Open(name, memory.Options{}) // the state outlives each request's handle
			defer keep.Close()
			ids := sessionFixture(t, keep)
			expand := func(s string) string {
				for k, v := range ids {
					s = strings.ReplaceAll(s, "{"+k+"}", v)
				}
				return s
			}
			// Each step runs on the state the steps before it left.
			for _, tc := range []struct {
				args    []string // list USER [--json] | revoke USER SID
				kind    users.Kind
				err     string   // the whole message, after WithOps's hint
				out     []string // lines (or, with --json, fragments) the output holds
				notOut  []string // what it must not hold
				nLines  int      // lines of a table, header included
				jsonIDs string   // with --json: the IDs in order
			}{
				{args: []string{"list", "alice"}, nLines: 3, out: []string{
					"SID", "CREATED", "LAST_USED", "EXPIRES", "ADDRESS", "USER_AGENT",
					"{alice1}", "{alice2}", "2001:db8::1",
					"  curl/8.5.0\n",
					`  Mozilla/5.0 (X11) \x1b[2J\x1b]0;pwned\a \u009b31m\tA\u202eB \\x1b ` + "\ufffd end\n",
				}, notOut: []string{"\x1b", "\u009b", "\u202e", "\t", "\xff", "\a"}},
				{args: []string{"list", "alice", "--json"}, jsonIDs: "{alice1} {alice2}",
					out:    []string{`\u001b[2J`, `\u009b31m`, `\u202eB`, `"address": "2001:db8::1"`, `"created_at": "`},
					notOut: []string{"\x1b", "\u009b", "\u202e", "\t", "\xff"}},
				{args: []string{"list", "carol"}, out: []string{"no sessions for user carol\n"}},
				{args: []string{"list", "carol", "--json"}, out: []string{"[]\n"}},
				{args: []string{"list", "nobody"}, kind: users.NotFound, err: `no user "nobody"; 'caddy crudauth user list' shows who exists`},
				{args: []string{"revoke", "alice", "{bob1}"}, kind: users.NotFound,
					err: `user "alice" has no session "{bob1}"; 'caddy crudauth session list' shows the user's sessions`},
				{args: []string{"revoke", "nobody", "{alice1}"}, kind: users.NotFound, err: `no user "nobody"; 'caddy crudauth user list' shows who exists`},
				{args: []string{"revoke", "alice", ""}, kind: users.Invalid, err: `invalid session id ""`},
				{args: []string{"revoke", "alice", ".."}, kind: users.Invalid, err: `invalid session id ".."`},
				{args: []string{"revoke", "alice", "s/x y"}, kind: users.NotFound, err: `user "alice" has no session "s/x y"; 'caddy crudauth session list' shows the user's sessions`},
				{args: []string{"revoke", "ALICE", "{alice2}"}, out: []string{"alice: session {alice2} ended\n"}},
				{args: []string{"list", "alice"}, nLines: 2, out: []string{"{alice1}"}, notOut: []string{"{alice2}"}},
				{args: []string{"revoke", "alice", "{alice2}"}, kind: users.NotFound, err: `user "alice" has no session "{alice2}"; 'caddy crudauth session list' shows the user's sessions`},
				{args: []string{"list", "bob"}, nLines: 2, out: []string{"{bob1}", "bob's"}},
				{args: []string{"revoke", "bob", "{bob1}"}, out: []string{"bob: session {bob1} ended\n"}},
				{args: []string{"list", "bob"}, out: []string{"no sessions for user bob\n"}},
			} {
				t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
					var out bytes.Buffer
					env := &Env{Stdout: &out, JSON: len(tc.args) == 3 && tc.args[2] == "--json"}
					ctx := context.Background()
					var err error
					if tc.args[0] == "list" {
						err = env.ListSessions(ctx, ops, tc.args[1])
					} else {
						err = env.RevokeSession(ctx, ops, tc.args[1], expand(tc.args[2]))
					}
					err = hint(err) // as WithOps does
					if tc.err != "" {
						if err == nil || err.Error() != expand(tc.err) || users.KindOf(err) != tc.kind {
							t.Fatalf("error %v (kind %v); want %s %q", err, users.KindOf(err), tc.kind, expand(tc.err))
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					got := out.String()
					for _, s := range tc.out {
						if !strings.Contains(got, expand(s)) {
							t.Errorf("output does not hold %q:\n%s", expand(s), got)
						}
					}
					for _, s := range tc.notOut {
						if strings.Contains(got, expand(s)) {
							t.Errorf("output holds %q:\n%q", expand(s), got)
						}
					}
					if tc.nLines > 0 && strings.Count(got, "\n") != tc.nLines {
						t.Errorf("%d lines, want %d:\n%s", strings.Count(got, "\n"), tc.nLines, got)
					}
					if tc.jsonIDs != "" {
						var list []users.SessionView
						if err := json.Unmarshal(out.Bytes(), &list); err != nil {
							t.Fatal(err)
						}
						var got []string
						for _, v := range list {
							got = append(got, v.ID)
						}
						if strings.Join(got, " ") != expand(tc.jsonIDs) {
							t.Errorf("sessions %q, want %q", got, expand(tc.jsonIDs))
						}
						// The escapes decode to the agent as stored (its
						// invalid byte as U+FFFD, as the service gives it).
						if want := strings.ToValidUTF8(hostileAgent, "\ufffd"); list[1].UserAgent != want {
							t.Errorf("user agent %q, want %q", list[1].UserAgent, want)
						}
					}
				})
			}
		})
	}
}

// TestSessionTableTimes: the table's times are RFC 3339 in UTC, whatever
// the zone they were stored in.
func TestSessionTableTimes(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	at := time.Date(2030, 1, 2, 3, 4, 5, 600, paris)
	var out bytes.Buffer
	env := &Env{Stdout: &out}
	ops := fakeSessionOps{list: []users.SessionView{{ID: "s1", CreatedAt: at, LastUsedAt: at.Add(time.Minute), ExpiresAt: at.Add(time.Hour)}}}
	if err := env.ListSessions(context.Background(), ops, "alice"); err != nil {
		t.Fatal(err)
	}
	want := "s1   2030-01-02T02:04:05Z  2030-01-02T02:05:05Z  2030-01-02T03:04:05Z  -        -\n"
	if lines := strings.SplitAfter(out.String(), "\n"); len(lines) != 3 || lines[1] != want {
		t.Errorf("table:\n%s\nwant the row\n%s", out.String(), want)
	}
}

// fakeSessionOps answers ListSessions with list.
type fakeSessionOps struct {
	Ops
	list []users.SessionView
}

func (f fakeSessionOps) ListSessions(context.Context, string) ([]users.SessionView, error) {
	return f.list, nil
}

// TestSafeText: what a terminal could act on is escaped, the rest kept.
func TestSafeText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/128.0", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/128.0"},
		{"café ünïcode 日本", "café ünïcode 日本"},
		{"\x1b[31mred", `\x1b[31mred`},
		{"a\u009bb", `a\u009bb`},
		{"a\x7fb", `a\x7fb`},
		{"tab\there", `tab\there`},
		{"new\nline\r", `new\nline\r`},
		{"rtl\u202eevil", `rtl\u202eevil`},
		{"bad\xffbyte", `bad\xffbyte`},
		{`back\slash`, `back\\slash`},
		{"", ""},
	} {
		if got := safeText(tc.in); got != tc.want {
			t.Errorf("safeText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
