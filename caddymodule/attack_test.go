package caddymodule

// The attack suite: a real Caddy (caddytest, in this process)
// runs the gateway with reverse_proxy in front of a recording backend, and
// each test plays one kind of attacker. Every case asserts the status, the
// WWW-Authenticate challenge or the JSON error, and what the backend saw.
// The tests share Caddy's fixed ports with the integration tests: none of
// them runs in parallel.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/gate"
	"github.com/crudauth/caddy-crudauth/internal/headers"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// attackSecret is the gateway's key in the attack suite, so that tests can
// sign tokens whose only flaw is the one under test.
const attackSecret = goodSecret

const attackAuth = `
		secret {env.CRUDAUTH_ATTACK_SECRET}
		refresh body
		default_scopes read
		grantable_scopes read write admin
		require /admin/* admin
		public /public/*`

func startAttackGateway(t *testing.T, extraAuth string, c gwConfig) *gateway {
	t.Helper()
	t.Setenv("CRUDAUTH_ATTACK_SECRET", attackSecret)
	c.auth = attackAuth + "\n" + extraAuth + "\n" + c.auth
	return startGateway(t, c)
}

// raw is a JSON text used as is, for members no encoder would write twice.
type raw string

func jsonSegment(t *testing.T, v any) string {
	t.Helper()
	if r, ok := v.(raw); ok {
		return b64.EncodeToString([]byte(r))
	}
	return encodeSegment(t, v)
}

// signHMAC signs header.payload with newHash and key.
func signHMAC(t *testing.T, newHash func() hash.Hash, key []byte, header, payload any) string {
	t.Helper()
	input := jsonSegment(t, header) + "." + jsonSegment(t, payload)
	mac := hmac.New(newHash, key)
	mac.Write([]byte(input))
	return input + "." + b64.EncodeToString(mac.Sum(nil))
}

// signWith signs with a golang-jwt signing method (asymmetric algorithms).
func signWith(t *testing.T, m jwt.SigningMethod, key any, header, payload any) string {
	t.Helper()
	input := jsonSegment(t, header) + "." + jsonSegment(t, payload)
	sig, err := m.Sign(input, key)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64.EncodeToString(sig)
}

func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m)+len(kv)/2)
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// rawRequest sends target exactly as written on the request line (no client
// cleaning or escaping) and returns the response.
func rawRequest(t *testing.T, method, target string, hdr ...string) *response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "localhost:9080", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: localhost:9080\r\nConnection: close\r\n", method, target)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body := make([]byte, 0, 512)
	buf := make([]byte, 512)
	for {
		n, err := resp.Body.Read(buf)
		body = append(body, buf[:n]...)
		if err != nil {
			break
		}
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: body}
}

// ---------------------------------------------------------------------------

