package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/scope"
)

func TestNewConfig(t *testing.T) {
	base := func() Config {
		return Config{Key: testKey, Issuer: testIss, Audience: testAud}
	}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"short key", func(c *Config) { c.Key = testKey[:31] }, "31 bytes"},
		{"nil key", func(c *Config) { c.Key = nil }, "0 bytes"},
		{"no issuer", func(c *Config) { c.Issuer = "" }, "issuer"},
		{"no audience", func(c *Config) { c.Audience = "" }, "audience"},
		{"negative ttl", func(c *Config) { c.AccessTTL = -time.Second }, "ttl"},
		{"negative leeway", func(c *Config) { c.Leeway = -time.Second }, "leeway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			tt.mod(&cfg)
			m, err := New(cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if m.accessTTL != DefaultAccessTTL || m.refreshTTL != DefaultRefreshTTL ||
					m.leeway != 0 || m.cache == nil || m.cache.capacity() != DefaultCacheSize {
					t.Errorf("defaults not applied: %+v", m)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want mention of %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewCopiesKey(t *testing.T) {
	key := append([]byte(nil), testKey...)
	m, err := New(Config{Key: key, Issuer: testIss, Audience: testAud})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := m.IssueAccess(Subject{UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range key {
		key[i] = 0
	}
	if _, err := m.VerifyRefresh(tok); !errors.Is(err, ErrWrongType) {
		t.Fatal(err)
	}
	if _, err := m.VerifyAccess(tok); err != nil {
		t.Fatalf("zeroing the caller's key broke the manager: %v", err)
	}
}

func TestKeyID(t *testing.T) {
	m, _ := newTestManager(t, nil)
	sum := sha256.Sum256(append([]byte("crudauth-kid:"), testKey...))
	want := base64.RawURLEncoding.EncodeToString(sum[:9])
	if m.KeyID() != want || len(want) != 12 {
		t.Fatalf("KeyID = %q, want %q", m.KeyID(), want)
	}
	other, _ := newTestManager(t, func(c *Config) { c.Key = append([]byte("j"), testKey[1:]...) })
	if other.KeyID() == m.KeyID() {
		t.Fatal("different keys share a kid")
	}
}

func TestRoundTrip(t *testing.T) {
	m, clk := newTestManager(t, func(c *Config) { c.AccessTTL = 10 * time.Minute; c.RefreshTTL = 48 * time.Hour })
	subj := Subject{
		UserID:       "user-42",
		Scopes:       scope.MustNew("write", "read", "admin:users"),
		TokenVersion: 1<<64 - 1,
		SessionID:    "sess-9",
	}
	kinds := []struct {
		name   string
		issue  func(Subject) (string, time.Time, error)
		verify func(string) (*Claims, error)
		other  func(string) (*Claims, error)
		typ    string
		ttl    time.Duration
	}{
		{"access", m.IssueAccess, m.VerifyAccess, m.VerifyRefresh, TypAccess, 10 * time.Minute},
		{"refresh", m.IssueRefresh, m.VerifyRefresh, m.VerifyAccess, TypRefresh, 48 * time.Hour},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			clk.Set(t0.Add(500 * time.Millisecond))
			tok, exp, err := k.issue(subj)
			if err != nil {
				t.Fatal(err)
			}
			if !exp.Equal(t0.Add(k.ttl)) {
				t.Errorf("exp = %v, want %v", exp, t0.Add(k.ttl))
			}
			// Header exactly as specified.
			h, _, _ := strings.Cut(tok, ".")
			hb, _ := base64.RawURLEncoding.DecodeString(h)
			wantH := fmt.Sprintf(`{"alg":"HS256","typ":%q,"kid":%q}`, k.typ, m.KeyID())
			if string(hb) != wantH {
				t.Errorf("header = %s, want %s", hb, wantH)
			}
			// Payload members.
			var p map[string]any
			pb, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
			d := json.NewDecoder(strings.NewReader(string(pb)))
			d.UseNumber()
			if err := d.Decode(&p); err != nil {
				t.Fatal(err)
			}
			if p["aud"] != testAud || p["iss"] != testIss || p["sub"] != "user-42" ||
				p["scope"] != "admin:users read write" || p["sid"] != "sess-9" ||
				p["token_version"] != json.Number("18446744073709551615") ||
				p["iat"] != json.Number(fmt.Sprint(t0.Unix())) || p["nbf"] != p["iat"] {
				t.Errorf("payload = %s", pb)
			}
			if jti, _ := p["jti"].(string); len(jti) != 22 {
				t.Errorf("jti %q is not 128 bits of base64url", jti)
			}

			c, err := k.verify(tok)
			if err != nil {
				t.Fatal(err)
			}
			want := Claims{
				UserID:       subj.UserID,
				Scopes:       subj.Scopes,
				TokenVersion: subj.TokenVersion,
				SessionID:    subj.SessionID,
				ID:           p["jti"].(string),
				IssuedAt:     t0,
				ExpiresAt:    t0.Add(k.ttl),
			}
			if c.UserID != want.UserID || !c.Scopes.Equal(want.Scopes) || c.TokenVersion != want.TokenVersion ||
				c.SessionID != want.SessionID || c.ID != want.ID || !c.IssuedAt.Equal(want.IssuedAt) ||
				!c.ExpiresAt.Equal(want.ExpiresAt) {
				t.Errorf("claims = %+v, want %+v", c, want)
			}
			// The other kind's verifier refuses it on typ.
			if _, err := k.other(tok); !errors.Is(err, ErrWrongType) {
				t.Errorf("other verifier: err = %v, want ErrWrongType", err)
			}
		})
	}
}

func TestIssueMinimalSubject(t *testing.T) {
	m, _ := newTestManager(t, nil)
	tok, _, err := m.IssueAccess(Subject{UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if strings.Contains(string(pb), `"scope"`) || strings.Contains(string(pb), `"sid"`) ||
		!strings.Contains(string(pb), `"token_version":0`) {
		t.Errorf("payload = %s", pb)
	}
	c, err := m.VerifyAccess(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Scopes != nil || c.SessionID != "" || c.TokenVersion != 0 {
		t.Errorf("claims = %+v", c)
	}
	// Distinct jti each time.
	tok2, _, _ := m.IssueAccess(Subject{UserID: "u"})
	if tok2 == tok {
		t.Error("two issues gave the same token")
	}
}

func TestIssueRefusesBadSubject(t *testing.T) {
	m, _ := newTestManager(t, nil)
	many := make(scope.Set, scope.MaxScopes+1)
	for i := range many {
		many[i] = fmt.Sprintf("s%03d", i)
	}
	for name, s := range map[string]Subject{
		"no user":     {},
		"bad scope":   {UserID: "u", Scopes: scope.Set{"a b"}},
		"empty scope": {UserID: "u", Scopes: scope.Set{""}},
		"too many":    {UserID: "u", Scopes: many},
	} {
		if _, _, err := m.IssueAccess(s); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}

// TestVerifyTable covers crafted tokens. Each is signed correctly with our
// key unless the case is about the signature, so that only the check under
// test can refuse it.
func TestVerifyTable(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = -1 })
	kid := m.KeyID()
	H := hdr(kid)
	P := with(nil)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	ours := func(header, payload string) string { return signRaw(t, "HS256", testKey, header, payload) }
	hdrWith := func(extra string) string {
		return fmt.Sprintf(`{"alg":"HS256","typ":"at+jwt","kid":%q,%s}`, kid, extra)
	}
	valid := ours(H, P)
	refresh := ours(fmt.Sprintf(`{"alg":"HS256","typ":"rt+jwt","kid":%q}`, kid), P)
	parts := strings.Split(valid, ".")

	type tc struct {
		name    string
		tok     string
		refresh bool    // verify with VerifyRefresh
		want    []error // acceptable kinds; nil means it must verify
	}
	sig := []error{ErrSignature}
	mal := []error{ErrMalformed}
	claims := []error{ErrInvalidClaims}
	wrong := []error{ErrWrongType}
	expired := []error{ErrExpired}
	tests := []tc{
		{name: "valid", tok: valid},
		// encoding/base64 skips line breaks, strict mode included: a token
		// with one added must not verify (FuzzVerifyAccess found this).
		{name: "CR in signature", tok: valid[:len(valid)-1] + "\r" + valid[len(valid)-1:], want: mal},
		{name: "LF in signature", tok: valid[:len(valid)-1] + "\n" + valid[len(valid)-1:], want: mal},
		{name: "CRLF in payload", tok: parts[0] + "." + parts[1][:5] + "\r\n" + parts[1][5:] + "." + parts[2], want: mal},
		{name: "LF in header", tok: parts[0][:3] + "\n" + parts[0][3:] + "." + parts[1] + "." + parts[2], want: mal},
		{name: "CR in refresh signature", tok: refresh[:len(refresh)-1] + "\r" + refresh[len(refresh)-1:], refresh: true, want: mal},
		{name: "space in signature", tok: valid[:10] + " " + valid[10:], want: mal},
		{name: "valid refresh", tok: refresh, refresh: true},
		{name: "refresh as access", tok: refresh, want: wrong},
		{name: "access as refresh", tok: valid, refresh: true, want: wrong},

		// typ spellings (RFC 9068 section 4).
		{name: "typ upper", tok: ours(fmt.Sprintf(`{"alg":"HS256","typ":"AT+JWT","kid":%q}`, kid), P)},
		{name: "typ media type", tok: ours(fmt.Sprintf(`{"alg":"HS256","typ":"application/at+jwt","kid":%q}`, kid), P)},
		{name: "typ media type mixed case", tok: ours(fmt.Sprintf(`{"alg":"HS256","typ":"Application/At+JWT","kid":%q}`, kid), P)},
		{name: "typ JWT", tok: ours(fmt.Sprintf(`{"alg":"HS256","typ":"JWT","kid":%q}`, kid), P), want: wrong},
		{name: "typ missing", tok: ours(fmt.Sprintf(`{"alg":"HS256","kid":%q}`, kid), P), want: wrong},
		{name: "typ number", tok: ours(fmt.Sprintf(`{"alg":"HS256","typ":1,"kid":%q}`, kid), P), want: wrong},
		{name: "typ other prefix", tok: ours(fmt.Sprintf(`{"alg":"HS256","typ":"applicatio/at+jwt","kid":%q}`, kid), P), want: wrong},
		{name: "typ with suffix", tok: ours(fmt.Sprintf(`{"alg":"HS256","typ":"at+jwtx","kid":%q}`, kid), P), want: wrong},
		{name: "typ media type refresh as access", tok: ours(fmt.Sprintf(`{"alg":"HS256","typ":"application/rt+jwt","kid":%q}`, kid), P), want: wrong},

		// Algorithms other than HS256.
		{name: "HS384 same key", tok: signRaw(t, "HS384", testKey, strings.Replace(H, "HS256", "HS384", 1), P), want: sig},
		{name: "HS512 same key", tok: signRaw(t, "HS512", testKey, strings.Replace(H, "HS256", "HS512", 1), P), want: sig},
		{name: "RS256", tok: signRaw(t, "RS256", rsaKey, strings.Replace(H, "HS256", "RS256", 1), P), want: sig},
		{name: "ES256", tok: signRaw(t, "ES256", ecKey, strings.Replace(H, "HS256", "ES256", 1), P), want: sig},
		{name: "public key PEM as HMAC secret with our kid", tok: signRaw(t, "HS256", pubPEM, H, P), want: sig},
		{name: "public key PEM as HMAC secret without kid", tok: signRaw(t, "HS256", pubPEM, `{"alg":"HS256","typ":"at+jwt"}`, P), want: sig},
		{name: "alg missing", tok: ours(fmt.Sprintf(`{"typ":"at+jwt","kid":%q}`, kid), P), want: sig},
		{name: "alg number", tok: ours(fmt.Sprintf(`{"alg":256,"typ":"at+jwt","kid":%q}`, kid), P), want: sig},

		// Signature segment.
		{name: "signature removed", tok: parts[0] + "." + parts[1] + ".", want: sig},
		{name: "signature truncated by one", tok: valid[:len(valid)-1], want: append(sig, ErrMalformed)},
		{name: "signature truncated by half", tok: valid[:len(valid)-21], want: append(sig, ErrMalformed)},
		{name: "signature padded", tok: valid + "=", want: mal},
		{name: "signature padded twice", tok: valid + "==", want: mal},
		{name: "signature doubled", tok: valid + parts[2], want: append(sig, ErrMalformed)},
		{name: "signature std base64", tok: parts[0] + "." + parts[1] + "." + strings.NewReplacer("-", "+", "_", "/").Replace(parts[2]) + "+/", want: mal},
		{name: "signature of another key", tok: signRaw(t, "HS256", []byte(strings.Repeat("j", 32)), H, P), want: sig},

		// kid.
		{name: "kid unknown", tok: ours(hdr("nope"), P), want: sig},
		{name: "kid missing", tok: ours(`{"alg":"HS256","typ":"at+jwt"}`, P), want: sig},
		{name: "kid empty", tok: ours(hdr(""), P), want: sig},
		{name: "kid number", tok: ours(`{"alg":"HS256","typ":"at+jwt","kid":1}`, P), want: sig},
		{name: "kid case changed", tok: ours(hdr(strings.ToUpper(kid)), P), want: sig},

		// Header parameters that must not appear.
		{name: "jku", tok: ours(hdrWith(`"jku":"https://evil.test/jwks"`), P), want: claims},
		{name: "jwk", tok: ours(hdrWith(`"jwk":{"kty":"oct","k":"a2tr"}`), P), want: claims},
		{name: "x5u", tok: ours(hdrWith(`"x5u":"https://evil.test/cert"`), P), want: claims},
		{name: "x5c", tok: ours(hdrWith(`"x5c":["MIIB"]`), P), want: claims},
		{name: "crit", tok: ours(hdrWith(`"crit":["exp"]`), P), want: claims},
		{name: "crit b64", tok: ours(hdrWith(`"b64":false,"crit":["b64"]`), P), want: claims},
		{name: "jku null", tok: ours(hdrWith(`"jku":null`), P), want: claims},
		{name: "unknown header param tolerated", tok: ours(hdrWith(`"cty":"x"`), P)},

		// exp.
		{name: "exp missing", tok: ours(H, with(map[string]any{"exp": nil})), want: claims},
		{name: "exp null", tok: ours(H, with(map[string]any{"exp": raw("null")})), want: claims},
		{name: "exp zero", tok: ours(H, with(map[string]any{"exp": 0})), want: expired},
		{name: "exp now", tok: ours(H, with(map[string]any{"exp": t0.Unix()})), want: expired},
		{name: "exp past", tok: ours(H, with(map[string]any{"exp": t0.Unix() - 1})), want: expired},
		// golang-jwt reads NumericDate through json.Number, which also takes a
		// quoted number. Only our key can sign such a token, so it is moot.
		{name: "exp numeric string", tok: ours(H, with(map[string]any{"exp": fmt.Sprint(t0.Unix() + 60)}))},
		{name: "exp non-numeric string", tok: ours(H, with(map[string]any{"exp": "soon"})), want: mal},
		{name: "exp fractional future", tok: ours(H, with(map[string]any{"exp": raw(fmt.Sprint(t0.Unix()+60) + ".5")}))},

		// iss and aud.
		{name: "iss wrong", tok: ours(H, with(map[string]any{"iss": "https://evil.test"})), want: claims},
		{name: "iss missing", tok: ours(H, with(map[string]any{"iss": nil})), want: claims},
		{name: "iss case", tok: ours(H, with(map[string]any{"iss": strings.ToUpper(testIss)})), want: claims},
		{name: "aud wrong", tok: ours(H, with(map[string]any{"aud": "https://other.test"})), want: claims},
		{name: "aud missing", tok: ours(H, with(map[string]any{"aud": nil})), want: claims},
		{name: "aud array without ours", tok: ours(H, with(map[string]any{"aud": []string{"a", "b"}})), want: claims},
		{name: "aud empty array", tok: ours(H, with(map[string]any{"aud": []string{}})), want: claims},
		{name: "aud array with ours", tok: ours(H, with(map[string]any{"aud": []string{"a", testAud}}))},
		{name: "aud number", tok: ours(H, with(map[string]any{"aud": 1})), want: mal},

		// nbf and iat.
		{name: "nbf future", tok: ours(H, with(map[string]any{"nbf": t0.Unix() + 1})), want: claims},
		{name: "nbf missing", tok: ours(H, with(map[string]any{"nbf": nil}))},
		{name: "iat future", tok: ours(H, with(map[string]any{"iat": t0.Unix() + 1})), want: claims},
		{name: "iat missing", tok: ours(H, with(map[string]any{"iat": nil})), want: claims},

		// token_version.
		{name: "token_version absent", tok: ours(H, with(map[string]any{"token_version": nil})), want: claims},
		{name: "token_version null", tok: ours(H, with(map[string]any{"token_version": raw("null")})), want: claims},
		{name: "token_version string", tok: ours(H, with(map[string]any{"token_version": "1"})), want: claims},
		{name: "token_version negative", tok: ours(H, with(map[string]any{"token_version": -1})), want: claims},
		{name: "token_version fraction", tok: ours(H, with(map[string]any{"token_version": 1.5})), want: claims},
		{name: "token_version 1.0", tok: ours(H, with(map[string]any{"token_version": raw("1.0")})), want: claims},
		{name: "token_version exponent", tok: ours(H, with(map[string]any{"token_version": raw("1e3")})), want: claims},
		{name: "token_version 2^64", tok: ours(H, with(map[string]any{"token_version": raw("18446744073709551616")})), want: claims},
		{name: "token_version huge", tok: ours(H, with(map[string]any{"token_version": raw("99999999999999999999999")})), want: claims},
		{name: "token_version bool", tok: ours(H, with(map[string]any{"token_version": true})), want: claims},
		{name: "token_version object", tok: ours(H, with(map[string]any{"token_version": raw(`{"v":1}`)})), want: claims},
		{name: "token_version 2^64-1", tok: ours(H, with(map[string]any{"token_version": raw("18446744073709551615")}))},
		{name: "token_version zero", tok: ours(H, with(map[string]any{"token_version": 0}))},

		// sub, jti.
		{name: "sub empty", tok: ours(H, with(map[string]any{"sub": ""})), want: claims},
		{name: "sub missing", tok: ours(H, with(map[string]any{"sub": nil})), want: claims},
		{name: "sub number", tok: ours(H, with(map[string]any{"sub": 1})), want: mal},
		{name: "jti missing", tok: ours(H, with(map[string]any{"jti": nil})), want: claims},

		{name: "unknown member tolerated", tok: ours(H, strings.Replace(P, "{", `{"subx":"admin",`, 1))},

		// scope.
		{name: "scope quote", tok: ours(H, with(map[string]any{"scope": `read "write"`})), want: claims},
		{name: "scope backslash", tok: ours(H, with(map[string]any{"scope": `read\write`})), want: claims},
		{name: "scope tab", tok: ours(H, with(map[string]any{"scope": "read\twrite"})), want: claims},
		{name: "scope nul", tok: ours(H, with(map[string]any{"scope": "read\x00"})), want: claims},
		{name: "scope non-ascii", tok: ours(H, with(map[string]any{"scope": "réad"})), want: claims},
		{name: "scope too long token", tok: ours(H, with(map[string]any{"scope": strings.Repeat("a", scope.MaxScopeLen+1)})), want: claims},
		{name: "scope too many", tok: ours(H, with(map[string]any{"scope": manyScopes(scope.MaxScopes + 1)})), want: claims},
		{name: "scope array", tok: ours(H, with(map[string]any{"scope": []string{"read"}})), want: mal},
		{name: "scope empty", tok: ours(H, with(map[string]any{"scope": ""}))},

		// Structure.
		{name: "empty", tok: "", want: mal},
		{name: "one segment", tok: parts[0], want: mal},
		{name: "two segments", tok: parts[0] + "." + parts[1], want: mal},
		{name: "four segments", tok: valid + ".x", want: mal},
		{name: "million dots", tok: strings.Repeat(".", 1_000_000), want: mal},
		{name: "many dots under limit", tok: strings.Repeat(".", MaxTokenLen), want: mal},
		{name: "too long", tok: valid + strings.Repeat("A", MaxTokenLen), want: mal},
		{name: "payload not json", tok: ours(H, "not json"), want: mal},
		{name: "payload array", tok: ours(H, "[1]"), want: mal},
		{name: "payload trailing data", tok: ours(H, P+"{}"), want: mal},
		{name: "header not json", tok: ours("nope", P), want: mal},
		{name: "header array", tok: ours(`["alg"]`, P), want: mal},
		{name: "whitespace around", tok: " " + valid, want: mal},
		{name: "bearer prefix", tok: "Bearer " + valid, want: mal},
	}

	// alg none in several spellings, with and without a signature.
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		h := fmt.Sprintf(`{"alg":%q,"typ":"at+jwt","kid":%q}`, alg, kid)
		unsigned := b64(h) + "." + b64(P) + "."
		tests = append(tests,
			tc{name: "alg " + alg + " empty signature", tok: unsigned, want: sig},
			tc{name: "alg " + alg + " with signature", tok: unsigned + parts[2], want: sig},
			tc{name: "alg " + alg + " garbage signature", tok: unsigned + b64("x"), want: sig},
		)
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verify := m.VerifyAccess
			if tt.refresh {
				verify = m.VerifyRefresh
			}
			c, err := verify(tt.tok)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				if c == nil || c.UserID == "" {
					t.Fatalf("claims = %+v", c)
				}
				return
			}
			if err == nil {
				t.Fatalf("verified, want one of %v", tt.want)
			}
			if c != nil {
				t.Error("claims returned with an error")
			}
			got := kindOf(t, err)
			ok := false
			for _, w := range tt.want {
				ok = ok || got == w
			}
			if !ok {
				t.Fatalf("err = %v, want one of %v", err, tt.want)
			}
			checkNoTokenText(t, err, tt.tok)
		})
	}
}

func manyScopes(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("s%03d", i)
	}
	return strings.Join(s, " ")
}

