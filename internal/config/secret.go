package config

import (
	"fmt"
	"strings"

	"github.com/crudauth/caddy-crudauth/internal/token"
)

// MinSecretDistinctBytes is the fewest distinct byte values a configured
// secret may hold. Every generated form of a random key passes with room to
// spare (base64 of 32 random bytes holds about 30 distinct characters, 64
// hex digits about 16, and even 32 random hex digits fewer than 8 with a
// probability near 1e-7), while the keys people type as placeholders
// ("aaaa...", "0000...", "secretsecret...", "changeme...") do not.
const MinSecretDistinctBytes = 8

// Secret checks a configured HS256 secret whose placeholders are resolved
// already, and returns it as the key: without the trailing newline a file
// usually ends with, at least token.MinKeyLen bytes, and strong enough
// (CheckSecretStrength).
func Secret(resolved string) ([]byte, error) {
	resolved = strings.TrimRight(resolved, "\r\n")
	if len(resolved) < token.MinKeyLen {
		return nil, fmt.Errorf("%d bytes is too short, HS256 needs at least %d (generate one with: head -c32 /dev/urandom | base64)",
			len(resolved), token.MinKeyLen)
	}
	if err := CheckSecretStrength(resolved); err != nil {
		return nil, err
	}
	return []byte(resolved), nil
}

// CheckSecretStrength refuses a secret that is long enough but plainly not
// random: fewer than MinSecretDistinctBytes distinct bytes, or a shorter
// pattern repeated (its real strength is that of the pattern).
func CheckSecretStrength(secret string) error {
	var seen [256]bool
	distinct := 0
	for i := 0; i < len(secret); i++ {
		if !seen[secret[i]] {
			seen[secret[i]] = true
			distinct++
		}
	}
	if distinct < MinSecretDistinctBytes {
		return fmt.Errorf("too weak: only %d distinct characters, at least %d needed (generate one with: head -c32 /dev/urandom | base64)",
			distinct, MinSecretDistinctBytes)
	}
	if p := period(secret); p <= len(secret)/2 {
		return fmt.Errorf("too weak: a %d-byte pattern repeated (generate one with: head -c32 /dev/urandom | base64)", p)
	}
	return nil
}

// period returns the smallest p such that s[i] == s[i+p] for every i, that
// is len(s) when s repeats nothing. KMP failure function: O(len(s)).
func period(s string) int {
	if len(s) == 0 {
		return 0
	}
	fail := make([]int, len(s))
	k := 0
	for i := 1; i < len(s); i++ {
		for k > 0 && s[i] != s[k] {
			k = fail[k-1]
		}
		if s[i] == s[k] {
			k++
		}
		fail[i] = k
	}
	return len(s) - fail[len(s)-1]
}
