package upstreamtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	gjwt "github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/crudauth/caddy-crudauth/caddymodule"
	"github.com/crudauth/caddy-crudauth/internal/keys"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// upstream is a service behind the gateway that verifies the bearer it
// receives on its own, as the docs tell upstreams to: the keys come from
// the gateway's JWKS (found through its RFC 8414 metadata) by way of
// jwx's jwk.Cache, which refetches the set when the Cache-Control max-age
// of the last answer has passed. The algorithm comes from the JWK, never
// from the token.
type upstream struct {
	cache    *jwk.Cache
	jwksURI  string
	issuer   string
	audience string

	mu       sync.Mutex
	verdicts []error // one per request, nil for accepted
	fetches  []time.Time
}

// start discovers the gateway's issuer and JWKS and fills the cache.
func (u *upstream) start(t *testing.T) {
	t.Helper()
	status, body := get(t, gateway+caddymodule.DefaultMetadataPath, "")
	var md struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &md); err != nil || status != http.StatusOK || md.JWKSURI == "" {
		t.Fatalf("metadata: %d %s", status, body)
	}
	// RFC 8414 metadata has no audience: the upstream is configured with
	// the gateway's, as it would be.
	u.jwksURI, u.issuer, u.audience = md.JWKSURI, md.Issuer, caddymodule.DefaultAudience
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := jwk.NewCache(ctx, httprc.NewClient())
	if err != nil {
		t.Fatal(err)
	}
	// The default least interval is 15 minutes, which would override
	// the gateway's max-age; a second lets the cache follow it.
	if err := c.Register(ctx, u.jwksURI, jwk.WithMinInterval(time.Second),
		jwk.WithHTTPClient(fetchRecorder{u})); err != nil {
		t.Fatal(err)
	}
	u.cache = c
}

// fetchRecorder notes when the cache fetches the JWKS.
type fetchRecorder struct{ u *upstream }

func (f fetchRecorder) Do(r *http.Request) (*http.Response, error) {
	f.u.mu.Lock()
	f.u.fetches = append(f.u.fetches, time.Now())
	f.u.mu.Unlock()
	return client.Do(r)
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	err := u.verify(r)
	u.mu.Lock()
	u.verdicts = append(u.verdicts, err)
	u.mu.Unlock()
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (u *upstream) verify(r *http.Request) error {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || raw == "" {
		return errors.New("no bearer token")
	}
	set, err := u.cache.Lookup(r.Context(), u.jwksURI)
	if err != nil {
		return err
	}
	// RFC 9068 section 4: an access token says so in typ, so that another
	// JWT signed with the same key is not taken for one.
	msg, err := jws.ParseString(raw)
	if err != nil {
		return err
	}
	if sigs := msg.Signatures(); len(sigs) != 1 {
		return errors.New("not one signature")
	} else if typ, _ := sigs[0].ProtectedHeaders().Type(); typ != "at+jwt" {
		return errors.New("typ is not at+jwt")
	}
	// WithKeySet requires a kid and takes the algorithm from the key.
	_, err = jwt.ParseString(raw, jwt.WithKeySet(set),
		jwt.WithIssuer(u.issuer), jwt.WithAudience(u.audience), jwt.WithRequiredClaim("exp"))
	return err
}

// take returns and forgets the verdicts recorded so far.
func (u *upstream) take() []error {
	u.mu.Lock()
	defer u.mu.Unlock()
	v := u.verdicts
	u.verdicts = nil
	return v
}

// fetchCount is how many times the cache fetched the JWKS.
func (u *upstream) fetchCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.fetches)
}

// fetchGaps returns the shortest and the longest time between two
// fetches of the JWKS.
func (u *upstream) fetchGaps() (lo, hi time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := 1; i < len(u.fetches); i++ {
		d := u.fetches[i].Sub(u.fetches[i-1])
		if lo == 0 || d < lo {
			lo = d
		}
		hi = max(hi, d)
	}
	return lo, hi
}

// cached reports whether the upstream's cached JWKS holds kid.
func (u *upstream) cached(t *testing.T, kid string) bool {
	t.Helper()
	set, err := u.cache.Lookup(context.Background(), u.jwksURI)
	if err != nil {
		t.Fatal(err)
	}
	_, ok := set.LookupKeyID(kid)
	return ok
}