// TestAttackForgedTokens: tokens an attacker builds, each authentic except
// for the one flaw under test (they are signed with the gateway's own key
// where the flaw is not the signature), must be refused with invalid_token
// and reach nothing.
func TestAttackForgedTokens(t *testing.T) {
	g := startAttackGateway(t, "", gwConfig{})
	alice := g.addUser(t, "alice", nil)
	g.updateUser(t, alice.ID, func(u *store.User) { u.TokenVersion = 5 })
	lr := g.mustLogin(t, "alice", "read")
	h, p, sig := splitJWT(t, lr.access)
	hdr, pl := decodeSegment(t, h), decodeSegment(t, p)
	key := []byte(attackSecret)
	hs := func(header, payload any) string { return signHMAC(t, sha256.New, key, header, payload) }
	now := time.Now().Unix()

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	pubDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	t.Run("control: a re-signed copy passes", func(t *testing.T) {
		wantStatus(t, g.get(t, "/api", hs(hdr, pl)), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "read")
	})

	unsigned := func(header map[string]any) string { return jsonSegment(t, header) + "." + p + "." }
	cases := []struct{ name, tok string }{}
	add := func(name, tok string) { cases = append(cases, struct{ name, tok string }{name, tok}) }
	for _, alg := range []string{"none", "None", "NONE", "nOnE", ""} {
		add("alg "+strconv.Quote(alg)+" unsigned", unsigned(with(hdr, "alg", alg)))
		add("alg "+strconv.Quote(alg)+" with an HS256 signature", hs(with(hdr, "alg", alg), pl))
	}
	add("alg header removed", hs(with(hdr, "alg", nil), pl))
	add("HS384 with the key", signHMAC(t, sha512.New384, key, with(hdr, "alg", "HS384"), pl))
	add("HS512 with the key", signHMAC(t, sha512.New, key, with(hdr, "alg", "HS512"), pl))
	add("RS256", signWith(t, jwt.SigningMethodRS256, rsaKey, with(hdr, "alg", "RS256"), pl))
	add("PS256", signWith(t, jwt.SigningMethodPS256, rsaKey, with(hdr, "alg", "PS256"), pl))
	add("ES256", signWith(t, jwt.SigningMethodES256, ecKey, with(hdr, "alg", "ES256"), pl))
	add("EdDSA", signWith(t, jwt.SigningMethodEdDSA, edKey, with(hdr, "alg", "EdDSA"), pl))
	add("public key as HMAC secret, alg HS256", signHMAC(t, sha256.New, pubPEM, hdr, pl))
	add("public key as HMAC secret, alg RS256", signHMAC(t, sha256.New, pubPEM, with(hdr, "alg", "RS256"), pl))
	for _, seg := range []struct {
		name string
		part int
	}{{"header", 0}, {"payload", 1}, {"signature", 2}} {
		parts := []string{h, p, sig}
		for _, i := range []int{0, len(parts[seg.part]) / 2, len(parts[seg.part]) - 2} {
			q := slices.Clone(parts)
			q[seg.part] = flipChar(q[seg.part], i)
			add(fmt.Sprintf("bit flip in the %s at %d", seg.name, i), strings.Join(q, "."))
		}
	}
	add("signature truncated by one", h+"."+p+"."+sig[:len(sig)-1])
	add("signature truncated by half", h+"."+p+"."+sig[:len(sig)/2])
	add("signature padded with =", h+"."+p+"."+sig+"=")
	add("signature padded with ==", h+"."+p+"."+sig+"==")
	add("signature with a trailing character", h+"."+p+"."+sig+"A")
	add("signature in std base64", h+"."+p+"."+strings.NewReplacer("-", "+", "_", "/").Replace(sig)+"=")
	add("four segments", h+"."+p+"."+sig+"."+sig)
	add("kid of another key", hs(with(hdr, "kid", "AAAAAAAAAAAA"), pl))
	add("kid path traversal", hs(with(hdr, "kid", "../../../../dev/null"), pl))
	add("kid empty", hs(with(hdr, "kid", ""), pl))
	add("jku", hs(with(hdr, "jku", "https://attacker.example/jwks.json"), pl))
	add("jwk", hs(with(hdr, "jwk", map[string]any{"kty": "oct", "k": b64.EncodeToString(key)}), pl))
	add("x5u", hs(with(hdr, "x5u", "https://attacker.example/cert.pem"), pl))
	add("x5c", hs(with(hdr, "x5c", []string{"MIIB"}), pl))
	add("crit", hs(with(hdr, "crit", []string{"exp"}), pl))
	add("typ of a refresh token", hs(with(hdr, "typ", "rt+jwt"), pl))
	add("typ missing", hs(with(hdr, "typ", nil), pl))
	add("exp missing", hs(hdr, with(pl, "exp", nil)))
	add("exp zero", hs(hdr, with(pl, "exp", 0)))
	add("exp in the past", hs(hdr, with(pl, "exp", now-3600)))
	// A quoted exp ("exp":"1700000000") is accepted by golang-jwt and pinned
	// as moot in internal/token's TestVerifyTable: only our key signs it.
	// So are duplicate member names (encoding/json keeps the last): only a
	// holder of the key can sign them.
	add("exp as a non-numeric string", hs(hdr, with(pl, "exp", "soon")))
	add("iss wrong", hs(hdr, with(pl, "iss", "someone-else")))
	add("iss missing", hs(hdr, with(pl, "iss", nil)))
	add("aud wrong", hs(hdr, with(pl, "aud", "someone-else")))
	add("aud missing", hs(hdr, with(pl, "aud", nil)))
	add("nbf in the future", hs(hdr, with(pl, "nbf", now+3600)))
	add("iat in the future", hs(hdr, with(pl, "iat", now+3600)))
	add("token_version absent", hs(hdr, with(pl, "token_version", nil)))
	add("token_version a string", hs(hdr, with(pl, "token_version", "5")))
	add("token_version negative", hs(hdr, with(pl, "token_version", -1)))
	add("token_version a fraction", hs(hdr, with(pl, "token_version", 5.5)))
	add("token_version larger than stored", hs(hdr, with(pl, "token_version", 6)))
	add("token_version smaller than stored", hs(hdr, with(pl, "token_version", 4)))
	add("token_version overflowing", hs(hdr, raw(strings.Replace(string(mustJSON(t, pl)), `"token_version":5`, `"token_version":18446744073709551616`, 1))))
	add("sub of nobody", hs(hdr, with(pl, "sub", "unobody")))
	add("sub missing", hs(hdr, with(pl, "sub", nil)))
	add("payload not an object", hs(hdr, raw(`["x"]`)))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantDenied(t, g.get(t, "/api", tc.tok), http.StatusUnauthorized, challenge("invalid_token"))
			g.backend.wantNone(t)
		})
	}

	t.Run("a million dots", func(t *testing.T) {
		r := g.get(t, "/api", strings.Repeat(".", 1_000_000))
		if r.status != http.StatusUnauthorized && r.status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status %s, want 401 or 431", r)
		}
		g.backend.wantNone(t)
	})
	t.Run("eight thousand dots", func(t *testing.T) {
		wantDenied(t, g.get(t, "/api", strings.Repeat(".", 8000)), http.StatusUnauthorized, challenge("invalid_token"))
		g.backend.wantNone(t)
	})
	t.Run("Authorization over the cap", func(t *testing.T) {
		wantDenied(t, g.get(t, "/api", lr.access+strings.Repeat("A", 9000)), http.StatusUnauthorized, challenge("invalid_token"))
		g.backend.wantNone(t)
	})
	t.Run("two Authorization headers", func(t *testing.T) {
		r := g.do(t, http.MethodGet, "/api", nil, "Authorization", "Bearer "+lr.access, "Authorization", "Bearer x")
		wantDenied(t, r, http.StatusBadRequest, challenge("invalid_request"))
		g.backend.wantNone(t)
	})
	t.Run("refresh endpoint refuses the same forgeries", func(t *testing.T) {
		rh, rp, _ := splitJWT(t, lr.refresh)
		rhdr, rpl := decodeSegment(t, rh), decodeSegment(t, rp)
		for name, tok := range map[string]string{
			"alg none":              unsignedRefresh(t, with(rhdr, "alg", "none"), rp),
			"HS512":                 signHMAC(t, sha512.New, key, with(rhdr, "alg", "HS512"), rpl),
			"token_version larger":  hs(rhdr, with(rpl, "token_version", 6)),
			"token_version smaller": hs(rhdr, with(rpl, "token_version", 4)),
			"token_version absent":  hs(rhdr, with(rpl, "token_version", nil)),
			"jku":                   hs(with(rhdr, "jku", "https://attacker.example/"), rpl),
			"exp missing":           hs(rhdr, with(rpl, "exp", nil)),
		} {
			t.Run(name, func(t *testing.T) {
				wantOAuthError(t, g.refreshJSON(t, tok), http.StatusBadRequest, "invalid_grant")
			})
		}
		t.Run("control", func(t *testing.T) {
			wantStatus(t, g.refreshJSON(t, hs(rhdr, rpl)), http.StatusOK)
		})
	})
}

