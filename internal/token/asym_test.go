package token

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func newEdKey(tb testing.TB, id string) Key {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return Key{ID: id, Private: priv, Public: pub}
}

func newECKey(tb testing.TB, id string) Key {
	tb.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return Key{ID: id, Private: priv, Public: &priv.PublicKey}
}

func newKey(tb testing.TB, alg, id string) Key {
	if alg == AlgEdDSA {
		return newEdKey(tb, id)
	}
	return newECKey(tb, id)
}

func newAsymManager(tb testing.TB, alg string, signer string, keys ...Key) (*Manager, *clock) {
	tb.Helper()
	m, clk := newTestManager(tb, func(c *Config) { c.Alg, c.Key = alg, nil })
	if err := m.SetKeys(signer, keys); err != nil {
		tb.Fatal(err)
	}
	return m, clk
}

func verifyOnly(k Key) Key { k.Private = nil; return k }

func TestAsymmetricRoundTrip(t *testing.T) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		t.Run(alg, func(t *testing.T) {
			k := newKey(t, alg, "k1")
			m, _ := newAsymManager(t, alg, "k1", k)
			if m.Alg() != alg || m.KeyID() != "k1" {
				t.Fatalf("Alg, KeyID = %q, %q", m.Alg(), m.KeyID())
			}
			subj := Subject{UserID: "u1", TokenVersion: 3}
			at, _, err := m.IssueAccess(subj)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf(`{"alg":%q,"typ":"at+jwt","kid":"k1"}`, alg)
			if h := decodeSegment(t, at, 0); h != want {
				t.Fatalf("header %s, want %s", h, want)
			}
			c, err := m.VerifyAccess(at)
			if err != nil || c.UserID != "u1" || c.TokenVersion != 3 {
				t.Fatalf("VerifyAccess = %+v, %v", c, err)
			}
			rt, _, err := m.IssueRefresh(subj)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.VerifyRefresh(rt); err != nil {
				t.Fatal(err)
			}
			if _, err := m.VerifyAccess(rt); !errors.Is(err, ErrWrongType) {
				t.Fatalf("refresh token as access token: %v", err)
			}
			// A verifier holding only the public key accepts it too.
			v, _ := newAsymManager(t, alg, "", verifyOnly(k))
			if _, err := v.VerifyAccess(at); err != nil {
				t.Fatalf("public-key-only verifier: %v", err)
			}
			if _, _, err := v.IssueAccess(subj); !errors.Is(err, ErrNoSigningKey) {
				t.Fatalf("IssueAccess without a signer: %v", err)
			}
		})
	}
}