// waitCached waits until the cached JWKS holds kid (or, with want false,
// no longer holds it) and returns how long that took; it fails the test
// after limit.
func (u *upstream) waitCached(t *testing.T, kid string, want bool, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for u.cached(t, kid) != want {
		if time.Since(start) > limit {
			t.Fatalf("after %v the upstream's cached JWKS holding %s is still %v", limit, kid, !want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// verdicts is what the gateway and the upstream made of one token.
type verdicts struct {
	gateway bool  // the gateway passed it on
	viaGW   error // the upstream's verdict on it, when passed on
	direct  error // the upstream's verdict when asked directly
	status  int   // the answer to the client through the gateway
}

// judge sends tok through the gateway, then directly to the upstream.
func judge(t *testing.T, u *upstream, direct, tok string) verdicts {
	t.Helper()
	var v verdicts
	v.status, _ = get(t, gateway+"/api", tok)
	switch seen := u.take(); len(seen) {
	case 0:
	case 1:
		v.gateway, v.viaGW = true, seen[0]
	default:
		t.Fatalf("one request reached the upstream %d times", len(seen))
	}
	get(t, direct, tok)
	seen := u.take()
	if len(seen) != 1 {
		t.Fatalf("a direct request reached the upstream %d times", len(seen))
	}
	v.direct = seen[0]
	return v
}

// wantAgree fails the test unless the gateway and the upstream (asked
// through the gateway and directly) all accept tok, or all refuse it and
// the upstream never saw it through the gateway.
func wantAgree(t *testing.T, u *upstream, direct, what, tok string, accept bool) {
	t.Helper()
	v := judge(t, u, direct, tok)
	switch {
	case accept && (!v.gateway || v.viaGW != nil || v.direct != nil || v.status != http.StatusOK):
		t.Fatalf("%s: want accepted everywhere; gateway passed it %v, upstream through it %v, directly %v, status %d",
			what, v.gateway, v.viaGW, v.direct, v.status)
	case !accept && (v.gateway || v.direct == nil || v.status != http.StatusUnauthorized):
		t.Fatalf("%s: want refused everywhere; gateway passed it %v, upstream directly %v, status %d",
			what, v.gateway, v.direct, v.status)
	}
}

var b64 = base64.RawURLEncoding

// kidOf returns the kid of a token's header.
func kidOf(t *testing.T, tok string) string {
	t.Helper()
	h := segment(t, strings.Split(tok, ".")[0])
	kid, _ := h["kid"].(string)
	return kid
}

func segment(t *testing.T, s string) map[string]any {
	t.Helper()
	b, err := b64.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// resign returns tok with its header and claims changed by edit and signed
// anew by alg with key (the gateway's own private key, another key, or an
// HMAC secret).
func resign(t *testing.T, tok, alg string, key any, edit func(hdr, claims map[string]any)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	hdr, claims := segment(t, parts[0]), segment(t, parts[1])
	hdr["alg"] = alg
	edit(hdr, claims)
	hj, _ := json.Marshal(hdr)
	cj, _ := json.Marshal(claims)
	input := b64.EncodeToString(hj) + "." + b64.EncodeToString(cj)
	sig, err := gjwt.GetSigningMethod(alg).Sign(input, key)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64.EncodeToString(sig)
}

// gatewayKey returns the gateway's key kid from the store, private half
// included, to forge tokens that only a claim makes invalid.
func gatewayKey(t *testing.T, st store.Store, kid string) crypto.Signer {
	t.Helper()
	set, err := st.SigningKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	k, err := keys.Parse(set.Key(kid))
	if err != nil {
		t.Fatal(err)
	}
	return k.Private
}

// TestUpstreamAgreesWithGateway runs an upstream that verifies the
// forwarded bearer with jwx against the gateway's JWKS, and checks that it
// accepts exactly what the gateway accepts: across a rotation (the new key
// reaches the upstream's cache before it signs; old tokens keep passing),
// after a retirement (the gateway refuses at once; the upstream, asked
// directly, once its cache dropped the key), and for forged tokens.
func TestUpstreamAgreesWithGateway(t *testing.T) {
	for _, alg := range []string{store.AlgEdDSA, store.AlgES256} {
		t.Run(alg, func(t *testing.T) { testAgreement(t, alg) })
	}
}

func testAgreement(t *testing.T, alg string) {
	// The JWKS max-age is half the publish delay, in whole seconds: 1s.
	// jwx's scheduler (httprc) wakes on whole seconds, so a refetch may
	// come up to a second or two after the max-age ran out; a 3s delay
	// leaves it that margin before the new key signs.
	const delay = 3 * time.Second
	const maxAge = time.Second
	const refreshBound = maxAge + 2*time.Second

	u := &upstream{}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	direct := srv.URL + "/api"
	st := startGateway(t, alg, delay, srv.URL)
	u.start(t)
	ctx := context.Background()

	first := login(t)
	oldKid := kidOf(t, first)
	wantAgree(t, u, direct, "a fresh token", first, true)

	// Rotation: the new key is published at once and signs after delay.
	rotated := time.Now()
	k, err := keys.Rotate(ctx, st, alg, rotated, delay, 0)
	if err != nil {
		t.Fatal(err)
	}
	during := login(t)
	if got := kidOf(t, during); got != oldKid {
		t.Fatalf("during the publish delay a token was signed by %s, want the old key %s", got, oldKid)
	}
	wantAgree(t, u, direct, "a token signed during the publish delay", during, true)
	// The point of the delay: the upstream's cache holds the new key
	// before the first token it signs arrives. jwx does not refetch on
	// an unknown kid, so nothing else would get it there in time.
	fetchesBefore := u.fetchCount()
	u.waitCached(t, k.ID, true, time.Until(k.SignFrom))
	publishedIn := time.Since(rotated)
	t.Logf("%s: the upstream's cache held the new key %v after the rotation (publish delay %v, max-age %v, %d fetches)",
		alg, publishedIn.Round(time.Millisecond), delay, maxAge, u.fetchCount()-fetchesBefore)

	time.Sleep(time.Until(k.SignFrom) + 50*time.Millisecond)
	after := login(t)
	if got := kidOf(t, after); got != k.ID {
		t.Fatalf("after the publish delay a token was signed by %s, want the new key %s", got, k.ID)
	}
	wantAgree(t, u, direct, "the first token of the new key", after, true)
	wantAgree(t, u, direct, "an old-key token after the rotation", first, true)

	// Retirement: the gateway refuses the old key's tokens from the next
	// request on; the upstream keeps accepting them, when asked
	// directly, until its cache refetched the set without the key.
	if _, _, err := keys.Retire(ctx, st, oldKid, time.Now()); err != nil {
		t.Fatal(err)
	}
	retired := time.Now()
	if v := judge(t, u, direct, first); v.gateway || v.status != http.StatusUnauthorized {
		t.Fatalf("right after the retirement the gateway passed the old key's token on: %+v", v)
	}
	for {
		v := judge(t, u, direct, first)
		if v.gateway {
			t.Fatal("the gateway passed a retired key's token on")
		}
		if v.direct != nil {
			break
		}
		if time.Since(retired) > refreshBound {
			t.Fatalf("the upstream still accepts a retired key's token %v after the retirement (max-age %v)",
				time.Since(retired), maxAge)
		}
		time.Sleep(20 * time.Millisecond)
	}
	window := time.Since(retired)
	t.Logf("%s: the upstream, asked directly, accepted the retired key's token for %v after the gateway refused it (max-age %v)",
		alg, window.Round(time.Millisecond), maxAge)

	// Forged and spoiled tokens, with the upstream's cache current.
	priv := gatewayKey(t, st, k.ID)
	pubDER, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	var other any
	if alg == store.AlgEdDSA {
		_, other, _ = ed25519.GenerateKey(rand.Reader)
	} else {
		other, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	parts := strings.Split(after, ".")
	claims := segment(t, parts[1])
	claims["sub"] = "mallory"
	spoiled, _ := json.Marshal(claims)
	for _, c := range []struct {
		what   string
		tok    string
		accept bool
	}{
		{"valid", after, true},
		{"re-signed by the gateway's key, unchanged", resign(t, after, alg, priv, func(_, _ map[string]any) {}), true},
		{"expired", resign(t, after, alg, priv, func(_, c map[string]any) {
			c["iat"] = time.Now().Add(-2 * time.Hour).Unix()
			c["exp"] = time.Now().Add(-time.Hour).Unix()
		}), false},
		{"tampered claims", parts[0] + "." + b64.EncodeToString(spoiled) + "." + parts[2], false},
		{"wrong aud", resign(t, after, alg, priv, func(_, c map[string]any) { c["aud"] = "another-service" }), false},
		{"typ JWT, not at+jwt", resign(t, after, alg, priv, func(h, _ map[string]any) { h["typ"] = "JWT" }), false},
		{"wrong iss", resign(t, after, alg, priv, func(_, c map[string]any) { c["iss"] = "someone-else" }), false},
		{"HS256 with the public key as secret", resign(t, after, "HS256", pubDER, func(_, _ map[string]any) {}), false},
		{"unknown kid", resign(t, after, alg, other, func(h, _ map[string]any) { h["kid"] = "not-a-key-of-ours" }), false},
		{"our kid, another key", resign(t, after, alg, other, func(_, _ map[string]any) {}), false},
		{"retired kid", first, false},
	} {
		wantAgree(t, u, direct, c.what, c.tok, c.accept)
	}
	lo, hi := u.fetchGaps()
	t.Logf("%s: %d JWKS fetches by the upstream, %v to %v apart", alg, u.fetchCount(),
		lo.Round(time.Millisecond), hi.Round(time.Millisecond))
}