func unsignedRefresh(t *testing.T, header map[string]any, payload string) string {
	return jsonSegment(t, header) + "." + payload + "."
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAttackTokenSubstitution: a token of one kind in place of the other, in
// both directions; spliced tokens; a stolen token of a user deleted and
// re-created under the same name.
func TestAttackTokenSubstitution(t *testing.T) {
	g := startAttackGateway(t, "", gwConfig{})
	alice := g.addUser(t, "alice", nil)
	bob := g.addUser(t, "bob", nil)
	la, lb := g.mustLogin(t, "alice", ""), g.mustLogin(t, "bob", "")

	t.Run("refresh token as an access token", func(t *testing.T) {
		wantDenied(t, g.get(t, "/api", la.refresh), http.StatusUnauthorized, challenge("invalid_token"))
		g.backend.wantNone(t)
	})
	t.Run("access token as a refresh token", func(t *testing.T) {
		wantOAuthError(t, g.refreshJSON(t, la.access), http.StatusBadRequest, "invalid_grant")
		wantOAuthError(t, g.postForm(t, "/token", formBody("grant_type", "refresh_token", "refresh_token", la.access)),
			http.StatusBadRequest, "invalid_grant")
	})
	t.Run("spliced segments", func(t *testing.T) {
		ah, ap, as := splitJWT(t, la.access)
		bh, bp, bs := splitJWT(t, lb.access)
		for _, tok := range []string{ah + "." + bp + "." + as, bh + "." + ap + "." + bs, ah + "." + ap + "." + bs} {
			wantDenied(t, g.get(t, "/api", tok), http.StatusUnauthorized, challenge("invalid_token"))
		}
		g.backend.wantNone(t)
	})
	t.Run("alice's token with bob's identity headers", func(t *testing.T) {
		wantStatus(t, g.get(t, "/api", la.access, "X-User-Id", bob.ID, "X-User-Name", "bob"), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "read")
	})
	t.Run("deleted and re-created user", func(t *testing.T) {
		if err := g.st.DeleteUser(context.Background(), alice.ID); err != nil {
			t.Fatal(err)
		}
		again := g.addUser(t, "alice", nil)
		if again.ID == alice.ID || again.TokenVersion != alice.TokenVersion {
			t.Fatalf("re-created user: id %s (was %s), token_version %d (was %d)", again.ID, alice.ID, again.TokenVersion, alice.TokenVersion)
		}
		wantDenied(t, g.get(t, "/api", la.access), http.StatusUnauthorized, challenge("invalid_token"))
		wantOAuthError(t, g.refreshJSON(t, la.refresh), http.StatusBadRequest, "invalid_grant")
		g.backend.wantNone(t)
		// The new alice is unaffected.
		fresh := g.mustLogin(t, "alice", "")
		wantStatus(t, g.get(t, "/api", fresh.access), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), again.ID, "alice", "read")
	})
}

// scopeOf returns the scope of a 200 token response.
func scopeOf(t *testing.T, r *response) string {
	t.Helper()
	s, _ := r.json(t)["scope"].(string)
	return s
}

// TestAttackScopeEscalation: a user allowed read and write asks for admin in
// every way the endpoints could misread.
func TestAttackScopeEscalation(t *testing.T) {
	g := startAttackGateway(t, "", gwConfig{})
	alice := g.addUser(t, "alice", []string{"read", "write"})
	lr := g.mustLogin(t, "alice", "read")

	noAdmin := func(t *testing.T, r *response) {
		t.Helper()
		switch r.status {
		case http.StatusOK:
			if s := scopeOf(t, r); slices.Contains(strings.Fields(s), "admin") {
				t.Fatalf("admin granted: %s", r)
			}
			at := accessOf(t, r)
			wantDenied(t, g.get(t, "/admin/x", at), http.StatusForbidden,
				`Bearer realm="crudauth", error="insufficient_scope", scope="admin"`)
			g.backend.wantNone(t)
		case http.StatusBadRequest:
			code, _ := r.json(t)["error"].(string)
			if code != "invalid_scope" && code != "invalid_request" {
				t.Fatalf("unexpected error %s", r)
			}
		default:
			t.Fatalf("unexpected response %s", r)
		}
	}
	for _, s := range []string{
		"admin", "read write admin", "ADMIN", "Admin", "admin ", " admin", "read  admin", "read\tadmin",
		"read\nadmin", "read\u00a0admin", "read,admin", "read+admin", "admin\x00", "ädmin", `"admin"`,
		"admin*", "*", "read admin:*", `["admin"]`, strings.Repeat("read ", 100) + "admin",
	} {
		t.Run("login scope "+strconv.Quote(s), func(t *testing.T) {
			noAdmin(t, g.login(t, "alice", testPassword, s))
		})
	}
	t.Run("login scope repeated", func(t *testing.T) {
		r := g.postForm(t, "/token", formBody("grant_type", "password", "username", "alice", "password", testPassword, "scope", "read", "scope", "admin"))
		wantOAuthError(t, r, http.StatusBadRequest, "invalid_request")
	})
	t.Run("login scope as a form array", func(t *testing.T) {
		noAdmin(t, g.postForm(t, "/token", formBody("grant_type", "password", "username", "alice", "password", testPassword, "scope[]", "admin")))
	})
	for _, s := range []string{"admin", "read admin", "write", "ADMIN"} {
		t.Run("refresh grant widening to "+strconv.Quote(s), func(t *testing.T) {
			r := g.postForm(t, "/token", formBody("grant_type", "refresh_token", "refresh_token", lr.refresh, "scope", s))
			noAdmin(t, r)
			if r.status == http.StatusOK {
				if got := scopeOf(t, r); got != "read" && got != "" {
					t.Fatalf("refresh widened read to %q", got)
				}
			}
		})
	}
	t.Run("refresh JSON with a scope member", func(t *testing.T) {
		b := `{"refresh_token":"` + lr.refresh + `","scope":"admin write"}`
		r := g.do(t, http.MethodPost, "/refresh", strings.NewReader(b), "Content-Type", "application/json")
		noAdmin(t, r)
		if got := scopeOf(t, r); got != "read" {
			t.Fatalf("scope %q, want read", got)
		}
	})
	for name, b := range map[string]string{
		"refresh_token as an array":  `{"refresh_token":["` + lr.refresh + `"]}`,
		"refresh_token as an object": `{"refresh_token":{"token":"` + lr.refresh + `"}}`,
		"refresh_token twice":        `{"refresh_token":"x","refresh_token":"` + lr.refresh + `"}`,
		"refresh_token in two cases": `{"refresh_token":"` + lr.refresh + `","Refresh_Token":"x"}`,
		"scope as an array":          `{"refresh_token":"` + lr.refresh + `","scope":["admin"]}`,
	} {
		t.Run("refresh JSON "+name, func(t *testing.T) {
			noAdmin(t, g.do(t, http.MethodPost, "/refresh", strings.NewReader(b), "Content-Type", "application/json"))
		})
	}
	t.Run("allowed scopes cut below the token", func(t *testing.T) {
		lw := g.mustLogin(t, "alice", "read write")
		g.updateUser(t, alice.ID, func(u *store.User) { u.AllowedScopes = []string{"read"} })
		r := g.postForm(t, "/token", formBody("grant_type", "refresh_token", "refresh_token", lw.refresh, "scope", "write"))
		if r.status == http.StatusOK && strings.Contains(scopeOf(t, r), "write") {
			t.Fatalf("write survived the cut: %s", r)
		}
		wantDenied(t, g.get(t, "/api", lw.access), http.StatusUnauthorized, challenge("invalid_token"))
	})
}