func decodeSegment(tb testing.TB, tok string, i int) string {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[i])
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// TestSetKeysRotation: a key left out of the set is refused at once, even
// for a token verified (and cached) before; a key kept verifies tokens it
// signed after another key took over signing.
func TestSetKeysRotation(t *testing.T) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		t.Run(alg, func(t *testing.T) {
			k1, k2 := newKey(t, alg, "k1"), newKey(t, alg, "k2")
			m, _ := newAsymManager(t, alg, "k1", k1)
			old, _, err := m.IssueAccess(Subject{UserID: "u"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.VerifyAccess(old); err != nil { // now cached
				t.Fatal(err)
			}
			// k2 published, then signing; k1 still verifies.
			if err := m.SetKeys("k1", []Key{k1, verifyOnly(k2)}); err != nil {
				t.Fatal(err)
			}
			if err := m.SetKeys("k2", []Key{k1, k2}); err != nil {
				t.Fatal(err)
			}
			if m.KeyID() != "k2" {
				t.Fatalf("KeyID = %q", m.KeyID())
			}
			fresh, _, _ := m.IssueAccess(Subject{UserID: "u"})
			for _, tok := range []string{old, fresh} {
				if _, err := m.VerifyAccess(tok); err != nil {
					t.Fatalf("during the overlap: %v", err)
				}
			}
			// k1 leaves (its tokens expired, or it was retired): its token
			// is refused from the next call on, cache or not.
			if err := m.SetKeys("k2", []Key{k2}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.VerifyAccess(old); !errors.Is(err, ErrSignature) {
				t.Fatalf("token of a removed key: %v, want ErrSignature", err)
			}
			if _, err := m.VerifyAccess(fresh); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestAlgorithmConfusion: the alg of a token is pinned by its key; a token
// whose alg differs from its key's is refused, however it was signed.
func TestAlgorithmConfusion(t *testing.T) {
	ed := newEdKey(t, "ed")
	ec := newECKey(t, "ec")
	edM, _ := newAsymManager(t, AlgEdDSA, "ed", ed)
	ecM, _ := newAsymManager(t, AlgES256, "ec", ec)
	pubDER, err := x509.MarshalPKIXPublicKey(ed.Public)
	if err != nil {
		t.Fatal(err)
	}
	payload := with(nil)
	header := func(alg, kid string) string {
		return fmt.Sprintf(`{"alg":%q,"typ":"at+jwt","kid":%q}`, alg, kid)
	}
	ecOther := newECKey(t, "ed") // an ES256 key that claims the EdDSA key's kid
	cases := []struct {
		name string
		m    *Manager
		tok  string
	}{
		{"HS256 with the raw Ed25519 public key as secret", edM,
			signRaw(t, "HS256", []byte(ed.Public.(ed25519.PublicKey)), header("HS256", "ed"), payload)},
		{"HS256 with the PKIX public key as secret", edM,
			signRaw(t, "HS256", pubDER, header("HS256", "ed"), payload)},
		{"ES256 naming the EdDSA kid", edM,
			signRaw(t, "ES256", ecOther.Private, header("ES256", "ed"), payload)},
		{"EdDSA naming the ES256 kid", ecM,
			signRaw(t, "EdDSA", ed.Private, header("EdDSA", "ec"), payload)},
		{"alg none", edM, signRaw(t, "", nil, header("none", "ed"), payload)},
		{"unknown kid", edM, signRaw(t, "EdDSA", newEdKey(t, "x").Private, header("EdDSA", "nope"), payload)},
		{"right kid, another key's signature", edM, signRaw(t, "EdDSA", newEdKey(t, "x").Private, header("EdDSA", "ed"), payload)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.m.VerifyAccess(c.tok)
			if err == nil {
				t.Fatal("accepted")
			}
			if k := kindOf(t, err); k != ErrSignature && k != ErrMalformed {
				t.Fatalf("error %v, want a signature error", err)
			}
		})
	}
	// The same header and payload signed properly do verify: the refusals
	// above are for the alg and key, not the payload.
	if _, err := edM.VerifyAccess(signRaw(t, "EdDSA", ed.Private, header("EdDSA", "ed"), payload)); err != nil {
		t.Fatalf("a proper EdDSA token: %v", err)
	}
}

func TestSetKeysRefuses(t *testing.T) {
	ed, ec := newEdKey(t, "ed"), newECKey(t, "ec")
	other := newEdKey(t, "other")
	edM, _ := newAsymManager(t, AlgEdDSA, "ed", ed)
	hs, _ := newTestManager(t, nil)
	cases := []struct {
		name   string
		m      *Manager
		signer string
		keys   []Key
	}{
		{"HS256 manager", hs, "ed", []Key{ed}},
		{"ES256 key in an EdDSA set", edM, "ec", []Key{ec}},
		{"signer absent", edM, "nope", []Key{ed}},
		{"signer without private key", edM, "ed", []Key{verifyOnly(ed)}},
		{"private key of another public key", edM, "ed", []Key{{ID: "ed", Private: other.Private, Public: ed.Public}}},
		{"duplicate id", edM, "ed", []Key{ed, ed}},
		{"no id", edM, "", []Key{{Public: ed.Public}}},
		{"no public key", edM, "", []Key{{ID: "x"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.m.SetKeys(c.signer, c.keys); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	// A refused SetKeys leaves the set as it was.
	if edM.KeyID() != "ed" {
		t.Fatalf("KeyID = %q after refusals", edM.KeyID())
	}
	for _, cfg := range []Config{
		{Alg: "RS256", Issuer: testIss, Audience: testAud},
		{Alg: AlgEdDSA, Key: testKey, Issuer: testIss, Audience: testAud},
	} {
		if _, err := New(cfg); err == nil {
			t.Fatalf("New(%+v) accepted", cfg.Alg)
		}
	}
}
