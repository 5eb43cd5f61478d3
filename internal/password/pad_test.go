package password

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// countHashes verifies pw against encoded and returns how many hash
// computations ran (the observer sees every one, the dummy's included).
func countHashes(h *Hasher, encoded, pw string) int32 {
	var n atomic.Int32
	c := h.WithObserver(func(time.Duration) { n.Add(1) })
	_, _, _ = c.Verify(encoded, pw)
	return n.Load()
}

// TestVerifyPadsCheapHashes: a stored hash that verifies faster than the
// dummy hash an unknown user costs would tell, by timing, that the account
// exists. Such verifications also run the dummy.
func TestVerifyPadsCheapHashes(t *testing.T) {
	h, err := NewHasher(DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	current, err := h.Hash("pad-test-password")
	if err != nil {
		t.Fatal(err)
	}
	weak := cheapHasher(t, 1)
	weakHash, err := weak.Hash("pad-test-password")
	if err != nil {
		t.Fatal(err)
	}
	cheapBcrypt, _ := bcrypt.GenerateFromPassword([]byte("pad-test-password"), bcrypt.MinCost)

	for _, tc := range []struct {
		name, encoded, pw string
		want              int32
	}{
		{"current parameters: one hash", current, "pad-test-password", 1},
		{"weaker argon2id: padded", weakHash, "pad-test-password", 2},
		{"cheap bcrypt: padded", string(cheapBcrypt), "pad-test-password", 2},
		{"bcrypt past 72 bytes: the dummy instead", string(cheapBcrypt), strings.Repeat("p", 73), 1},
	} {
		if got := countHashes(h, tc.encoded, tc.pw); got != tc.want {
			t.Errorf("%s: %d hash computations, want %d", tc.name, got, tc.want)
		}
	}
}
