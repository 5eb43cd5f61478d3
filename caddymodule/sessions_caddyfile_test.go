package caddymodule

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// TestAdaptSessionSubdirectives pins the Caddyfile-to-JSON mapping of the
// session subdirectives.
func TestAdaptSessionSubdirectives(t *testing.T) {
	for _, tc := range []struct {
		name, block, want string
	}{
		{"all of them", `
		rotate_refresh off
		refresh_reuse_grace 30s
		refresh_sliding on
		max_sessions 5
		logout_path /auth/logout
		sessions_path /auth/sessions`,
			`{"logout_path":"/auth/logout","max_sessions":5,"refresh_reuse_grace":30000000000,"refresh_sliding":true,"rotate_refresh":false,"sessions_path":"/auth/sessions"}`},
		{"none: the defaults stay out of the JSON", ``, `{}`},
		{"rotation on written out", `rotate_refresh on`, `{"rotate_refresh":true}`},
		{"sliding off written out", `refresh_sliding off`, `{}`},
		{"no grace is the shortest one, not the default", `refresh_reuse_grace 0s`, `{"refresh_reuse_grace":1}`},
		{"the longest grace", `refresh_reuse_grace 5m`, `{"refresh_reuse_grace":300000000000}`},
		{"grace in Caddy's day unit", `refresh_reuse_grace 90s`, `{"refresh_reuse_grace":90000000000}`},
		{"one session", `max_sessions 1`, `{"max_sessions":1}`},
		{"logout at the root", `logout_path /signout`, `{"logout_path":"/signout"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := adapt(t, "http://localhost:9080 {\n\tcrudauth {\n\t\t"+tc.block+"\n\t}\n}")
			if err != nil {
				t.Fatal(err)
			}
			h := handlerJSON(t, out)
			got := map[string]any{}
			for k := range new(SessionSettings).subdirectives() {
				if v, ok := h[k]; ok {
					got[k] = v
				}
			}
			b, _ := json.Marshal(got)
			if string(b) != tc.want {
				t.Errorf("session settings:\n got %s\nwant %s", b, tc.want)
			}
		})
	}
}

// TestCaddyfileSessionErrors: each refused form of a session subdirective
// is refused by the adapter with a message that names the subdirective and
// the line.
func TestCaddyfileSessionErrors(t *testing.T) {
	for _, tc := range []struct{ name, block, want string }{
		{"repeated rotate_refresh", "rotate_refresh on\n\t\trotate_refresh off", "rotate_refresh is given twice (first on line 3)"},
		{"repeated grace", "refresh_reuse_grace 5s\n\t\trefresh_reuse_grace 5s", "refresh_reuse_grace is given twice"},
		{"repeated sliding", "refresh_sliding on\n\t\trefresh_sliding on", "refresh_sliding is given twice"},
		{"repeated max_sessions", "max_sessions 2\n\t\tmax_sessions 3", "max_sessions is given twice"},
		{"repeated logout_path", "logout_path /a\n\t\tlogout_path /b", "logout_path is given twice"},
		{"repeated sessions_path", "sessions_path /a\n\t\tsessions_path /b", "sessions_path is given twice"},
		{"rotate_refresh yes", "rotate_refresh yes", `rotate_refresh: "yes" is not one of on, off`},
		{"rotate_refresh true", "rotate_refresh true", `rotate_refresh: "true" is not one of on, off`},
		{"rotate_refresh On", "rotate_refresh On", `rotate_refresh: "On" is not one of on, off`},
		{"refresh_sliding 1", "refresh_sliding 1", `refresh_sliding: "1" is not one of on, off`},
		{"rotate_refresh without argument", "rotate_refresh", "wrong argument count"},
		{"rotate_refresh with two arguments", "rotate_refresh on off", "wrong argument count"},
		{"grace negative", "refresh_reuse_grace -1s", `refresh_reuse_grace: "-1s"`},
		{"grace not a duration", "refresh_reuse_grace soon", `refresh_reuse_grace: "soon"`},
		{"grace a bare number", "refresh_reuse_grace 10", `refresh_reuse_grace: "10"`},
		{"grace huge", "refresh_reuse_grace 1h", "refresh_reuse_grace"},
		{"grace just past the bound", "refresh_reuse_grace 5m1s", "refresh_reuse_grace"},
		{"max_sessions 0", "max_sessions 0", `max_sessions: "0" is not a positive number`},
		{"max_sessions negative", "max_sessions -1", `max_sessions: "-1"`},
		{"max_sessions not a number", "max_sessions many", `max_sessions: "many"`},
		{"max_sessions without argument", "max_sessions", "wrong argument count"},
		{"logout_path without argument", "logout_path", "wrong argument count"},
		{"logout_path with two arguments", "logout_path /a /b", "wrong argument count"},
		{"logout_path with a trailing slash", "logout_path /auth/logout/", "logout_path"},
		{"sessions_path with a trailing slash", "sessions_path /sessions/", "sessions_path"},
		{"sessions_path /", "sessions_path /", "sessions_path"},
		{"logout_path /", "logout_path /", "logout_path"},
		{"logout_path relative", "logout_path logout", "logout_path"},
		{"sessions_path with a wildcard", "sessions_path /sessions/*", "sessions_path"},
		{"logout_path with a query", "logout_path /logout?x=1", "logout_path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(t, "http://localhost:9080 {\n\tcrudauth {\n\t\t"+tc.block+"\n\t}\n}")
			if err == nil {
				t.Fatalf("accepted, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
			// The line of the offending subdirective (the last one given).
			line := 3 + strings.Count(tc.block, "\n")
			if !strings.Contains(err.Error(), "Caddyfile:"+strconv.Itoa(line)) {
				t.Errorf("error = %v, want it to name line %d", err, line)
			}
		})
	}
}

// TestSessionPathsRefusedAtStart: the paths of the session endpoints must
// not take another endpoint's path; that depends on the whole block (the
// other path may come later, or be a default), so it is checked when the
// handler is provisioned, with a message that names both.
func TestSessionPathsRefusedAtStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		js   string
		want []string // substrings of the error; nil: must provision
	}{
		{"logout_path is refresh_path", `{"logout_path":"/refresh"}`, []string{"logout_path", "refresh_path", `"/refresh"`}},
		{"logout_path is a moved refresh_path", `{"refresh_path":"/auth/refresh","logout_path":"/auth/refresh"}`, []string{"logout_path", "refresh_path"}},
		{"logout_path is token_path", `{"logout_path":"/token"}`, []string{"logout_path", "token_path"}},
		{"logout_path is password_path", `{"password_path":"/password","logout_path":"/password"}`, []string{"logout_path", "password_path"}},
		{"sessions_path is logout_path", `{"sessions_path":"/logout"}`, []string{"sessions_path", "logout_path"}},
		{"sessions_path is refresh_path", `{"sessions_path":"/refresh"}`, []string{"sessions_path", "refresh_path"}},
		{"logout_path with a trailing slash", `{"logout_path":"/logout/"}`, []string{"logout_path", "trailing slash"}},
		{"sessions_path relative", `{"sessions_path":"sessions"}`, []string{"sessions_path"}},
		{"grace past the bound", `{"refresh_reuse_grace":300000000001}`, []string{"refresh_reuse_grace"}},
		{"grace negative", `{"refresh_reuse_grace":-1}`, []string{"refresh_reuse_grace"}},
		{"max_sessions negative", `{"max_sessions":-1}`, []string{"max_sessions"}},
		{"control: the defaults", `{}`, nil},
		{"control: every path apart", `{"refresh_path":"/auth/refresh","logout_path":"/auth/logout","sessions_path":"/auth/sessions"}`, nil},
		{"control: the longest grace", `{"refresh_reuse_grace":300000000000}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) { wantProvisionRefusal(t, tc.js, tc.want) })
	}
}