// TestAttackIdentitySpoofing: identity headers in every spelling, on every
// kind of route and on the token endpoints, and the routing overrides
// frameworks honor, never reach the backend or sway the gateway.
func TestAttackIdentitySpoofing(t *testing.T) {
	g := startAttackGateway(t, "strip_headers X-Tenant-Admin", gwConfig{global: aliasAllowlist})
	alice := g.addUser(t, "alice", nil)
	g.addUser(t, "root", nil)
	lr := g.mustLogin(t, "alice", "")
	spoof := append(slices.Clone(forgedIdentity),
		"X-User-Id", "root, admin", // comma-joined
		"X-User-Id", "root", // duplicated
		"X-User-Scopes", "admin,admin",
		"Connection", "X-User-Id, X-User-Name, X_User_Scopes")

	t.Run("protected route", func(t *testing.T) {
		wantStatus(t, g.get(t, "/api", lr.access, spoof...), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "read")
	})
	t.Run("public route", func(t *testing.T) {
		wantStatus(t, g.get(t, "/public/x", "", spoof...), http.StatusOK)
		wantNoIdentity(t, g.backend.wantOne(t))
		wantStatus(t, g.get(t, "/public/x", lr.access, spoof...), http.StatusOK)
		wantNoIdentity(t, g.backend.wantOne(t))
	})
	t.Run("admin route with a forged admin scope", func(t *testing.T) {
		wantStatus(t, g.get(t, "/admin/x", lr.access, spoof...), http.StatusForbidden)
		g.backend.wantNone(t)
	})
	t.Run("token endpoint", func(t *testing.T) {
		r := g.login(t, "alice", testPassword, "", spoof...)
		at := accessOf(t, r)
		if s := scopeOf(t, r); s != "read" {
			t.Fatalf("scope %q", s)
		}
		wantStatus(t, g.get(t, "/api", at), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "read")
		wantOAuthError(t, g.login(t, "alice", "wrong", "", spoof...), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("refresh endpoint", func(t *testing.T) {
		at := accessOf(t, g.refreshJSON(t, lr.refresh, spoof...))
		wantStatus(t, g.get(t, "/api", at), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "read")
		g.backend.wantNone(t)
	})

	// Other auth layers' identity headers, in several spellings, and one a
	// backend trusts that strip_headers names.
	foreign := []string{
		"X-Forwarded-User", "root", "x-remote-user", "root", "Remote-User", "root", "REMOTE_USER", "root",
		"X-Auth-Request-User", "root", "X-Auth-Request-Email", "root@example.invalid", "X.Forwarded.Email", "root@example.invalid",
		"X-Forwarded-Preferred-Username", "root", "X-WEBAUTH-USER", "root", "x_webauth_user", "root",
		"X-Tenant-Admin", "yes", "x_tenant_admin", "yes", "Remote*User", "root", "X~Forwarded~User", "root",
	}
	t.Run("other auth layers' identity headers are removed", func(t *testing.T) {
		for _, tok := range []string{"", lr.access} {
			for _, target := range []string{"/public/x", "/api"} {
				if tok == "" && target == "/api" {
					continue
				}
				wantStatus(t, g.get(t, target, tok, foreign...), http.StatusOK)
				s := g.backend.wantOne(t)
				for k, v := range s.header {
					n := headers.Normalize(k)
					for _, f := range append(slices.Clone(ForeignIdentityHeaders), "X-Tenant-Admin") {
						if n == headers.Normalize(f) {
							t.Errorf("%s: backend received %s: %q", target, k, v)
						}
					}
				}
			}
		}
	})

	overrides := []string{
		"X-Original-URL", "/public/x", "X-Original-URI", "/public/x", "X-Rewrite-URL", "/public/x",
		"X-Forwarded-Uri", "/public/x", "X-Forwarded-Path", "/public/x", "X-Forwarded-Prefix", "/public",
		"X-HTTP-Method-Override", "DELETE", "X-HTTP-Method", "DELETE", "X-Method-Override", "DELETE",
		"X-Original-Method", "DELETE", "x_original_url", "/public/x",
	}
	t.Run("overrides do not open a protected route", func(t *testing.T) {
		wantDenied(t, g.get(t, "/admin/x", "", overrides...), http.StatusUnauthorized, challenge(""))
		wantDenied(t, g.get(t, "/api", "", overrides...), http.StatusUnauthorized, challenge(""))
		wantStatus(t, g.get(t, "/admin/x", lr.access, overrides...), http.StatusForbidden)
		g.backend.wantNone(t)
	})
	t.Run("overrides are removed before the backend", func(t *testing.T) {
		toAdmin := []string{"X-Original-URL", "/admin/x", "X-Rewrite-URL", "/admin/x", "X-Forwarded-Uri", "/admin/x",
			"X-HTTP-Method-Override", "DELETE", "X-Forwarded-Prefix", "/admin"}
		wantStatus(t, g.get(t, "/public/x", "", toAdmin...), http.StatusOK)
		s := g.backend.wantOne(t)
		if s.path != "/public/x" {
			t.Errorf("backend path %q", s.path)
		}
		for k := range s.header {
			n := headers.Normalize(k)
			for _, o := range gate.RoutingOverrides {
				if n == headers.Normalize(o) {
					t.Errorf("backend received %s: %q", k, s.header[k])
				}
			}
		}
	})
}

// resolveLikeBackend is the most lenient reading a backend might give a
// received path: decoded (twice), `\` as `/`, `;params` dropped, cut at
// NUL, trailing dots and spaces of segments dropped, cleaned, lower case.
func resolveLikeBackend(p string) string {
	for i := 0; i < 3; i++ {
		s, err := url.PathUnescape(p)
		if err != nil || s == p {
			break
		}
		p = s
	}
	if i := strings.IndexByte(p, 0); i >= 0 {
		p = p[:i]
	}
	p = strings.ReplaceAll(p, `\`, "/")
	segs := strings.Split(p, "/")
	for i, seg := range segs { // servlet `;params`; Windows drops trailing dots and spaces
		seg, _, _ = strings.Cut(seg, ";")
		segs[i] = seg
		if seg != "." && seg != ".." {
			segs[i] = strings.TrimRight(seg, ". ")
		}
	}
	return strings.ToLower(path.Clean("/" + strings.Join(segs, "/")))
}

// TestAttackPathTricks: against `require /admin/* admin` next to
// `public /public/*`, no spelling of an /admin/ path reaches the backend
// without the admin scope. The test logs which path the backend received.
func TestAttackPathTricks(t *testing.T) {
	g := startAttackGateway(t, "", gwConfig{})
	g.addUser(t, "alice", nil)
	g.addUser(t, "boss", nil)
	reader := g.mustLogin(t, "alice", "read").access
	admin := g.mustLogin(t, "boss", "read admin").access

	t.Run("control", func(t *testing.T) {
		wantStatus(t, rawRequest(t, "GET", "/admin/x", "Authorization", "Bearer "+admin), http.StatusOK)
		if s := g.backend.wantOne(t); s.path != "/admin/x" {
			t.Fatalf("backend path %q", s.path)
		}
		wantStatus(t, rawRequest(t, "GET", "/admin/x", "Authorization", "Bearer "+reader), http.StatusForbidden)
		wantStatus(t, rawRequest(t, "GET", "/public/x"), http.StatusOK)
		g.backend.take()
	})

	targets := []string{
		"/admin/x", "//admin/x", "///admin//x", "/./admin/x", "/admin/./x", "/public/../admin/x",
		"/public/./../admin/x", "/public/%2e%2e/admin/x", "/public/%2E%2E/admin/x", "/public/.%2e/admin/x",
		"/public/%2e%2e%2fadmin/x", "/public/..%2fadmin/x", "/public%2f..%2fadmin/x", "/%2e/admin/x",
		"/%2fadmin/x", "/admin%2fx", "/%61dmin/x", "/%41DMIN/x", "/public/%252e%252e/admin/x",
		"/public/%252e%252e%252fadmin/x", `/public\..\admin\x`, `/public/..\admin/x`, "/public/..%5cadmin/x",
		"/public%5c..%5cadmin%5cx", "/admin%00/x", "/admin/x%00", "/public/x%00/../../admin/x",
		"/admin;x/y", "/admin;/x", "/public;/../admin/x", "/public/..;/admin/x", "/public/x/..;/..;/admin/x",
		"/admin%3bx/y", "/public/..%3b/admin/x", "/ADMIN/x", "/Admin/X", "/aDmIn/./x", "/admin./x",
		"/admin%20/x", "/admin%09/x", "/admin%2e/x", "/admin.%20./x", "/public/..%2e/admin/x", "/public/../../admin/x", "/admin/x?y=/public/x", "/admin/x#/public/",
		"/public/x/../../admin/x", "/public//../admin/x",
	}
	for _, tok := range []struct{ name, access string }{{"no token", ""}, {"token without admin", reader}} {
		t.Run(tok.name, func(t *testing.T) {
			for _, target := range targets {
				var hdr []string
				if tok.access != "" {
					hdr = []string{"Authorization", "Bearer " + tok.access}
				}
				r := rawRequest(t, "GET", target, hdr...)
				seen := g.backend.take()
				if len(seen) == 0 {
					t.Logf("%-36s -> %d, backend saw nothing", target, r.status)
					if r.status == http.StatusOK {
						t.Errorf("%s: 200 without reaching the backend", target)
					}
					continue
				}
				s := seen[0]
				resolved := resolveLikeBackend(s.requestURI[:strings.IndexAny(s.requestURI+"?", "?")])
				t.Logf("%-36s -> %d, backend path %q (raw %q), resolves to %q", target, r.status, s.path, s.requestURI, resolved)
				if resolved == "/admin" || strings.HasPrefix(resolved, "/admin/") {
					t.Errorf("BYPASS: %s reached the backend as %q (resolves to %s) without the admin scope", target, s.requestURI, resolved)
				}
			}
		})
	}
}

// TestAttackThrottling: the lockout sequence, its escalation, spraying, the
// victim's refresh during a lockout, and the client IP.
func TestAttackThrottling(t *testing.T) {
	g := newGateway(t)
	t.Setenv("CRUDAUTH_ATTACK_SECRET", attackSecret)
	load := func(t *testing.T, throttle, global string) {
		t.Helper()
		g.load(t, gwConfig{auth: attackAuth + "\n\t\tthrottle {\n" + throttle + "\n\t\t}", global: global})
	}
	g.addUser(t, "alice", nil)
	g.addUser(t, "bob", nil)
	wrong := func(t *testing.T, user string, hdr ...string) *response {
		t.Helper()
		return g.login(t, user, "wrong-password", "", hdr...)
	}

	t.Run("lockout sequence", func(t *testing.T) {
		load(t, "max_entries 1001", "")
		for i := 1; i <= 5; i++ {
			wantOAuthError(t, wrong(t, "alice"), http.StatusBadRequest, "invalid_grant")
		}
		before := loginHashes.started.Load()
		locked := wrong(t, "alice")
		wantOAuthError(t, locked, http.StatusTooManyRequests, "temporarily_unavailable")
		ra, err := strconv.Atoi(locked.header.Get("Retry-After"))
		if err != nil || ra < 55 || ra > 60 {
			t.Errorf("Retry-After %q, want about 60", locked.header.Get("Retry-After"))
		}
		right := g.login(t, "alice", testPassword, "")
		wantOAuthError(t, right, http.StatusTooManyRequests, "temporarily_unavailable")
		if string(right.body) != string(locked.body) {
			t.Errorf("lockout is an oracle: right password %q, wrong %q", right.body, locked.body)
		}
		if sameCase := g.login(t, "ALICE", testPassword, ""); sameCase.status != http.StatusTooManyRequests {
			t.Errorf("another spelling of the name escapes the lockout: %s", sameCase)
		}
		if n := loginHashes.started.Load() - before; n != 0 {
			t.Errorf("%d hash(es) ran for locked logins", n)
		}
		// Another user from the same client is not locked.
		wantStatus(t, g.login(t, "bob", testPassword, ""), http.StatusOK)
	})

	t.Run("escalation", func(t *testing.T) {
		load(t, "lockout 1s\n max_lockout 1h", "")
		for round, want := range []int{1, 2, 4} {
			for i := 0; i < 5; i++ {
				wantStatus(t, wrong(t, "alice"), http.StatusBadRequest)
			}
			r := wrong(t, "alice")
			wantStatus(t, r, http.StatusTooManyRequests)
			if got := r.header.Get("Retry-After"); got != strconv.Itoa(want) {
				t.Fatalf("round %d: Retry-After %q, want %d", round+1, got, want)
			}
			time.Sleep(time.Duration(want)*time.Second + 100*time.Millisecond)
		}
		wantStatus(t, g.login(t, "alice", testPassword, ""), http.StatusOK)
	})

	t.Run("success clears the pair", func(t *testing.T) {
		load(t, "max_entries 1002", "")
		for i := 0; i < 4; i++ {
			wantStatus(t, wrong(t, "alice"), http.StatusBadRequest)
		}
		wantStatus(t, g.login(t, "alice", testPassword, ""), http.StatusOK)
		for i := 0; i < 4; i++ {
			wantStatus(t, wrong(t, "alice"), http.StatusBadRequest)
		}
		wantStatus(t, g.login(t, "alice", testPassword, ""), http.StatusOK)
	})

	t.Run("spraying", func(t *testing.T) {
		load(t, "max_entries 1003", "")
		for i := 0; i < 20; i++ {
			wantStatus(t, wrong(t, fmt.Sprintf("user%02d", i)), http.StatusBadRequest)
		}
		wantStatus(t, wrong(t, "user99"), http.StatusTooManyRequests)
		wantStatus(t, g.login(t, "alice", testPassword, ""), http.StatusTooManyRequests)
	})

	t.Run("victim keeps refreshing during a lockout", func(t *testing.T) {
		load(t, "max_entries 1004", "")
		victim := g.mustLogin(t, "alice", "")
		for i := 0; i < 6; i++ {
			wrong(t, "alice")
		}
		wantStatus(t, g.login(t, "alice", testPassword, ""), http.StatusTooManyRequests)
		at := accessOf(t, g.refreshJSON(t, victim.refresh))
		accessOf(t, g.postForm(t, "/token", formBody("grant_type", "refresh_token", "refresh_token", victim.refresh)))
		wantStatus(t, g.get(t, "/api", at), http.StatusOK)
		wantStatus(t, g.get(t, "/api", victim.access), http.StatusOK)
		g.backend.take()
	})

	t.Run("X-Forwarded-For is not believed from an untrusted client", func(t *testing.T) {
		load(t, "max_entries 1005", "")
		for i := 0; i < 5; i++ {
			wrong(t, "alice", "X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i))
		}
		wantStatus(t, wrong(t, "alice", "X-Forwarded-For", "198.51.100.7"), http.StatusTooManyRequests)
	})

	t.Run("username locked across trusted client IPs", func(t *testing.T) {
		load(t, "max_entries 1006", "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/8 ::1/128\n\t\tclient_ip_headers X-Forwarded-For\n\t}")
		for i := 0; i < 10; i++ {
			// two failures per IP: no pair reaches its limit of 5
			wantStatus(t, wrong(t, "alice", "X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i/2)), http.StatusBadRequest)
		}
		wantStatus(t, g.login(t, "alice", testPassword, "", "X-Forwarded-For", "198.51.100.7"), http.StatusTooManyRequests)
		// and the pair lock is per IP when the IP is trusted
		for i := 0; i < 5; i++ {
			wrong(t, "bob", "X-Forwarded-For", "192.0.2.1")
		}
		wantStatus(t, g.login(t, "bob", testPassword, "", "X-Forwarded-For", "192.0.2.1"), http.StatusTooManyRequests)
		wantStatus(t, g.login(t, "bob", testPassword, "", "X-Forwarded-For", "192.0.2.2"), http.StatusOK)
	})
}

// timeFailedLogin times one login of user with a wrong password, which must
// be refused with invalid_grant.
func (g *gateway) timeFailedLogin(t *testing.T, user string) time.Duration {
	t.Helper()
	start := time.Now()
	r := g.login(t, user, "wrong-password", "")
	d := time.Since(start)
	wantOAuthError(t, r, http.StatusBadRequest, "invalid_grant")
	return d
}

// TestAttackTimingEnumeration: an unknown username costs as much as a wrong
// password for a known one. Compared as a ratio of medians, with a generous
// bound: without the dummy hash the ratio is 20 or more.
func TestAttackTimingEnumeration(t *testing.T) {
	g := startAttackGateway(t, "throttle off", gwConfig{})
	g.addUser(t, "alice", nil)
	measure := func(user string) time.Duration { return g.timeFailedLogin(t, user) }
	measure("alice") // warm up
	var known, unknown []time.Duration
	for i := 0; i < 15; i++ {
		known = append(known, measure("alice"))
		unknown = append(unknown, measure(fmt.Sprintf("nobody%d", i)))
	}
	median := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	mk, mu := median(known), median(unknown)
	ratio := float64(mk) / float64(mu)
	t.Logf("median wrong password %v, unknown user %v, ratio %.2f", mk, mu, ratio)
	if ratio > 3 || ratio < 1.0/3 {
		t.Errorf("login time tells users apart: wrong password %v vs unknown user %v (ratio %.2f)", mk, mu, ratio)
	}
}

// TestAttackCookieMode: the refresh cookie's attributes, cross-site callers,
// and a cookie and a body both present.
func TestAttackCookieMode(t *testing.T) {
	t.Setenv("CRUDAUTH_ATTACK_SECRET", attackSecret)
	g := startGateway(t, gwConfig{auth: strings.Replace(attackAuth, "refresh body", "refresh cookie", 1)})
	alice := g.addUser(t, "alice", nil)
	g.addUser(t, "bob", nil)
	la := g.mustLogin(t, "alice", "")

	t.Run("cookie attributes", func(t *testing.T) {
		c := la.cookie
		if c == nil {
			t.Fatal("no refresh cookie")
		}
		if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/refresh" ||
			c.Domain != "" || c.MaxAge <= 0 || !strings.HasPrefix(c.Name, "__Secure-") {
			t.Errorf("cookie attributes: %+v", c)
		}
		if _, ok := la.resp.json(t)["refresh_token"]; ok {
			t.Error("refresh token also in the body")
		}
	})
	for name, hdr := range map[string][]string{
		"Origin of another site":  {"Origin", "https://evil.example"},
		"Origin null":             {"Origin", "null"},
		"Origin with a path":      {"Origin", "http://localhost:9080/x"},
		"two Origins":             {"Origin", "http://localhost:9080", "Origin", "https://evil.example"},
		"Sec-Fetch-Site":          {"Sec-Fetch-Site", "cross-site"},
		"Origin of a lookalike":   {"Origin", "http://localhost:9080.evil.example"},
		"Origin on another port":  {"Origin", "http://localhost:9081"},
		"Origin with userinfo":    {"Origin", "http://localhost:9080@evil.example"},
		"Origin of another proto": {"Origin", "ftp://evil.example"},
	} {
		t.Run("cross-site "+name, func(t *testing.T) {
			wantOAuthError(t, g.refreshCookie(t, la.refresh, hdr...), http.StatusForbidden, "invalid_request")
			wantOAuthError(t, g.login(t, "alice", testPassword, "", hdr...), http.StatusForbidden, "invalid_request")
		})
	}
	t.Run("same origin", func(t *testing.T) {
		accessOf(t, g.refreshCookie(t, la.refresh, "Origin", "http://localhost:9080"))
	})
	t.Run("cookie and body both present: the cookie counts", func(t *testing.T) {
		lb := g.mustLogin(t, "bob", "")
		b, _ := json.Marshal(map[string]string{"refresh_token": lb.refresh})
		r := g.do(t, http.MethodPost, "/refresh", strings.NewReader(string(b)),
			"Content-Type", "application/json", "Cookie", DefaultCookieName+"="+la.refresh)
		wantStatus(t, g.get(t, "/api", accessOf(t, r)), http.StatusOK)
		wantIdentity(t, g.backend.wantOne(t), alice.ID, "alice", "read")
	})
	t.Run("refresh cookie never reaches the backend", func(t *testing.T) {
		wantStatus(t, g.get(t, "/api", la.access, "Cookie", DefaultCookieName+"="+la.refresh+"; other=1"), http.StatusOK)
		s := g.backend.wantOne(t)
		for _, c := range s.cookies {
			if c.Name == DefaultCookieName {
				t.Error("refresh cookie forwarded")
			}
		}
	})
}

// TestAttackLimits: oversized and malformed inputs are refused before any
// hash, and the hashing cap holds under 200 concurrent logins.
func TestAttackLimits(t *testing.T) {
	g := startAttackGateway(t, "throttle off\n\t\tmax_concurrent_hashes 1\n\t\thash_queue_timeout 200ms", gwConfig{})
	g.addUser(t, "alice", nil)
	login := func(kv ...string) string { return formBody(append([]string{"grant_type", "password"}, kv...)...) }
	big := strings.Repeat("a", endpoints.MaxBody)

	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   string
		hdr    []string
		status int
		code   string
	}{
		{"token body over the cap", "POST", "/token", login("username", "alice", "password", big), []string{"Content-Type", formType}, 413, "invalid_request"},
		{"refresh body over the cap", "POST", "/refresh", `{"refresh_token":"` + big + `"}`, []string{"Content-Type", "application/json"}, 413, "invalid_request"},
		{"username over the cap", "POST", "/token", login("username", strings.Repeat("u", 257), "password", testPassword), []string{"Content-Type", formType}, 400, "invalid_request"},
		{"password over the cap", "POST", "/token", login("username", "alice", "password", strings.Repeat("p", password.MaxBytes+1)), []string{"Content-Type", formType}, 400, "invalid_request"},
		{"too many scopes", "POST", "/token", login("username", "alice", "password", testPassword, "scope", strings.TrimSpace(strings.Repeat("s ", 65))+" "+manyScopeNames(65)), []string{"Content-Type", formType}, 400, "invalid_scope"},
		{"scope too long", "POST", "/token", login("username", "alice", "password", testPassword, "scope", strings.Repeat("s", 129)), []string{"Content-Type", formType}, 400, "invalid_scope"},
		{"duplicated field", "POST", "/token", login("username", "alice", "password", testPassword, "password", "x"), []string{"Content-Type", formType}, 400, "invalid_request"},
		{"credentials in the query", "POST", "/token?username=alice&password=" + testPassword, login(), []string{"Content-Type", formType}, 400, "invalid_request"},
		{"multipart body", "POST", "/token", "--b\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n--b--\r\n", []string{"Content-Type", "multipart/form-data; boundary=b"}, 400, "invalid_request"},
		{"JSON login", "POST", "/token", `{"username":"alice","password":"` + testPassword + `"}`, []string{"Content-Type", "application/json"}, 400, "invalid_request"},
		{"invalid UTF-8", "POST", "/token", "grant_type=password&username=alice\xff&password=" + testPassword, []string{"Content-Type", formType}, 400, "invalid_request"},
		{"percent-encoded invalid UTF-8", "POST", "/token", "grant_type=password&username=alice%ff&password=" + testPassword, []string{"Content-Type", formType}, 400, "invalid_request"},
		{"control character in the username", "POST", "/token", login("username", "alice\x00", "password", testPassword), []string{"Content-Type", formType}, 400, "invalid_request"},
		{"newline in the username", "POST", "/token", login("username", "alice\nadmin", "password", testPassword), []string{"Content-Type", formType}, 400, "invalid_request"},
		{"GET login", "GET", "/token", "", nil, 405, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := loginHashes.started.Load()
			r := g.do(t, tc.method, tc.path, strings.NewReader(tc.body), tc.hdr...)
			wantOAuthError(t, r, tc.status, tc.code)
			if n := loginHashes.started.Load() - before; n != 0 {
				t.Errorf("%d hash(es) ran for a refused request", n)
			}
		})
	}
	t.Run("chunked body over the cap", func(t *testing.T) {
		before := loginHashes.started.Load()
		req, _ := http.NewRequest("POST", gatewayURL+"/token", &slowReader{s: login("username", "alice", "password", big)})
		req.Header.Set("Content-Type", formType)
		resp, err := g.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413", resp.StatusCode)
		}
		if loginHashes.started.Load() != before {
			t.Error("a hash ran")
		}
	})
	t.Run("header block over the server's limit", func(t *testing.T) {
		r := g.get(t, "/api", "", "X-Big", strings.Repeat("h", 1<<20+10))
		wantStatus(t, r, http.StatusRequestHeaderFieldsTooLarge)
		g.backend.wantNone(t)
	})

	t.Run("200 concurrent logins", func(t *testing.T) {
		loginHashes.peak.Store(loginHashes.inFlight.Load())
		before := loginHashes.started.Load()
		var mu sync.Mutex
		counts := map[int]int{}
		var wg sync.WaitGroup
		start := make(chan struct{})
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for i := 0; i < 200; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				req, _ := http.NewRequest("POST", gatewayURL+"/token",
					strings.NewReader(login("username", "alice", "password", testPassword)))
				req.Header.Set("Content-Type", formType)
				resp, err := client.Do(req)
				status := -1
				if err == nil {
					status = resp.StatusCode
					if status == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
						status = -2
					}
					resp.Body.Close()
				}
				mu.Lock()
				counts[status]++
				mu.Unlock()
			}()
		}
		close(start)
		wg.Wait()
		hashed := loginHashes.started.Load() - before
		t.Logf("responses %v, hashes run %d, peak concurrent %d", counts, hashed, loginHashes.peak.Load())
		if counts[http.StatusOK]+counts[http.StatusServiceUnavailable] != 200 {
			t.Errorf("responses other than 200 and 503 with Retry-After: %v", counts)
		}
		if counts[http.StatusServiceUnavailable] == 0 {
			t.Error("no login was turned away: the cap was not exercised")
		}
		if p := loginHashes.peak.Load(); p > 1 {
			t.Errorf("%d hashes ran at once, cap 1", p)
		}
		if hashed != int64(counts[http.StatusOK]) {
			t.Errorf("%d hashes for %d successful logins: a refused login was hashed", hashed, counts[http.StatusOK])
		}
	})
}

func manyScopeNames(n int) string {
	var s []string
	for i := 0; i < n; i++ {
		s = append(s, "s"+strconv.Itoa(i))
	}
	return strings.Join(s, " ")
}

// slowReader hides its length, so the client sends the body chunked.
type slowReader struct {
	s string
	i int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.i >= len(r.s) {
		return 0, io.EOF
	}
	n := copy(p, r.s[r.i:])
	r.i += n
	return n, nil
}
