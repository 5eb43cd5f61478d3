package password

import (
	"slices"
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

func TestClass(t *testing.T) {
	bc12 := "$2b$12$" + strings.Repeat(".", 53)
	for in, want := range map[string]string{
		phc("19456", "2", "1", 16, 32):      "argon2id:m=19456,t=2,p=1",
		phc("65536", "3", "4", 8, 16):       "argon2id:m=65536,t=3,p=4",
		phc("1048576", "4", "1", 16, 32):    "argon2id:m=1048576,t=4,p=1", // above the verify ceilings: still a class
		bc12:                                "bcrypt:12",
		"$2y$05$" + bc12[7:]:                "bcrypt:5",
		"$2a$31$" + bc12[7:]:                "bcrypt:31",
		phc("19456", "2", "1", 7, 32):       "",
		phc("4294967295", "2", "1", 16, 32): "",
		"$2b$03$" + bc12[7:]:                "",
		"plaintext":                         "",
		"":                                  "",
	} {
		if got := Class(in); got != want {
			t.Errorf("Class(%.40s) = %q, want %q", in, got, want)
		}
		if want == "" {
			continue
		}
		if c, ok := parseClass(want); !ok || c.name != want {
			t.Errorf("parseClass(%q) = %+v, %v", want, c, ok)
		}
	}
	for _, s := range []string{"", "bcrypt:", "bcrypt:012", "bcrypt:+12", "bcrypt:3", "bcrypt:32",
		"argon2id:m=19456,t=2", "argon2id:m=19456,t=2,p=1,k=3", "argon2id:m=019456,t=2,p=1",
		"argon2id:m=19456,t=2,p=256", "argon2id:m=19456,t=0,p=1", "scrypt:1"} {
		if c, ok := parseClass(s); ok {
			t.Errorf("parseClass(%q) accepted: %+v", s, c)
		}
	}
}

// TestPadEqualisesFailedLogins: whatever the user (unknown, or holding a
// hash of any class the store lists), a failed login verifies one hash of
// each class: the real one for its own class, dummies for the rest. Counted
// through the observer, and compared class by class through padPlan.
func TestPadEqualisesFailedLogins(t *testing.T) {
	h := cheapHasher(t, 1) // own class argon2id:m=64,t=1,p=1
	own, err := h.Hash("right")
	if err != nil {
		t.Fatal(err)
	}
	weak := cheapHasher(t, 2)
	other, err := weak.Hash("right")
	if err != nil {
		t.Fatal(err)
	}
	bc, err := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	overCeiling := "bcrypt:17" // above verifyMaxBcryptCost: never built
	classes := []string{Class(other), Class(string(bc)), overCeiling, "garbage"}
	want := []string{Class(own), Class(other), Class(string(bc))}
	slices.Sort(want)

	for _, tc := range []struct{ name, encoded, pw string }{
		{"unknown user", "", "wrong"},
		{"own class, wrong password", own, "wrong"},
		{"other argon2id class", other, "wrong"},
		{"bcrypt", string(bc), "wrong"},
		{"bcrypt, password past 72 bytes", string(bc), strings.Repeat("p", 73)},
		{"unusable hash", "$argon2id$garbage", "wrong"},
	} {
		var n atomic.Int32
		c := h.WithObserver(func(time.Duration) { n.Add(1) })
		var spent string
		if tc.encoded != "" {
			_, _, spent, _ = c.VerifyUnpadded(tc.encoded, tc.pw)
		}
		c.Pad(tc.pw, classes, spent)
		if got := n.Load(); got != int32(len(want)) {
			t.Errorf("%s: %d hash computations, want %d", tc.name, got, len(want))
		}
		var done []string
		for _, p := range h.padPlan(classes, spent) {
			done = append(done, p.name)
		}
		if spent != "" {
			done = append(done, spent)
		}
		slices.Sort(done)
		if !slices.Equal(done, want) {
			t.Errorf("%s: verified classes %q, want %q", tc.name, done, want)
		}
	}
}

// TestPadPlanBounded: past maxPadClasses, the most expensive classes are
// padded, h's own always; classes above the ceilings never.
func TestPadPlanBounded(t *testing.T) {
	h := testHasher()
	var classes []string
	for cost := 4; cost <= 16; cost++ {
		classes = append(classes, bcryptClass(cost))
	}
	classes = append(classes, argon2idClass(Params{Memory: 262144, Time: 5, Threads: 1})) // work above verifyMaxWork
	plan := h.padPlan(classes, "")
	var names []string
	for _, c := range plan {
		names = append(names, c.name)
	}
	want := []string{"argon2id:m=19456,t=2,p=1", "bcrypt:16", "bcrypt:15", "bcrypt:14", "bcrypt:13", "bcrypt:12", "bcrypt:11", "bcrypt:10"}
	if !slices.Equal(names, want) {
		t.Errorf("padPlan = %q, want %q", names, want)
	}
}
