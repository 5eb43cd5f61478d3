package token

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// checkFastAgrees is the fast path's contract: whenever verifyFast accepts
// a token, the general path accepts it too, with the same claims and the same
// validity window. (When it does not accept, verify runs the general path, so
// there is nothing to compare.)
func checkFastAgrees(tb testing.TB, m *Manager, tok, typ string) (handled bool) {
	tb.Helper()
	fast, handled := m.verifyFast(tok, typ)
	if !handled {
		return false
	}
	kf := m.kfAccess
	if typ == TypRefresh {
		kf = m.kfRefresh
	}
	general, err := m.verifyGeneral(tok, kf)
	if err != nil {
		tb.Fatalf("fast path accepted a %s token the general path refuses (%v): %q", typ, err, tok)
	}
	if !sameEntry(fast, general) {
		tb.Fatalf("fast path and general path disagree on %q:\nfast    %+v %+v\ngeneral %+v %+v",
			tok, fast, *fast.claims, general, *general.claims)
	}
	return true
}

func sameEntry(a, b cacheEntry) bool {
	if !a.notBefore.Equal(b.notBefore) || !a.notAfter.Equal(b.notAfter) {
		return false
	}
	x, y := *a.claims, *b.claims
	if !x.IssuedAt.Equal(y.IssuedAt) || !x.ExpiresAt.Equal(y.ExpiresAt) {
		return false
	}
	x.IssuedAt, y.IssuedAt, x.ExpiresAt, y.ExpiresAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if len(x.Scopes) == 0 && len(y.Scopes) == 0 {
		x.Scopes, y.Scopes = nil, nil
	}
	return reflect.DeepEqual(x, y)
}

// TestFastPathTakesIssuedTokens: every token the Manager issues, of both
// types and with every optional member present or not, is accepted by the
// fast path with the general path's claims; a token of one type is never
// handled as the other.
func TestFastPathTakesIssuedTokens(t *testing.T) {
	for _, leeway := range []time.Duration{0, 30 * time.Second} {
		m, clk := newTestManager(t, func(c *Config) { c.Leeway = leeway })
		for _, s := range []Subject{
			{UserID: "u"},
			{UserID: "user-1", Scopes: scope.MustNew("read", "write"), TokenVersion: 18446744073709551615, SessionID: "s-1"},
			{UserID: "ユーザー", Scopes: scope.MustNew("a:b", "c/d"), TokenVersion: 3},
		} {
			at, _, err := m.IssueAccess(s)
			if err != nil {
				t.Fatal(err)
			}
			rt, _, err := m.IssueRefresh(s)
			if err != nil {
				t.Fatal(err)
			}
			if !checkFastAgrees(t, m, at, TypAccess) || !checkFastAgrees(t, m, rt, TypRefresh) {
				t.Fatalf("an issued token for %+v left the fast path", s)
			}
			if _, ok := m.verifyFast(at, TypRefresh); ok {
				t.Fatal("access token handled as a refresh token")
			}
			if _, ok := m.verifyFast(rt, TypAccess); ok {
				t.Fatal("refresh token handled as an access token")
			}
			// Later on the clock: still the same answers, and past exp
			// (plus leeway) the fast path declines.
			clk.Advance(14 * time.Minute)
			checkFastAgrees(t, m, at, TypAccess)
			clk.Advance(time.Minute + leeway)
			if _, ok := m.verifyFast(at, TypAccess); ok {
				t.Fatal("fast path accepted an expired token")
			}
			clk.Set(t0)
		}
	}
}

