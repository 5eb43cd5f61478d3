package config

import (
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/throttle"
)

// defaults is a gateway with the handler's defaults, which pass.
func defaults() Gateway {
	return Gateway{
		AccessTTL:      15 * time.Minute,
		RefreshTTL:     720 * time.Hour,
		Refresh:        RefreshModeCookie,
		TokenPath:      "/token",
		RefreshPath:    "/refresh",
		CookieName:     "__Secure-crudauth_refresh",
		UserIDHeader:   "X-User-Id",
		UserNameHeader: "X-User-Name",
		ScopesHeader:   "X-User-Scopes",
		Sessions:       Sessions{RefreshReuseGrace: 10 * time.Second, MaxSessions: 50, LogoutPath: "/logout"},
		Discovery:      Discovery{JWKSPath: "/.well-known/jwks.json", MetadataPath: "/.well-known/oauth-authorization-server"},
	}
}

// TestGatewayCheck: each refusal's message, word for word (users and the
// Caddyfile tests match on them), and the settings that pass.
func TestGatewayCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(g *Gateway)
		want string // "": accepted
	}{
		{"defaults", func(*Gateway) {}, ""},
		{"body mode, every endpoint", func(g *Gateway) {
			g.Refresh = RefreshModeBody
			g.PasswordPath, g.Sessions.SessionsPath = "/password", "/sessions"
			g.AllowedOrigins = []string{"https://app.example.com"}
			g.StripHeaders = []string{"X-Internal"}
		}, ""},
		{"discovery off", func(g *Gateway) { g.Discovery = Discovery{JWKSPath: PathOff, MetadataPath: PathOff} }, ""},
		{"negative ttl", func(g *Gateway) { g.AccessTTL = -1 }, "access_ttl and refresh_ttl must be positive"},
		{"access longer than refresh", func(g *Gateway) { g.AccessTTL, g.RefreshTTL = 2*time.Hour, time.Hour },
			"access_ttl (2h0m0s) must not be longer than refresh_ttl (1h0m0s)"},
		{"refresh mode", func(g *Gateway) { g.Refresh = "header" }, `refresh: "header" is not one of cookie, body`},
		{"relative token_path", func(g *Gateway) { g.TokenPath = "token" }, `token_path: "token" must be an absolute path without query or wildcard`},
		{"refresh_path with a wildcard", func(g *Gateway) { g.RefreshPath = "/refresh*" }, `refresh_path: "/refresh*" must be an absolute path without query or wildcard`},
		{"same token and refresh path", func(g *Gateway) { g.RefreshPath = "/token" }, `token_path and refresh_path must differ (both are "/token")`},
		{"password_path with a query", func(g *Gateway) { g.PasswordPath = "/pw?x" }, `password_path: "/pw?x" must be an absolute path without query or wildcard`},
		{"password_path on token_path", func(g *Gateway) { g.PasswordPath = "/token" }, `password_path ("/token") must differ from token_path and refresh_path`},
		{"jwks_path with a trailing slash", func(g *Gateway) { g.Discovery.JWKSPath = "/keys/" },
			`jwks_path: "/keys/" must be an absolute path other than /, without query, wildcard or trailing slash`},
		{"reuse grace too long", func(g *Gateway) { g.Sessions.RefreshReuseGrace = 6 * time.Minute },
			"refresh_reuse_grace: 6m0s is out of range (0s to 5m0s)"},
		{"negative max_sessions", func(g *Gateway) { g.Sessions.MaxSessions = -1 }, "max_sessions must be positive"},
		{"sessions_path /", func(g *Gateway) { g.Sessions.SessionsPath = "/" },
			`sessions_path: "/" must be an absolute path other than /, without query, wildcard or trailing slash`},
		{"logout_path on refresh_path", func(g *Gateway) { g.Sessions.LogoutPath = "/refresh" }, `logout_path and refresh_path must differ (both are "/refresh")`},
		{"metadata_path on sessions_path", func(g *Gateway) { g.Sessions.SessionsPath, g.Discovery.MetadataPath = "/s", "/s" },
			`metadata_path and sessions_path must differ (both are "/s")`},
		{"jwks_path on password_path", func(g *Gateway) { g.PasswordPath, g.Discovery.JWKSPath = "/pw", "/pw" },
			`jwks_path and password_path must differ (both are "/pw")`},
		{"realm", func(g *Gateway) { g.Realm.MaxConcurrentHashes = -1 }, "max_concurrent_hashes: -1 must be positive (0 means half the CPUs)"},
		{"cookie name", func(g *Gateway) { g.CookieName = "" }, "cookie_name: must not be empty"},
		{"same-site", func(g *Gateway) { g.CookieSameSite = "loose" }, `cookie_same_site: "loose" is not one of strict, lax, none`},
		{"cross-site origins with a strict cookie", func(g *Gateway) { g.AllowedOrigins = []string{"https://a.example", "https://b.test"} },
			"allowed_origins: https://a.example and https://b.test are not same-site, so one of them is cross-site with the gateway and never gets its SameSite=strict refresh cookie back: set cookie_same_site none, or serve the app from the gateway's site"},
		{"cross-site origins in body mode", func(g *Gateway) {
			g.Refresh = RefreshModeBody
			g.AllowedOrigins = []string{"https://a.example", "https://b.test"}
		}, ""},
		{"origin with a path", func(g *Gateway) { g.AllowedOrigins = []string{"https://a.example/"} },
			`allowed_origins: "https://a.example/" must be scheme://host[:port], with no path`},
		{"origin without a scheme", func(g *Gateway) { g.AllowedOrigins = []string{"a.example"} },
			`allowed_origins: "a.example" must be scheme://host[:port], with no path`},
		{"identity header", func(g *Gateway) { g.ScopesHeader = "" }, "scopes_header: must not be empty"},
		{"strip header", func(g *Gateway) { g.StripHeaders = []string{""} }, "strip_headers: must not be empty"},
		{"identity headers alike", func(g *Gateway) { g.UserNameHeader = "x-user-ID" },
			"user_id_header, user_name_header and scopes_header must be three different headers"},
	} {
		g := defaults()
		tc.set(&g)
		err := g.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || err.Error() != tc.want) {
			t.Errorf("%s: Check() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestRealmCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Realm
		want string // "": accepted
	}{
		{"zero", Realm{}, ""},
		{"EdDSA with a delay", Realm{SigningAlg: "EdDSA", KeyPublishDelay: time.Hour}, ""},
		{"db and store", Realm{DB: "/x.db", Store: true}, "db and store are both set: db PATH is short for a bolt store with that path, set one of them"},
		{"hashing cap", Realm{MaxConcurrentHashes: -2}, "max_concurrent_hashes: -2 must be positive (0 means half the CPUs)"},
		{"HS256 with a delay", Realm{KeyPublishDelay: time.Hour}, "key_publish_delay: HS256 has one secret and no key rotation; set signing_alg EdDSA or ES256"},
		{"ES256 with a secret", Realm{SigningAlg: "ES256", Secret: "x"}, "secret is the HS256 key; signing_alg ES256 keeps its key pair in the store"},
		{"EdDSA with a negative delay", Realm{SigningAlg: "EdDSA", KeyPublishDelay: -1}, "key_publish_delay must be positive"},
		{"RS256", Realm{SigningAlg: "RS256"}, `signing_alg: "RS256" is not one of HS256, EdDSA, ES256`},
		{"negative queue", Realm{HashQueueTimeout: -1}, "hash_queue_timeout must be positive"},
		{"long queue", Realm{HashQueueTimeout: 2 * time.Minute},
			"hash_queue_timeout: 2m0s is too long, at most 1m (a login flood would park requests that long)"},
		{"throttle", Realm{Throttle: &throttle.Config{MaxEntries: -1}}, "throttle.max_entries: -1 must be positive"},
	} {
		err := tc.r.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || err.Error() != tc.want) {
			t.Errorf("%s: Check() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestThrottleCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    *throttle.Config
		want string // "": accepted
	}{
		{"nil", nil, ""},
		{"disabled keys", &throttle.Config{MaxFailures: -1, UserMaxFailures: -1, IPMaxFailures: -1}, ""},
		{"limit below -1", &throttle.Config{UserMaxFailures: -2}, "throttle.user_max_failures: -2 must be positive, or -1 to disable"},
		{"negative max_entries", &throttle.Config{MaxEntries: -5}, "throttle.max_entries: -5 must be positive"},
		{"negative window", &throttle.Config{Window: -time.Second}, "throttle.window: -1s must be positive"},
		{"max_lockout below lockout", &throttle.Config{BaseLockout: 10 * time.Minute, MaxLockout: time.Minute},
			"throttle.max_lockout (1m0s) must not be shorter than throttle.lockout (10m0s)"},
		{"lockout above the default max_lockout", &throttle.Config{BaseLockout: 2 * time.Hour},
			"throttle.max_lockout (1h0m0s) must not be shorter than throttle.lockout (2h0m0s)"},
	} {
		err := CheckThrottle(tc.c)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || err.Error() != tc.want) {
			t.Errorf("%s: Check() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestCheckRealmName(t *testing.T) {
	for name, want := range map[string]string{
		"main": "", "eu-west_1.prod": "",
		"":      "a realm needs a name",
		"a b":   `realm name "a b": only letters, digits, '-', '_' and '.' are allowed`,
		"réalm": `realm name "réalm": only letters, digits, '-', '_' and '.' are allowed`,
		"a/b":   `realm name "a/b": only letters, digits, '-', '_' and '.' are allowed`,
	} {
		err := CheckRealmName(name)
		if want == "" && err != nil || want != "" && (err == nil || err.Error() != want) {
			t.Errorf("CheckRealmName(%q) = %v, want %q", name, err, want)
		}
	}
}

func TestSecret(t *testing.T) {
	if k, err := Secret(goodSecret + "\r\n"); err != nil || string(k) != goodSecret {
		t.Errorf("Secret with a trailing newline = %q, %v; want it without", k, err)
	}
	if _, err := Secret(goodSecret[:31]); err == nil || !strings.HasPrefix(err.Error(), "31 bytes is too short, HS256 needs at least 32") {
		t.Errorf("a short secret: %v", err)
	}
	if _, err := Secret(strings.Repeat("changeme!", 4)); err == nil || !strings.HasPrefix(err.Error(), "too weak: a 9-byte pattern repeated") {
		t.Errorf("a repeated pattern: %v", err)
	}
}

func TestSessionsPolicy(t *testing.T) {
	off := false
	p := Sessions{RefreshReuseGrace: time.Second, RefreshSliding: true, MaxSessions: 3}.Policy()
	if !p.Rotate || p.ReuseGrace != time.Second || !p.Sliding || p.Max != 3 {
		t.Errorf("policy %+v, want rotation on by default and the values given", p)
	}
	if p := (Sessions{RotateRefresh: &off}).Policy(); p.Rotate {
		t.Errorf("rotate_refresh off: policy %+v rotates", p)
	}
}

func TestJWKSMaxAge(t *testing.T) {
	for delay, want := range map[time.Duration]time.Duration{
		time.Hour: 5 * time.Minute, 4 * time.Minute: 2 * time.Minute, 3*time.Second + 500*time.Millisecond: time.Second, 0: 0,
	} {
		if got := JWKSMaxAge(delay); got != want {
			t.Errorf("JWKSMaxAge(%s) = %s, want %s", delay, got, want)
		}
	}
}

// TestCheckReportsTheFirstOfSeveral: with several settings of a group
// wrong, the check names the first in the order of the reference, every
// time (Go's map order would make it differ from run to run).
func TestCheckReportsTheFirstOfSeveral(t *testing.T) {
	g := defaults()
	g.TokenPath, g.RefreshPath = "token", "refresh"
	g2 := defaults()
	g2.UserIDHeader, g2.ScopesHeader = "Authorization", "Cookie"
	for range 50 {
		if err := CheckThrottle(&throttle.Config{MaxFailures: -2, IPMaxFailures: -3}); err == nil || !strings.HasPrefix(err.Error(), "throttle.max_failures:") {
			t.Fatalf("two limits wrong: %v", err)
		}
		if err := CheckThrottle(&throttle.Config{BaseLockout: -5, MaxLockout: -1}); err == nil || !strings.HasPrefix(err.Error(), "throttle.lockout:") {
			t.Fatalf("two durations wrong: %v", err)
		}
		if err := g.Check(); err == nil || !strings.HasPrefix(err.Error(), "token_path:") {
			t.Fatalf("two paths wrong: %v", err)
		}
		if err := g2.Check(); err == nil || !strings.HasPrefix(err.Error(), "user_id_header:") {
			t.Fatalf("two headers wrong: %v", err)
		}
	}
}
