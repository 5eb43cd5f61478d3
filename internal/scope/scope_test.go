package scope

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // String() of the result
		wantErr bool
	}{
		{in: "", want: ""},
		{in: "a", want: "a"},
		{in: "b a", want: "a b"},
		{in: "a a a", want: "a"},
		{in: "  a   b  ", want: "a b"},
		{in: "me:read reports:write", want: "me:read reports:write"},
		{in: "!#$%&'()*+,-./:;<=>?@[]^_`{|}~", want: "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"},
		{in: "a\tb", wantErr: true},
		{in: "a\nb", wantErr: true},
		{in: `a"b`, wantErr: true},
		{in: `a\b`, wantErr: true},
		{in: "caf\u00e9", wantErr: true},
		{in: "a\x00", wantErr: true},
		{in: "a\x7f", wantErr: true},
		{in: "a\u00a0b", wantErr: true}, // no-break space is not a separator
		{in: strings.Repeat("x", MaxScopeLen), want: strings.Repeat("x", MaxScopeLen)},
		{in: strings.Repeat("x", MaxScopeLen+1), wantErr: true},
	} {
		got, err := Parse(tc.in)
		if tc.wantErr {
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) error = %v, want ErrInvalid", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got.String() != tc.want {
			t.Errorf("Parse(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseTooMany(t *testing.T) {
	var b strings.Builder
	for i := 0; i <= MaxScopes; i++ {
		b.WriteString("s")
		b.WriteString(strings.Repeat("x", i))
		b.WriteString(" ")
	}
	if _, err := Parse(b.String()); err == nil {
		t.Fatalf("%d scopes accepted, limit is %d", MaxScopes+1, MaxScopes)
	}
	// the limit counts tokens as sent, before duplicates collapse, so a
	// request cannot make the parser sort an unbounded list
	if _, err := Parse(strings.Repeat("a ", MaxScopes+1)); err == nil {
		t.Fatalf("%d repeated scopes accepted", MaxScopes+1)
	}
	if s, err := Parse(strings.Repeat("a ", MaxScopes)); err != nil || s.String() != "a" {
		t.Fatalf("%d repeated scopes: %q, %v", MaxScopes, s, err)
	}
}

func TestSetOps(t *testing.T) {
	s := MustNew("a", "b", "c")
	for _, tc := range []struct {
		sub  Set
		want bool
	}{
		{nil, true}, {MustNew("a"), true}, {MustNew("a", "c"), true}, {MustNew("a", "b", "c"), true},
		{MustNew("d"), false}, {MustNew("a", "d"), false}, {MustNew("0"), false},
	} {
		if got := s.ContainsAll(tc.sub); got != tc.want {
			t.Errorf("%v.ContainsAll(%v) = %v", s, tc.sub, got)
		}
	}
	if got := s.Intersect(MustNew("b", "c", "d")); got.String() != "b c" {
		t.Errorf("Intersect = %q", got)
	}
	if got := s.Intersect(nil); len(got) != 0 {
		t.Errorf("Intersect(nil) = %q", got)
	}
	if got := s.Missing(MustNew("a", "x", "y")); got.String() != "x y" {
		t.Errorf("Missing = %q", got)
	}
	if !s.Contains("b") || s.Contains("d") {
		t.Error("Contains")
	}
	if !s.Equal(MustNew("c", "b", "a")) || s.Equal(MustNew("a")) {
		t.Error("Equal")
	}
}

// TestGrant is the narrowing rule: a client may narrow, never widen.
func TestGrant(t *testing.T) {
	ceiling := MustNew("me:read", "reports:read", "reports:write")
	defaults := MustNew("me:read")
	onlyRead := MustNew("me:read", "reports:read")
	none := Set{}
	for _, tc := range []struct {
		name      string
		requested Set
		allowed   *Set
		want      string
	}{
		{"nothing asked gets defaults", nil, nil, "me:read"},
		{"narrowing", MustNew("reports:read"), nil, "reports:read"},
		{"widening past the ceiling is cut", MustNew("admin", "reports:read"), nil, "reports:read"},
		{"only ungrantable asked gets nothing", MustNew("admin"), nil, ""},
		{"user list caps", MustNew("reports:read", "reports:write"), &onlyRead, "reports:read"},
		{"user list caps defaults", nil, &none, ""},
		{"user list cannot widen the ceiling", MustNew("admin"), ptr(MustNew("admin")), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Grant(tc.requested, defaults, ceiling, tc.allowed)
			if got.String() != tc.want {
				t.Errorf("Grant = %q, want %q", got, tc.want)
			}
			if !ceiling.ContainsAll(got) {
				t.Errorf("granted %q outside the ceiling", got)
			}
		})
	}
}

func ptr(s Set) *Set { return &s }

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "a", "a b", " a  b ", "a\tb", `"`, "\xff", "me:read reports:write"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		// every accepted token is valid, sorted and distinct, and the
		// wire form parses back to the same set
		for i, tok := range s {
			if !ValidToken(tok) {
				t.Fatalf("invalid token %q accepted from %q", tok, in)
			}
			if i > 0 && s[i-1] >= tok {
				t.Fatalf("set not sorted/distinct: %q", s)
			}
		}
		again, err := Parse(s.String())
		if err != nil || !again.Equal(s) {
			t.Fatalf("round trip of %q: %q, %v", s, again, err)
		}
		if !s.ContainsAll(s) || len(s.Intersect(s)) != len(s) {
			t.Fatalf("set algebra broken on %q", s)
		}
	})
}

// TestParseErrorQuotesBounded: an invalid scope token is quoted in the
// error, cut to 32 characters, so a huge one does not flood a log line.
func TestParseErrorQuotesBounded(t *testing.T) {
	_, err := Parse(strings.Repeat("\"", 10_000))
	if err == nil {
		t.Fatal("invalid token accepted")
	}
	if n := len(err.Error()); n > 200 {
		t.Fatalf("error is %d bytes long", n)
	}
}
