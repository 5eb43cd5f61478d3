package token

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAuthorization(t *testing.T) {
	tests := []struct {
		header  string
		want    string
		wantErr error
	}{
		{"Bearer abc", "abc", nil},
		{"bearer abc", "abc", nil},
		{"BEARER abc", "abc", nil},
		{"bEaReR abc", "abc", nil},
		{"Bearer   abc", "abc", nil},
		{"Bearer a.b.c", "a.b.c", nil},
		{"Bearer aA0-._~+/", "aA0-._~+/", nil},
		{"Bearer abc=", "abc=", nil},
		{"Bearer abc==", "abc==", nil},
		{"Bearer " + strings.Repeat("a", MaxAuthorizationLen-7), strings.Repeat("a", MaxAuthorizationLen-7), nil},

		{"", "", ErrNoToken},
		{"Bearer " + strings.Repeat("a", MaxAuthorizationLen-6), "", ErrMalformed},
		{"Bearer", "", ErrMalformed},
		{"Bearer ", "", ErrMalformed},
		{"Bearer    ", "", ErrMalformed},
		{"Bearerabc", "", ErrMalformed},
		{"Bearer\tabc", "", ErrMalformed},
		{"Bearer \tabc", "", ErrMalformed},
		{"Bearer abc ", "", ErrMalformed},
		{"Bearer abc\t", "", ErrMalformed},
		{"Bearer abc def", "", ErrMalformed},
		{"Bearer abc,def", "", ErrMalformed},
		{"Bearer abc=d", "", ErrMalformed},
		{"Bearer =abc", "", ErrMalformed},
		{"Bearer ===", "", ErrMalformed},
		{"Bearer abc\x00", "", ErrMalformed},
		{"Bearer abc\r\n", "", ErrMalformed},
		{"Bearer \"abc\"", "", ErrMalformed},
		{"Bearer ab%63", "", ErrMalformed},
		{"Bearer äbc", "", ErrMalformed},
		{" Bearer abc", "", ErrMalformed},
		{"Basic dXNlcjpwYXNz", "", ErrMalformed},
		{"Token abc", "", ErrMalformed},
		{"Bear abc", "", ErrMalformed},
		{"Bearer-abc", "", ErrMalformed},
		{"abc", "", ErrMalformed},
		{"B", "", ErrMalformed},
		{"Bearer\u00a0abc", "", ErrMalformed},
		{"\u212aearer abc", "", ErrMalformed}, // Kelvin sign is not B, and Bearer has no k anyway
		{"Beare\u017f abc", "", ErrMalformed},
	}
	for _, tt := range tests {
		name := tt.header
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			got, err := ParseAuthorization(tt.header)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || got != "" {
					t.Fatalf("ParseAuthorization = %q, %v; want error %v", got, err, tt.wantErr)
				}
				if tt.wantErr == ErrMalformed && errors.Is(err, ErrNoToken) {
					t.Fatal("malformed header reported as no token")
				}
				if len(tt.header) > 12 && strings.Contains(err.Error(), tt.header[7:]) {
					t.Fatalf("error quotes the header: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseAuthorization = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseAuthorizationNoAlloc(t *testing.T) {
	h := "Bearer " + strings.Repeat("abcdefgh.", 40) + "xyz"
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseAuthorization(h); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("allocs = %v", allocs)
	}
	allocs = testing.AllocsPerRun(100, func() { _, _ = ParseAuthorization("Basic abc") })
	if allocs != 0 {
		t.Fatalf("failure allocs = %v", allocs)
	}
}

// TestParseAuthorizationLengthFirst: the length check comes before any scan,
// so a huge header fails the same way whatever it holds.
func TestParseAuthorizationLengthFirst(t *testing.T) {
	for _, h := range []string{
		strings.Repeat("x", MaxAuthorizationLen+1),
		"Bearer " + strings.Repeat("a", MaxAuthorizationLen),
		strings.Repeat(" ", 1<<20),
	} {
		if _, err := ParseAuthorization(h); err != errHeaderTooLong {
			t.Fatalf("err = %v", err)
		}
	}
}
