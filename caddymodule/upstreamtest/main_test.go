// Package upstreamtest proves that an upstream can verify the tokens the
// gateway forwards with a maintained JWKS client of its own, and that it
// then accepts exactly what the gateway accepts, through a key rotation
// and a retirement. The client is lestrrat-go/jwx with its jwk.Cache,
// fetching the gateway's JWKS over HTTP: our own code cannot prove that
// what we publish is what upstreams really read.
//
// The package holds tests only, so jwx is a dependency of these tests and
// never of the module's code.
//
// Caddy runs on ports of its own (admin 2959, sites 9059), so this package
// can run beside caddymodule (2999, 9080) and browsertest (2969, 9069).
package upstreamtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/crudauth/caddy-crudauth/caddymodule"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
)

const (
	adminPort = 2959
	gateway   = "http://localhost:9059"
	user      = "alice"
	userPass  = "upstream-test-password-1"
)

func TestMain(m *testing.M) {
	caddytest.Default.AdminPort = adminPort
	caddytest.Default.Certificates = nil
	caddytest.Default.LoadRequestTimeout = 10 * time.Second
	dir, err := os.MkdirTemp("", "crudauth-upstream-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Keep the in-process Caddy's autosave and data out of the user's home.
	_ = os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	_ = os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// startGateway opens a memory store of its own with the test user, and
// (re)loads the in-process Caddy: the gateway signing with alg in front of
// upstream, forwarding the bearer. It returns the store handle, the one
// the gateway uses, to rotate and retire keys underneath it.
func startGateway(t *testing.T, alg string, publishDelay time.Duration, upstream string) store.Store {
	t.Helper()
	name := "upstreamtest-" + alg
	st := memory.Open(name, memory.Options{})
	t.Cleanup(func() { _ = st.Close() })
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := hasher.Hash(userPass)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateUser(context.Background(), &store.User{Username: user, PasswordHash: hash}); err != nil {
		t.Fatal(err)
	}
	caddytest.NewTester(t).InitServer(fmt.Sprintf(`{
	skip_install_trust
	admin localhost:%d
	http_port 9059
	https_port 9459
	grace_period 1ns
}

%s {
	crudauth {
		store memory {
			name %s
		}
		signing_alg %s
		key_publish_delay %s
		forward_token on
	}
	reverse_proxy %s
}
`, adminPort, gateway, name, alg, publishDelay, strings.TrimPrefix(upstream, "http://")), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return st
}

var client = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// get sends a GET with a bearer token ("" for none) and returns the
// status and body.
func get(t *testing.T, u, bearer string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// login returns a new access token of the test user.
func login(t *testing.T) string {
	t.Helper()
	resp, err := client.PostForm(gateway+"/token", url.Values{
		"grant_type": {"password"}, "username": {user}, "password": {userPass},
	})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.AccessToken == "" {
		t.Fatalf("login: %d, %v", resp.StatusCode, err)
	}
	return body.AccessToken
}
