package caddymodule

import (
	"fmt"
)

// Checks at start for unsafe input limits and secrets; each message names
// the field.

// minSecretDistinctBytes is the fewest distinct byte values a configured
// secret may hold. Every generated form of a random key passes with room to
// spare (base64 of 32 random bytes holds about 30 distinct characters, 64
// hex digits about 16, and even 32 random hex digits fewer than 8 with a
// probability near 1e-7), while the keys people type as placeholders
// ("aaaa...", "0000...", "secretsecret...", "changeme...") do not.
const minSecretDistinctBytes = 8

// checkSecretStrength refuses a secret that is long enough but plainly not
// random: fewer than minSecretDistinctBytes distinct bytes, or a shorter
// pattern repeated (its real strength is that of the pattern).
func checkSecretStrength(secret string) error {
	var seen [256]bool
	distinct := 0
	for i := 0; i < len(secret); i++ {
		if !seen[secret[i]] {
			seen[secret[i]] = true
			distinct++
		}
	}
	if distinct < minSecretDistinctBytes {
		return fmt.Errorf("too weak: only %d distinct characters, at least %d needed (generate one with: head -c32 /dev/urandom | base64)",
			distinct, minSecretDistinctBytes)
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

// checkHostile checks the settings that bound a hostile client: throttling
// and the hashing cap.
func (h *Handler) checkHostile() error {
	return h.RealmSettings.check()
}
