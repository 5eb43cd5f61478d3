package caddymodule

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/crudauth/caddy-crudauth/internal/keys"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// jwksOf fetches the gateway's JWKS and returns its keys by kid.
func (g *gateway) jwksOf(t *testing.T) map[string]map[string]string {
	t.Helper()
	r := g.get(t, DefaultJWKSPath, "")
	wantStatus(t, r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); ct != "application/jwk-set+json" {
		t.Fatalf("JWKS Content-Type %q", ct)
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(r.body), &set); err != nil {
		t.Fatalf("JWKS %q: %v", r.body, err)
	}
	out := map[string]map[string]string{}
	for _, k := range set.Keys {
		if k["d"] != "" || k["use"] != "sig" || k["kid"] == "" {
			t.Fatalf("JWK %v: want a kid, use sig and no private member", k)
		}
		out[k["kid"]] = k
	}
	return out
}

// publicKeyOf turns a JWK of the gateway's into a Go public key.
func publicKeyOf(t *testing.T, k map[string]string) any {
	t.Helper()
	x, err := b64.DecodeString(k["x"])
	if err != nil {
		t.Fatal(err)
	}
	switch k["kty"] {
	case "OKP":
		return ed25519.PublicKey(x)
	case "EC":
		y, err := b64.DecodeString(k["y"])
		if err != nil {
			t.Fatal(err)
		}
		return &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
	}
	t.Fatalf("JWK kty %q", k["kty"])
	return nil
}

// TestSigningAlgGateway runs the gateway on EdDSA and on ES256: tokens
// name their key and verify against the published JWKS alone (as an
// upstream would), the metadata points to it, the key survives a reload,
// and the Authorization header reaches the backend only with
// forward_token on.
func TestSigningAlgGateway(t *testing.T) {
	for _, alg := range []string{"EdDSA", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			g := newGateway(t)
			cfg := gwConfig{auth: "refresh body\n\t\tdefault_scopes me:read\n\t\tsigning_alg " + alg}
			g.load(t, cfg)
			g.addUser(t, "alice", nil)
			lr := g.mustLogin(t, "alice", "")
			h, _, _ := splitJWT(t, lr.access)
			hdr := decodeSegment(t, h)
			kid, _ := hdr["kid"].(string)
			if hdr["alg"] != alg || kid == "" {
				t.Fatalf("token header %v, want alg %s and a kid", hdr, alg)
			}
			wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
			seen := g.backend.wantOne(t)
			if v := seen.header.Values("Authorization"); len(v) != 0 {
				t.Fatalf("the backend got Authorization %q with forward_token off", v)
			}

			jwks := g.jwksOf(t)
			if len(jwks) != 1 || jwks[kid] == nil || jwks[kid]["alg"] != alg {
				t.Fatalf("JWKS %v, want the one key %s", jwks, kid)
			}
			r := g.get(t, DefaultJWKSPath, "")
			if cc := r.header.Get("Cache-Control"); cc != "public, max-age=300" {
				t.Fatalf("JWKS Cache-Control %q", cc)
			}
			// An upstream with nothing but the JWKS verifies the token.
			pub := publicKeyOf(t, jwks[kid])
			if _, err := jwt.Parse(lr.access, func(*jwt.Token) (any, error) { return pub, nil },
				jwt.WithValidMethods([]string{alg}), jwt.WithAudience(DefaultAudience), jwt.WithIssuer(DefaultIssuer)); err != nil {
				t.Fatalf("verifying with the published key: %v", err)
			}

			md := g.get(t, DefaultMetadataPath, "").json(t)
			if md["issuer"] != DefaultIssuer || md["token_endpoint"] != "http://localhost:9080/token" ||
				md["jwks_uri"] != "http://localhost:9080"+DefaultJWKSPath {
				t.Fatalf("metadata %v", md)
			}
			g.backend.wantNone(t) // the discovery endpoints are the gateway's own

			// A reload keeps the key: tokens issued before still work.
			cfg.auth += "\n\t\tforward_token on"
			g.load(t, cfg)
			wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK)
			if v := g.backend.wantOne(t).header.Get("Authorization"); v != "Bearer "+lr.access {
				t.Fatalf("with forward_token on the backend got Authorization %q", v)
			}
			if got := g.jwksOf(t); len(got) != 1 || got[kid] == nil {
				t.Fatalf("after a reload the JWKS is %v, want %s alone", got, kid)
			}
			wantStatus(t, g.refreshJSON(t, lr.refresh), http.StatusOK)
		})
	}
}

