package password

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestWithObserver(t *testing.T) {
	base, err := NewHasher(FloorParams)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	h := base.WithObserver(func(d time.Duration) {
		if d <= 0 {
			t.Errorf("non-positive duration %v", d)
		}
		n.Add(1)
	})
	enc, err := h.Hash("observed-password")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := h.Verify(enc, "observed-password"); !ok || err != nil {
		t.Fatalf("Verify = %v, %v", ok, err)
	}
	h.VerifyDummy("x")
	if got := n.Load(); got != 3 {
		t.Errorf("observer called %d times, want 3 (hash, verify, dummy)", got)
	}
	// The original is unchanged.
	if _, err := base.Hash("another-password"); err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 3 {
		t.Errorf("WithObserver changed the original hasher")
	}
	// A malformed hash costs no hashing and is not observed.
	_, _, _ = h.Verify("$argon2id$garbage", "x")
	if got := n.Load(); got != 3 {
		t.Errorf("malformed hash observed")
	}
}
