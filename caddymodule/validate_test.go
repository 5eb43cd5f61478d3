package caddymodule

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// provisionJSONErr provisions h (given as JSON) against a throwaway database and
// returns Provision's error.
func provisionJSONErr(t *testing.T, js string) error {
	t.Helper()
	h := new(Handler)
	if err := json.Unmarshal([]byte(js), h); err != nil {
		t.Fatalf("bad test JSON %s: %v", js, err)
	}
	if h.DB == "" {
		h.DB = filepath.Join(t.TempDir(), "v.db")
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err := h.Provision(ctx)
	_ = h.Cleanup()
	return err
}

const goodSecret = "q3Jv9Xh2Lw8Zr5Tn1Kc7Ym4Pb6Ds0FgE" // 32 bytes, all distinct

// TestConfigRefusedAtStart: every unsafe configuration is caught by Provision with a message that names the field.
func TestConfigRefusedAtStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		js   string
		want []string // substrings of the error; nil: must provision
	}{
		{"good secret", `{"secret":"` + goodSecret + `"}`, nil},
		{"good hex secret", `{"secret":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}`, nil},
		{"short secret", `{"secret":"` + goodSecret[:31] + `"}`, []string{"secret", "too short"}},
		{"secret of one character", `{"secret":"` + strings.Repeat("s", 40) + `"}`, []string{"secret", "too weak", "distinct"}},
		{"secret of few characters", `{"secret":"` + strings.Repeat("0101010", 6) + `"}`, []string{"secret", "too weak"}},
		{"secret of a repeated pattern", `{"secret":"` + strings.Repeat("changeme!", 4) + `"}`, []string{"secret", "too weak", "9-byte pattern"}},
		{"secret repeated with a tail", `{"secret":"` + strings.Repeat("abcdefghij", 4) + `abc"}`, []string{"secret", "pattern"}},
		{"argon2 memory below the floor", `{"secret":"` + goodSecret + `","argon2":{"memory":8192}}`, []string{"argon2", "memory", "19456"}},
		{"argon2 time below the floor", `{"secret":"` + goodSecret + `","argon2":{"time":1}}`, []string{"argon2", "time"}},
		{"scope with a quote", `{"default_scopes":["a\"b"],"grantable_scopes":["a\"b"]}`, []string{"default_scopes"}},
		{"scope with a backslash", `{"grantable_scopes":["read","a\\b"]}`, []string{"grantable_scopes"}},
		{"scope with a space", `{"grantable_scopes":["read write"]}`, []string{"grantable_scopes"}},
		{"scope with a non-ASCII letter", `{"grantable_scopes":["lecture-é"]}`, []string{"grantable_scopes"}},
		{"rule scope with a control character", `{"grantable_scopes":["x"],"rules":[{"scopes":["x\u0007"]}]}`, []string{"rules[0].scopes"}},
		{"default scopes outside grantable", `{"default_scopes":["read","admin"],"grantable_scopes":["read"]}`, []string{"default_scopes", "grantable_scopes", "admin"}},
		{"access longer than refresh", `{"access_ttl":7200000000000,"refresh_ttl":3600000000000}`, []string{"access_ttl", "refresh_ttl"}},
		{"__Host- cookie with a path", `{"cookie_name":"__Host-rt"}`, []string{"cookie_name", "__Host-", "Path=/"}},
		{"cookie name with a separator", `{"cookie_name":"rt;x"}`, []string{"cookie_name"}},
		{"identity header Connection", `{"user_id_header":"Connection"}`, []string{"user_id_header", "hop-by-hop"}},
		{"identity header X-Forwarded-For", `{"user_name_header":"x_forwarded_for"}`, []string{"user_name_header"}},
		{"identity header X-Original-URL", `{"scopes_header":"X-Original-URL"}`, []string{"scopes_header"}},
		{"identity header X-HTTP-Method-Override", `{"user_id_header":"X-HTTP-Method-Override"}`, []string{"user_id_header"}},
		{"identity header Transfer-Encoding", `{"user_id_header":"Transfer-Encoding"}`, []string{"user_id_header"}},
		{"identity headers alike", `{"user_id_header":"X-A","user_name_header":"x-A"}`, []string{"user_id_header", "user_name_header"}},
		{"negative hashing cap", `{"max_concurrent_hashes":-1}`, []string{"max_concurrent_hashes"}},
		{"hash queue too long", `{"hash_queue_timeout":120000000000}`, []string{"hash_queue_timeout"}},
		{"throttle limit below -1", `{"throttle":{"max_failures":-2}}`, []string{"throttle.max_failures"}},
		{"throttle negative window", `{"throttle":{"window":-1}}`, []string{"throttle.window"}},
		{"throttle max_lockout below lockout", `{"throttle":{"lockout":600000000000,"max_lockout":60000000000}}`, []string{"throttle.max_lockout", "throttle.lockout"}},
		{"throttle negative max_entries", `{"throttle":{"max_entries":-5}}`, []string{"throttle.max_entries"}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantProvisionRefusal(t, tc.js, tc.want) })
	}
}

func TestCaddyfileThrottle(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want *ThrottleConfig
		err  string
	}{
		{"throttle off", &ThrottleConfig{Off: true}, ""},
		{"throttle {\nmax_failures 3\nuser_max_failures -1\nip_max_failures 50\nwindow 30s\nlockout 10s\nmax_lockout 5m\nmax_entries 1000\n}",
			&ThrottleConfig{MaxFailures: 3, UserMaxFailures: -1, IPMaxFailures: 50, Window: caddy.Duration(30 * time.Second),
				Lockout: caddy.Duration(10 * time.Second), MaxLockout: caddy.Duration(5 * time.Minute), MaxEntries: 1000}, ""},
		{"throttle {\n}", &ThrottleConfig{}, ""},
		{"throttle on", nil, "wrong argument"},
		{"throttle off {\nmax_failures 1\n}", nil, "no block"},
		{"throttle {\nmax_failures 0\n}", nil, "max_failures"},
		{"throttle {\nmax_failures x\n}", nil, "max_failures"},
		{"throttle {\nmax_entries -1\n}", nil, "max_entries"},
		{"throttle {\nwindow -1s\n}", nil, "window"},
		{"throttle {\nlockout soon\n}", nil, "lockout"},
		{"throttle {\nmax_failures\n}", nil, "wrong argument"},
		{"throttle {\nbogus 1\n}", nil, "bogus"},
	} {
		h := new(Handler)
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("crudauth {\n" + tc.src + "\n}"))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one mentioning %q", tc.src, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.src, err)
			continue
		}
		got, _ := json.Marshal(h.Throttle)
		want, _ := json.Marshal(tc.want)
		if string(got) != string(want) {
			t.Errorf("%q: got %s, want %s", tc.src, got, want)
		}
	}
}

// wantProvisionRefusal provisions a handler from js and checks the
// outcome: with want nil it must start; otherwise it must be refused with
// an error that mentions every string of want.
func wantProvisionRefusal(t *testing.T, js string, want []string) {
	t.Helper()
	err := provisionJSONErr(t, js)
	if want == nil {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("accepted %s", js)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}
