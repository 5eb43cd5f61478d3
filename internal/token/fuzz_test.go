package token

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/scope"
)

func FuzzParseAuthorization(f *testing.F) {
	for _, s := range []string{
		"", "Bearer abc", "bearer a.b.c", "Bearer  abc==", "Bearer abc=d", "Basic dXNlcg==",
		"Bearer", "Bearer ", "Bearer\tabc", "Bearer abc ", "BEARER " + strings.Repeat("x", 100),
		"Bearer aA0-._~+/=", "Bearer ä",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := ParseAuthorization(header)
		if err != nil {
			if tok != "" {
				t.Fatal("token returned with an error")
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNoToken) {
				t.Fatalf("unexpected error %v", err)
			}
			if errors.Is(err, ErrNoToken) != (header == "") {
				t.Fatalf("ErrNoToken for %q", header)
			}
			return
		}
		if len(header) > MaxAuthorizationLen {
			t.Fatal("over-long header accepted")
		}
		if tok == "" || !strings.HasSuffix(header, tok) {
			t.Fatalf("token %q is not a suffix of the header", tok)
		}
		body := strings.TrimRight(tok, "=")
		if body == "" {
			t.Fatalf("token %q has no b64token characters", tok)
		}
		for i := 0; i < len(body); i++ {
			if !b64tokenChar[body[i]] {
				t.Fatalf("token %q holds %q", tok, body[i])
			}
		}
		if !strings.EqualFold(header[:6], "bearer") || strings.TrimLeft(header[6:], " ") != tok || header[6] != ' ' {
			t.Fatalf("header %q gave token %q", header, tok)
		}
		if len(tok)+7 <= MaxAuthorizationLen {
			again, err := ParseAuthorization("Bearer " + tok)
			if err != nil || again != tok {
				t.Fatalf("round trip: %q, %v", again, err)
			}
		}
	})
}

// fuzzState is shared by the fuzz workers of one process: its clock is
// fixed, and issued records every token it minted.
var fuzzState struct {
	once   sync.Once
	m      *Manager
	issued map[string]bool
	seeds  []string
}

func fuzzSetup(tb testing.TB) {
	fuzzState.once.Do(func() {
		m, _ := newTestManager(tb, func(c *Config) { c.CacheSize = 64 })
		// Every fuzz process must mint the same tokens: the coordinator
		// hands its seeds to workers that have their own Manager.
		m.jtiSource = &countingReader{}
		fuzzState.m = m
		fuzzState.issued = map[string]bool{}
		for _, s := range []Subject{
			{UserID: "user-1", Scopes: scope.MustNew("read", "write"), TokenVersion: 1, SessionID: "s1"},
			{UserID: "user-2"},
		} {
			tok, _, err := m.IssueAccess(s)
			if err != nil {
				tb.Fatal(err)
			}
			fuzzState.issued[tok] = true
			fuzzState.seeds = append(fuzzState.seeds, tok)
			rt, _, _ := m.IssueRefresh(s)
			fuzzState.seeds = append(fuzzState.seeds, rt) // a refresh token must not verify as access
		}
	})
}

func FuzzVerifyAccess(f *testing.F) {
	fuzzSetup(f)
	m := fuzzState.m
	kid := m.KeyID()
	for _, tok := range fuzzState.seeds {
		f.Add(tok)
		parts := strings.Split(tok, ".")
		f.Add(tok[:len(tok)-1])
		f.Add(tok + "=")
		f.Add(parts[0] + "." + parts[1] + ".")
		f.Add(parts[0] + "." + parts[1])
		f.Add(tok[:len(tok)-1] + string(tok[len(tok)-1]^1))
		f.Add(strings.ToUpper(tok))
		f.Add(b64(`{"alg":"none","typ":"at+jwt"}`) + "." + parts[1] + ".")
		f.Add(b64(fmt.Sprintf(`{"alg":"HS512","typ":"at+jwt","kid":%q}`, kid)) + "." + parts[1] + "." + parts[2])
		pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
		dup := strings.Replace(string(pb), "{", `{"token_version":0,`, 1)
		f.Add(parts[0] + "." + b64(dup) + "." + parts[2])
	}
	f.Add("")
	f.Add("..")
	f.Add(strings.Repeat(".", 100))
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := m.VerifyAccess(s)
		if err == nil {
			if !fuzzState.issued[s] {
				t.Fatalf("a token the manager never issued verified: %q", s)
			}
			if c == nil || c.UserID == "" {
				t.Fatal("nil or empty claims")
			}
			return
		}
		if fuzzState.issued[s] {
			t.Fatalf("issued token refused: %v", err)
		}
		kindOf(t, err)
		if len(s) >= 16 && strings.Contains(err.Error(), s) {
			t.Fatal("error quotes the token")
		}
	})
}

// countingReader yields 0, 1, 2, ... as bytes: reproducible, never repeating
// within the few tokens a fuzz setup mints.
type countingReader struct{ n byte }

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.n
		r.n++
	}
	return len(p), nil
}
