package config

import (
	"strings"
	"testing"
)

const goodSecret = "q3Jv9Xh2Lw8Zr5Tn1Kc7Ym4Pb6Ds0FgE" // 32 bytes, all distinct

func TestCheckSecretStrength(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{goodSecret, true},
		{"Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG8=", true},
		{strings.Repeat("a", 32), false},
		{strings.Repeat("abcdefg", 5), false},          // 7 distinct
		{strings.Repeat("abcdefgh", 4), false},         // 8 distinct, period 8
		{strings.Repeat("abcdefghijklmnop", 2), false}, // period 16 = len/2
		{strings.Repeat("abcdefghijklmnop", 2) + "q", true},
	} {
		if err := CheckSecretStrength(tc.s); (err == nil) != tc.ok {
			t.Errorf("CheckSecretStrength(%q) = %v, want ok=%v", tc.s, err, tc.ok)
		}
	}
}

func TestPeriod(t *testing.T) {
	for s, want := range map[string]int{"": 0, "a": 1, "aaaa": 1, "abab": 2, "ababa": 2, "abcd": 4, "abcab": 3, "aab": 3} {
		if got := period(s); got != want {
			t.Errorf("period(%q) = %d, want %d", s, got, want)
		}
	}
}
