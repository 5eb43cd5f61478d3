package token

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testKey is deliberately not realistic.
var testKey = bytes.Repeat([]byte("k"), 32)

const (
	testIss = "https://gateway.test"
	testAud = "https://api.test"
)

var t0 = time.Unix(1_700_000_000, 0)

// clock is an injectable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestManager(tb testing.TB, mod func(*Config)) (*Manager, *clock) {
	tb.Helper()
	clk := &clock{t: t0}
	cfg := Config{
		Key:      testKey,
		Issuer:   testIss,
		Audience: testAud,
		Now:      clk.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return m, clk
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// signRaw builds a compact JWS from raw header and payload JSON text, signed
// with alg and key. alg "" means an empty signature.
func signRaw(tb testing.TB, alg string, key any, header, payload string) string {
	tb.Helper()
	in := b64(header) + "." + b64(payload)
	if alg == "" {
		return in + "."
	}
	sig, err := jwt.GetSigningMethod(alg).Sign(in, key)
	if err != nil {
		tb.Fatal(err)
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// hdr is our usual access token header.
func hdr(kid string) string {
	return fmt.Sprintf(`{"alg":"HS256","typ":"at+jwt","kid":%q}`, kid)
}

// claimsAt returns the members of a valid access token payload at now.
func claimsAt(now time.Time) map[string]any {
	return map[string]any{
		"iss":           testIss,
		"sub":           "user-1",
		"aud":           testAud,
		"exp":           now.Add(15 * time.Minute).Unix(),
		"nbf":           now.Unix(),
		"iat":           now.Unix(),
		"jti":           "jti-1",
		"scope":         "read write",
		"token_version": 7,
	}
}

// payloadJSON marshals claims with sorted keys, each value as given; a value
// of type raw is inserted verbatim.
type raw string

func payloadJSON(claims map[string]any) string {
	keys := make([]string, 0, len(claims))
	for k := range claims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		if r, ok := claims[k].(raw); ok {
			b.WriteString(string(r))
			continue
		}
		vb, err := json.Marshal(claims[k])
		if err != nil {
			panic(err)
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.String()
}

// with returns a copy of claimsAt(t0) with the given changes; a nil value
// deletes the member.
func with(changes map[string]any) string {
	c := claimsAt(t0)
	for k, v := range changes {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return payloadJSON(c)
}

// sentinels are every error kind a verification may return.
var sentinels = []error{ErrMalformed, ErrSignature, ErrExpired, ErrWrongType, ErrInvalidClaims}

// kindOf returns the one sentinel err wraps, failing if it wraps none or
// several.
func kindOf(tb testing.TB, err error) error {
	tb.Helper()
	var found error
	for _, s := range sentinels {
		if errors.Is(err, s) {
			if found != nil {
				tb.Fatalf("error %q wraps both %v and %v", err, found, s)
			}
			found = s
		}
	}
	if found == nil {
		tb.Fatalf("error %q wraps no sentinel", err)
	}
	return found
}
