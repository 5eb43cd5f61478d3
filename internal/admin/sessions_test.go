package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// namedResolver resolves every request to the memory store of that name.
type namedResolver struct {
	name     string
	settings users.Settings
}

func (n namedResolver) Stores() []string { return []string{"memory:" + n.name} }

func (n namedResolver) Resolve(url.Values) (Target, error) {
	st := memory.Open(n.name, memory.Options{})
	return Target{Name: "memory:" + n.name, Store: st, Settings: n.settings, Release: func() { _ = st.Close() }}, nil
}

// TestSessionEndpoints: a user's sessions are listed and ended one at a
// time, under that user only; each operation is counted under its name
// and outcome, and an ended session is logged with its sid.
func TestSessionEndpoints(t *testing.T) {
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keep := memory.Open("admin-sessions-test", memory.Options{}) // the state outlives each request's handle
	defer keep.Close()
	now := time.Now().UTC().Truncate(time.Second)
	ids := map[string]string{} // "alice1", "alice2", "bob1" to their IDs
	for _, name := range []string{"alice", "bob"} {
		u := &store.User{Username: name, PasswordHash: "x"}
		if err := keep.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		n := 2
		if name == "bob" {
			n = 1
		}
		for i := 1; i <= n; i++ {
			s := &store.Session{UserID: u.ID, Generation: 1, CreatedAt: now.Add(time.Duration(i) * time.Minute),
				ExpiresAt: now.Add(time.Hour), UserAgent: fmt.Sprintf("agent %s%d", name, i), Address: "192.0.2.1"}
			if _, err := keep.CreateSession(ctx, s, 0); err != nil {
				t.Fatal(err)
			}
			ids[fmt.Sprintf("%s%d", name, i)] = s.ID
		}
	}

	core, logs := observer.New(zapcore.InfoLevel)
	type obs struct{ op, outcome string }
	var seen []obs
	h := &Handler{Resolver: namedResolver{"admin-sessions-test", users.Settings{Hasher: hasher}}, Logger: zap.New(core),
		Observe: func(op string, err error) {
			outcome := "success"
			if err != nil {
				outcome = "error"
			}
			seen = append(seen, obs{op, outcome})
		}}
	// Each step runs on the state the steps before it left.
	for _, tc := range []struct {
		method, path string // {alice1} and the like stand for session IDs
		status       int
		body         string // contained in the answer
		sessions     string // for a 200 list: the IDs in order
		op, outcome  string
	}{
		{"GET", "/crudauth/users/alice/sessions", 200, `"user_agent":"agent alice1"`, "{alice1} {alice2}", "session_list", "success"},
		{"GET", "/crudauth/users/BOB/sessions", 200, `"address":"192.0.2.1"`, "{bob1}", "session_list", "success"},
		{"GET", "/crudauth/users/nobody/sessions", 404, `{"error":"no user \"nobody\"","kind":"not_found"}`, "", "session_list", "error"},
		{"DELETE", "/crudauth/users/alice/sessions/{bob1}", 404, `user \"alice\" has no session \"{bob1}\"","kind":"not_found"`, "", "session_revoke", "error"},
		{"GET", "/crudauth/users/bob/sessions", 200, ``, "{bob1}", "session_list", "success"},
		{"DELETE", "/crudauth/users/alice/sessions/snothere", 404, `"kind":"not_found"`, "", "session_revoke", "error"},
		{"DELETE", "/crudauth/users/nobody/sessions/{alice1}", 404, `no user \"nobody\"`, "", "session_revoke", "error"},
		{"DELETE", "/crudauth/users/alice/sessions/{alice1}", 200, `"username":"alice"`, "", "session_revoke", "success"},
		{"GET", "/crudauth/users/alice/sessions", 200, ``, "{alice2}", "session_list", "success"},
		{"DELETE", "/crudauth/users/alice/sessions/{alice1}", 404, `"kind":"not_found"`, "", "session_revoke", "error"},
		{"DELETE", "/crudauth/users/alice/sessions/{alice2}", 200, `"username":"alice"`, "", "session_revoke", "success"},
		{"GET", "/crudauth/users/alice/sessions", 200, `[]`, "", "session_list", "success"},
	} {
		expand := func(s string) string {
			for k, v := range ids {
				s = strings.ReplaceAll(s, "{"+k+"}", v)
			}
			return s
		}
		path := expand(tc.path)
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			seen = nil
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, path, nil))
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), expand(tc.body)) {
				t.Errorf("%d %s; want %d with %s", rec.Code, rec.Body, tc.status, expand(tc.body))
			}
			if len(seen) != 1 || seen[0] != (obs{tc.op, tc.outcome}) {
				t.Errorf("observed %v; want one %s %s", seen, tc.op, tc.outcome)
			}
			if tc.method == "GET" && rec.Code == 200 {
				var list []users.SessionView
				if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, v := range list {
					got = append(got, v.ID)
				}
				if strings.Join(got, " ") != expand(tc.sessions) {
					t.Errorf("sessions %q, want %q", got, expand(tc.sessions))
				}
			}
		})
	}

	ended := logs.FilterMessage("session revoked").All()
	if len(ended) != 2 {
		t.Fatalf("%d session revoked log entries: %v", len(ended), logs.All())
	}
	for i, want := range []string{ids["alice1"], ids["alice2"]} {
		f := ended[i].ContextMap()
		if f["sid"] != want || f["username"] != "alice" || f["user_id"] == "" {
			t.Errorf("log entry %d: %v", i, f)
		}
	}
	// bob's session, named under alice, was not ended.
	if _, err := keep.GetSession(ctx, mustUserID(t, keep, "bob"), ids["bob1"]); err != nil {
		t.Errorf("bob's session: %v", err)
	}
}

func mustUserID(t *testing.T, st store.Store, name string) string {
	t.Helper()
	u, err := st.GetUserByName(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}