// TestKeyRotationGateway rotates the key under a running gateway: the new
// key is published at once but signs only after key_publish_delay; the
// old one keeps verifying its tokens.
func TestKeyRotationGateway(t *testing.T) {
	g := newGateway(t)
	g.load(t, gwConfig{auth: "refresh body\n\t\tsigning_alg EdDSA\n\t\tkey_publish_delay 2s"})
	g.addUser(t, "alice", nil)
	before := g.mustLogin(t, "alice", "")
	oldKid := decodeSegment(t, strings.Split(before.access, ".")[0])["kid"].(string)

	k, err := keys.Rotate(context.Background(), g.st, store.AlgEdDSA, time.Now(), 2*time.Second, 0)
	if err != nil {
		t.Fatal(err)
	}
	if jwks := g.jwksOf(t); jwks[oldKid] == nil || jwks[k.ID] == nil {
		t.Fatalf("right after the rotation the JWKS holds %v, want both keys", jwks)
	}
	if r := g.get(t, DefaultJWKSPath, ""); r.header.Get("Cache-Control") != "public, max-age=1" {
		t.Fatalf("JWKS Cache-Control %q, want half the publish delay", r.header.Get("Cache-Control"))
	}
	kidOf := func(tok string) string { return decodeSegment(t, strings.Split(tok, ".")[0])["kid"].(string) }
	if got := kidOf(g.mustLogin(t, "alice", "").access); got != oldKid {
		t.Fatalf("during the publish delay a login was signed by %s, want the old key %s", got, oldKid)
	}
	time.Sleep(time.Until(k.SignFrom) + 100*time.Millisecond)
	after := g.mustLogin(t, "alice", "")
	if got := kidOf(after.access); got != k.ID {
		t.Fatalf("after the delay a login was signed by %s, want the new key %s", got, k.ID)
	}
	for _, tok := range []string{before.access, after.access} {
		wantStatus(t, g.get(t, "/api", tok), http.StatusOK)
	}
	g.backend.take()
}

// TestAttackAlgorithmConfusion forges tokens against an EdDSA gateway: an
// HS256 signature made with the published public key as the HMAC secret
// (in each form an attacker could take it), a kid the gateway never made,
// and a key retired while its token was cached. None reaches the backend.
func TestAttackAlgorithmConfusion(t *testing.T) {
	g := newGateway(t)
	g.load(t, gwConfig{auth: "refresh body\n\t\tdefault_scopes me:read\n\t\tsigning_alg EdDSA"})
	g.addUser(t, "alice", nil)
	lr := g.mustLogin(t, "alice", "")
	h, payload, _ := splitJWT(t, lr.access)
	kid := decodeSegment(t, h)["kid"].(string)
	jwk := g.jwksOf(t)[kid]
	pub := publicKeyOf(t, jwk).(ed25519.PublicKey)
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	jwkJSON, _ := json.Marshal(jwk)
	forge := func(alg, kid string, key any) string {
		t.Helper()
		hs := encodeSegment(t, map[string]string{"alg": alg, "typ": "at+jwt", "kid": kid})
		sig, err := jwt.GetSigningMethod(alg).Sign(hs+"."+payload, key)
		if err != nil {
			t.Fatal(err)
		}
		return hs + "." + payload + "." + b64.EncodeToString(sig)
	}
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	for name, tok := range map[string]string{
		"HS256, raw public key as secret":  forge("HS256", kid, []byte(pub)),
		"HS256, PKIX public key as secret": forge("HS256", kid, der),
		"HS256, the JWK's x as secret":     forge("HS256", kid, []byte(jwk["x"])),
		"HS256, the JWK JSON as secret":    forge("HS256", kid, jwkJSON),
		"EdDSA, unknown kid":               forge("EdDSA", "not-a-key-of-ours", otherPriv),
		"EdDSA, our kid, another key":      forge("EdDSA", kid, otherPriv),
	} {
		t.Run(name, func(t *testing.T) {
			wantDenied(t, g.get(t, "/api", tok), http.StatusUnauthorized, challenge("invalid_token"))
			g.backend.wantNone(t)
		})
	}

	t.Run("retired kid", func(t *testing.T) {
		wantStatus(t, g.get(t, "/api", lr.access), http.StatusOK) // verified, cached
		g.backend.take()
		if _, repl, err := keys.Retire(context.Background(), g.st, kid, time.Now()); err != nil || repl == nil {
			t.Fatalf("Retire: %v (replacement %v)", err, repl)
		}
		wantDenied(t, g.get(t, "/api", lr.access), http.StatusUnauthorized, challenge("invalid_token"))
		wantOAuthError(t, g.refreshJSON(t, lr.refresh), http.StatusBadRequest, "invalid_grant")
		g.backend.wantNone(t)
		if jwks := g.jwksOf(t); jwks[kid] != nil || len(jwks) != 1 {
			t.Fatalf("after retiring %s the JWKS holds %v", kid, jwks)
		}
		// Logins go on, with the replacement key.
		fresh := g.mustLogin(t, "alice", "")
		wantStatus(t, g.get(t, "/api", fresh.access), http.StatusOK)
		g.backend.wantOne(t)
	})
}