// checkNoTokenText fails when the error message quotes any 8-byte piece of
// the token or of its decoded segments.
func checkNoTokenText(tb testing.TB, err error, tok string) {
	tb.Helper()
	msg := err.Error()
	pieces := []string{tok}
	for _, seg := range strings.Split(tok, ".") {
		if b, err := base64.RawURLEncoding.DecodeString(seg); err == nil {
			pieces = append(pieces, string(b))
		}
	}
	for _, p := range pieces {
		for i := 0; i+8 <= len(p) && i < 4096; i++ {
			w := p[i : i+8]
			if strings.Contains(msg, w) && !strings.Contains(allReasons, w) {
				tb.Fatalf("error %q quotes token text %q", msg, w)
			}
		}
	}
}

// allReasons is every fixed error text, which may legitimately share words
// with a token.
var allReasons = func() string {
	var b strings.Builder
	for _, e := range []error{
		errEmptyToken, errTokenTooLong, errJWTMalformed,
		errAlgUnusable, errAlgNotValid, errBadSignature, errNoKid, errUnknownKid, errKidAlg,
		errWrongTyp, errExpired, errIssuer, errAudience, errRequiredMissing, errNotYetValid,
		errIssuedInFuture, errClaimsRejected, errNoTokenVersion, errBadTokenVersion, errNoSubject,
		errNoIssuedAt, errNoID, errBadScope,
	} {
		b.WriteString(e.Error())
		b.WriteByte('\n')
	}
	for _, f := range forbiddenHeaders {
		b.WriteString(f.err.Error())
		b.WriteByte('\n')
	}
	return b.String()
}()

