package password

import (
	"errors"
	"strings"
	"testing"
)

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name    string
		p       Policy
		wantErr string // field named in the message; "" means valid
	}{
		{"default", DefaultPolicy, ""},
		{"zero means defaults", Policy{}, ""},
		{"min 1", Policy{MinLength: 1, MaxLength: 64}, ""},
		{"max at byte cap", Policy{MinLength: 8, MaxLength: MaxBytes}, ""},
		{"min negative", Policy{MinLength: -1}, "min_length"},
		{"max below 64", Policy{MinLength: 8, MaxLength: 63}, "max_length"},
		{"max negative", Policy{MaxLength: -5}, "max_length"},
		{"max above byte cap", Policy{MaxLength: MaxBytes + 1}, "max_length"},
		{"min above max", Policy{MinLength: 100, MaxLength: 64}, "min_length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestPolicyCheck(t *testing.T) {
	p := DefaultPolicy
	tests := []struct {
		name string
		p    Policy
		pw   string
		want error
	}{
		{"empty", p, "", ErrEmpty},
		{"7 chars", p, "abcdefg", ErrTooShort},
		{"8 chars", p, "abcdefgh", nil},
		{"spaces count", p, "a b c d ", nil},
		// 8 runes but 24 bytes: runes are what count.
		{"8 multibyte runes", p, "日本語日本語日本", nil},
		{"7 multibyte runes", p, "日本語日本語日", ErrTooShort},
		// 4 emoji are 16 bytes but 4 characters.
		{"4 emoji", p, "😀😀😀😀", ErrTooShort},
		{"exactly max", p, strings.Repeat("a", 256), nil},
		{"exactly max multibyte", p, strings.Repeat("é", 256), nil},
		{"max plus one", p, strings.Repeat("a", 257), ErrTooLong},
		{"over byte cap", Policy{MaxLength: MaxBytes}, strings.Repeat("a", MaxBytes+1), ErrTooLong},
		{"at byte cap", Policy{MaxLength: MaxBytes}, strings.Repeat("a", MaxBytes), nil},
		// 1100 runes of 4 bytes: within MaxLength runes, over the byte cap.
		{"byte cap before runes", Policy{MaxLength: MaxBytes}, strings.Repeat("😀", 1100), ErrTooLong},
		{"invalid utf8", p, "abcdefgh\xff", ErrInvalidUTF8},
		{"truncated rune", p, "abcdefgh\xe6\x97", ErrInvalidUTF8},
		{"surrogate", p, "abcdefgh\xed\xa0\x80", ErrInvalidUTF8},
		{"custom min", Policy{MinLength: 12, MaxLength: 64}, "abcdefghijk", ErrTooShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Check(tt.pw)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check() = %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Check() = %v, want %v", err, tt.want)
			}
			if len(tt.pw) >= 4 && strings.Contains(err.Error(), tt.pw) {
				t.Fatal("error contains the password")
			}
		})
	}
}
