package password

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// MaxBytes is the hard cap on a password's length in bytes. Check tests it
// first, with len, before counting runes; Hash refuses longer passwords and
// Verify fails them without hashing. Nothing is ever truncated.
const MaxBytes = 4096

// Sentinel errors wrapped by Policy.Check.
var (
	ErrEmpty       = errors.New("password is empty")
	ErrTooShort    = errors.New("password is too short")
	ErrTooLong     = errors.New("password is too long")
	ErrInvalidUTF8 = errors.New("password is not valid utf-8")
)

// Defaults for Policy.
const (
	DefaultMinLength = 8
	DefaultMaxLength = 256
	// minMaxLength: NIST SP 800-63B section 3.1.1.2 says verifiers should
	// permit at least 64 characters.
	minMaxLength = 64
)

// Policy is the rule a new password must meet: a length in characters
// (Unicode code points), and nothing else. Following NIST SP 800-63B section
// 3.1.1.2 there are no composition rules (no "one digit, one symbol").
type Policy struct {
	// MinLength is the minimum length in characters. Default (zero): 8.
	MinLength int
	// MaxLength is the maximum length in characters; it must be at least
	// 64 and at most MaxBytes. Default (zero): 256.
	MaxLength int
}

// DefaultPolicy is the policy used when none is configured.
var DefaultPolicy = Policy{MinLength: DefaultMinLength, MaxLength: DefaultMaxLength}

func (p Policy) withDefaults() Policy {
	if p.MinLength == 0 {
		p.MinLength = DefaultMinLength
	}
	if p.MaxLength == 0 {
		p.MaxLength = DefaultMaxLength
	}
	return p
}

// Validate refuses an unusable policy. Zero fields take their defaults.
func (p Policy) Validate() error {
	p = p.withDefaults()
	switch {
	case p.MinLength < 1:
		return fmt.Errorf("min_length must be at least 1, got %d", p.MinLength)
	case p.MaxLength < minMaxLength:
		return fmt.Errorf("max_length must be at least %d, got %d", minMaxLength, p.MaxLength)
	case p.MaxLength > MaxBytes:
		return fmt.Errorf("max_length must be at most %d, got %d", MaxBytes, p.MaxLength)
	case p.MinLength > p.MaxLength:
		return fmt.Errorf("min_length (%d) must not exceed max_length (%d)", p.MinLength, p.MaxLength)
	}
	return nil
}

// Check returns nil when pw meets the policy, or an error wrapping ErrEmpty,
// ErrTooLong, ErrInvalidUTF8 or ErrTooShort. Zero fields take their
// defaults. The error never contains the password.
func (p Policy) Check(pw string) error {
	// The byte cap comes first so an oversized input costs O(1).
	if len(pw) > MaxBytes {
		return fmt.Errorf("%w: more than %d bytes", ErrTooLong, MaxBytes)
	}
	if pw == "" {
		return ErrEmpty
	}
	if !utf8.ValidString(pw) {
		return ErrInvalidUTF8
	}
	p = p.withDefaults()
	n := utf8.RuneCountInString(pw)
	if n < p.MinLength {
		return fmt.Errorf("%w: %d characters, at least %d required", ErrTooShort, n, p.MinLength)
	}
	if n > p.MaxLength {
		return fmt.Errorf("%w: %d characters, at most %d allowed", ErrTooLong, n, p.MaxLength)
	}
	return nil
}