// TestBitFlips changes every character of a valid token in turn, and every
// bit of every decoded byte of each segment: nothing verifies.
func TestBitFlips(t *testing.T) {
	m, _ := newTestManager(t, nil)
	tok, _, err := m.IssueAccess(Subject{UserID: "user-1", Scopes: scope.MustNew("read")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.VerifyAccess(tok); err != nil { // and it is now cached
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	step := 1
	if testing.Short() || raceEnabled {
		step = 7
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] == '.' {
			continue
		}
		for j := 0; j < len(alphabet); j += step {
			if alphabet[j] == tok[i] {
				continue
			}
			mut := tok[:i] + string(alphabet[j]) + tok[i+1:]
			if _, err := m.VerifyAccess(mut); err == nil {
				t.Fatalf("char %d changed to %q still verifies", i, alphabet[j])
			}
		}
	}
	segs := strings.Split(tok, ".")
	for s := range segs {
		raw, err := base64.RawURLEncoding.DecodeString(segs[s])
		if err != nil {
			t.Fatal(err)
		}
		for i := range raw {
			for bit := 0; bit < 8; bit++ {
				flipped := append([]byte(nil), raw...)
				flipped[i] ^= 1 << bit
				mut := append([]string(nil), segs...)
				mut[s] = base64.RawURLEncoding.EncodeToString(flipped)
				c, err := m.VerifyAccess(strings.Join(mut, "."))
				if err == nil {
					t.Fatalf("segment %d byte %d bit %d flipped still verifies: %+v", s, i, bit, c)
				}
			}
		}
	}
}

// TestStrictSignatureEncoding: the last base64 character of the signature
// carries unused low bits; changing them must not give a second valid
// spelling of the same token.
func TestStrictSignatureEncoding(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = -1 })
	tok, _, _ := m.IssueAccess(Subject{UserID: "u"})
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	for d := 1; d < 4; d++ { // 43 chars carry 256 bits: the last one has 2 unused bits
		mut := tok[:len(tok)-1] + string(alphabet[last^d])
		if _, err := m.VerifyAccess(mut); !errors.Is(err, ErrMalformed) {
			t.Errorf("non-canonical signature encoding: err = %v", err)
		}
	}
}