// TestFastPathAgrees signs payloads that are valid JSON but written in ways
// we never write, or that fail a check, with our own key and header, and
// holds the fast path to its contract on each. The cases the fast path must
// decline (leave to the general path) are listed: the general path may
// accept some of them, and it must be the one to decide.
func TestFastPathAgrees(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = -1 })
	H := hdr(m.KeyID())
	sign := func(payload string) string { return signRaw(t, "HS256", testKey, H, payload) }
	exp := t0.Add(15 * time.Minute).Unix()
	iat := t0.Unix()

	accepted := map[string]string{
		"sorted members":           with(nil),
		"whitespace":               " {\n\t\"iss\" : \"" + testIss + "\" ,\"sub\":\"u\",\"aud\":\"" + testAud + "\",\"exp\":" + fmt.Sprint(exp) + ",\"iat\":" + fmt.Sprint(iat) + ",\"jti\":\"j\",\"token_version\":0 } ",
		"no nbf":                   with(map[string]any{"nbf": nil}),
		"nbf after iat":            with(map[string]any{"nbf": iat + 0, "iat": iat - 100}),
		"no scope":                 with(map[string]any{"scope": nil}),
		"empty scope":              with(map[string]any{"scope": ""}),
		"doubled separator":        with(map[string]any{"scope": "b  a b"}),
		"utf-8 subject":            with(map[string]any{"sub": "zoë"}),
		"token_version max uint64": with(map[string]any{"token_version": raw("18446744073709551615")}),
	}
	declined := map[string]string{
		"escaped name":              strings.Replace(with(nil), `"sub"`, `"s\u0075b"`, 1),
		"upper-case name":           strings.Replace(with(nil), `"sub"`, `"SUB"`, 1),
		"duplicate member":          strings.Replace(with(nil), `{`, `{"token_version":0,`, 1),
		"duplicate folded member":   strings.Replace(with(nil), `{`, `{"Token_Version":0,`, 1),
		"unknown member":            with(map[string]any{"x": 1}),
		"escaped value":             with(map[string]any{"sub": raw(`"\u0075"`)}),
		"control byte in value":     with(map[string]any{"sub": raw("\"a\x01\"")}),
		"invalid utf-8 in value":    with(map[string]any{"sub": raw("\"a\xff\"")}),
		"float exp":                 with(map[string]any{"exp": raw(fmt.Sprintf("%d.5", exp))}),
		"exponent exp":              with(map[string]any{"exp": raw("1.7e9")}),
		"16-digit exp":              with(map[string]any{"exp": raw("1000000000000000")}),
		"negative nbf":              with(map[string]any{"nbf": raw("-1")}),
		"leading zero version":      with(map[string]any{"token_version": raw("07")}),
		"string version":            with(map[string]any{"token_version": "7"}),
		"version overflow":          with(map[string]any{"token_version": raw("18446744073709551616")}),
		"null sid":                  with(map[string]any{"sid": raw("null")}),
		"aud array":                 with(map[string]any{"aud": []string{testAud}}),
		"other aud":                 with(map[string]any{"aud": "https://other.test"}),
		"other iss":                 with(map[string]any{"iss": "https://other.test"}),
		"no exp":                    with(map[string]any{"exp": nil}),
		"no iat":                    with(map[string]any{"iat": nil}),
		"no token_version":          with(map[string]any{"token_version": nil}),
		"empty sub":                 with(map[string]any{"sub": ""}),
		"no jti":                    with(map[string]any{"jti": nil}),
		"bad scope":                 with(map[string]any{"scope": "zoë"}),
		"expired":                   with(map[string]any{"exp": iat}),
		"nbf in the future":         with(map[string]any{"nbf": iat + 1}),
		"iat in the future":         with(map[string]any{"iat": iat + 1, "nbf": nil}),
		"trailing bytes":            with(nil) + "x",
		"trailing comma":            strings.Replace(with(nil), `}`, `,}`, 1),
		"not an object":             `[1]`,
		"empty object":              `{}`,
		"number then junk":          with(map[string]any{"exp": raw(fmt.Sprint(exp) + "x")}),
		"unterminated":              strings.TrimSuffix(with(nil), "}"),
		"nested object in a string": with(map[string]any{"sid": map[string]any{"a": 1}}),
	}
	for name, p := range accepted {
		if !checkFastAgrees(t, m, sign(p), TypAccess) {
			t.Errorf("%s: the fast path declined %s", name, p)
		}
	}
	for name, p := range declined {
		if _, ok := m.verifyFast(sign(p), TypAccess); ok {
			t.Errorf("%s: the fast path accepted %s", name, p)
		}
	}

	// Tampering outside the payload: the fast path declines every one.
	good := sign(with(nil))
	parts := strings.Split(good, ".")
	for name, tok := range map[string]string{
		"flipped signature":           parts[0] + "." + parts[1] + "." + flip(parts[2]),
		"padded signature":            good + "=",
		"short signature":             good[:len(good)-1],
		"non-canonical last b64 char": parts[0] + "." + parts[1] + "." + parts[2][:42] + string(parts[2][42]+1),
		"extra segment":               good + ".x",
		"payload with a dot":          parts[0] + "." + parts[1] + ".x." + parts[2],
		"other key's header":          hdr("other") + "." + parts[1] + "." + parts[2],
		"refresh header":              b64(fmt.Sprintf(`{"alg":"HS256","typ":"rt+jwt","kid":%q}`, m.KeyID())) + "." + parts[1] + "." + parts[2],
	} {
		if _, ok := m.verifyFast(tok, TypAccess); ok {
			t.Errorf("%s: the fast path accepted it", name)
		}
	}
}

func flip(s string) string {
	c := s[0] ^ 1
	return string(c) + s[1:]
}

// FuzzFastPathAgrees signs arbitrary payloads with our key under our access
// or refresh header (so that the fuzzer reaches the payload parser, past the
// HMAC) and checks the fast path's contract, at a clock offset the fuzzer
// picks too. Raw strings are also tried as whole tokens.
func FuzzFastPathAgrees(f *testing.F) {
	m, clk := newTestManager(f, func(c *Config) { c.CacheSize = -1; c.Leeway = 2 * time.Second })
	hdrs := []string{hdr(m.KeyID()), fmt.Sprintf(`{"alg":"HS256","typ":"rt+jwt","kid":%q}`, m.KeyID())}
	for _, p := range []string{with(nil), with(map[string]any{"scope": nil, "nbf": nil}), `{}`, `{"sub":"a"}`} {
		f.Add(p, uint8(0), int64(0))
		f.Add(p, uint8(1), int64(900))
	}
	tok, _, _ := m.IssueAccess(Subject{UserID: "u", Scopes: scope.MustNew("a"), TokenVersion: 2, SessionID: "s"})
	f.Add(tok, uint8(2), int64(-1))
	f.Fuzz(func(t *testing.T, payload string, which uint8, offset int64) {
		clk.Set(t0.Add(time.Duration(offset%4000) * time.Second))
		defer clk.Set(t0)
		typs := []string{TypAccess, TypRefresh}
		if which >= 2 { // the input is a whole token
			checkFastAgrees(t, m, payload, typs[which%2])
			return
		}
		checkFastAgrees(t, m, signRaw(t, "HS256", testKey, hdrs[which], payload), typs[which])
	})
}