func TestExpiryWithLeeway(t *testing.T) {
	for _, leeway := range []time.Duration{0, 30 * time.Second} {
		for _, cacheSize := range []int{-1, 16} {
			t.Run(fmt.Sprintf("leeway=%v/cache=%d", leeway, cacheSize), func(t *testing.T) {
				m, clk := newTestManager(t, func(c *Config) { c.Leeway = leeway; c.CacheSize = cacheSize })
				tok, exp, err := m.IssueAccess(Subject{UserID: "u"})
				if err != nil {
					t.Fatal(err)
				}
				steps := []struct {
					at   time.Time
					want error
				}{
					{t0, nil},
					{exp.Add(leeway - time.Nanosecond), nil},
					{exp.Add(leeway), ErrExpired},
					{exp.Add(leeway + time.Hour), ErrExpired},
					{t0.Add(-leeway), nil},
					{t0.Add(-leeway - time.Second), ErrInvalidClaims}, // clock stepped back
				}
				for _, s := range steps {
					clk.Set(s.at)
					_, err := m.VerifyAccess(tok)
					if s.want == nil && err != nil || s.want != nil && !errors.Is(err, s.want) {
						t.Errorf("at %v: err = %v, want %v", s.at.Sub(exp), err, s.want)
					}
				}
			})
		}
	}
}

func TestRefreshExpiry(t *testing.T) {
	m, clk := newTestManager(t, nil)
	tok, exp, _ := m.IssueRefresh(Subject{UserID: "u"})
	if !exp.Equal(t0.Add(DefaultRefreshTTL)) {
		t.Fatalf("exp = %v", exp)
	}
	clk.Set(exp.Add(-time.Second))
	if _, err := m.VerifyRefresh(tok); err != nil {
		t.Fatal(err)
	}
	clk.Set(exp)
	if _, err := m.VerifyRefresh(tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("err = %v", err)
	}
}

// TestOtherManagerKey: a token from a manager with another key, issuer or
// audience is refused.
func TestOtherManager(t *testing.T) {
	m, _ := newTestManager(t, nil)
	others := map[string]func(*Config){
		"key":      func(c *Config) { c.Key = []byte(strings.Repeat("j", 32)) },
		"issuer":   func(c *Config) { c.Issuer = "https://other.test" },
		"audience": func(c *Config) { c.Audience = "https://other.test" },
	}
	for name, mod := range others {
		o, _ := newTestManager(t, mod)
		tok, _, _ := o.IssueAccess(Subject{UserID: "u"})
		if _, err := m.VerifyAccess(tok); err == nil {
			t.Errorf("%s: token of another manager verified", name)
		}
	}
}

func TestParseUint64(t *testing.T) {
	tests := map[string]bool{
		"0": true, "1": true, "18446744073709551615": true,
		"": false, "18446744073709551616": false, "-1": false, "1.5": false, "1e3": false,
		"\"1\"": false, "99999999999999999999": false, "+1": false,
	}
	for in, ok := range tests {
		if _, got := parseUint64([]byte(in)); got != ok {
			t.Errorf("parseUint64(%q) ok = %v, want %v", in, got, ok)
		}
	}
}

func TestClassifyDropsDetail(t *testing.T) {
	// golang-jwt puts the alg name in its message; ours must not.
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = -1 })
	h := fmt.Sprintf(`{"alg":"HS384-SECRET-MARKER","typ":"at+jwt","kid":%q}`, m.KeyID())
	tok := b64(h) + "." + b64(with(nil)) + "." + b64("sig")
	_, err := m.VerifyAccess(tok)
	if err == nil || strings.Contains(err.Error(), "MARKER") {
		t.Fatalf("err = %v", err)
	}
}
