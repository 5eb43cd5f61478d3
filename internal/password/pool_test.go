package password

import (
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/argon2"
)

// xcryptoPHC is an argon2id PHC string computed with x/crypto/argon2, as the
// Hasher computed them before it had its own argon2id.
func xcryptoPHC(pw string, salt []byte, p Params) string {
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

// TestHashMatchesXCrypto: a hash made with the pooled memory has exactly the
// key x/crypto computes for its salt, and hashes made by x/crypto verify,
// at the default parameters (the pool's buffer reused and dirty).
func TestHashMatchesXCrypto(t *testing.T) {
	h := testHasher()
	const pw = "correct horse battery staple"
	enc, err := h.Hash(pw) // in the buffer the dummy hash left dirty
	if err != nil {
		t.Fatal(err)
	}
	a, err := parseArgon2id(enc, h.limits)
	if err != nil {
		t.Fatal(err)
	}
	if want := xcryptoPHC(pw, a.salt, h.params); enc != want {
		t.Fatalf("Hash = %s, x/crypto %s", enc, want)
	}
	if ok, rehash, err := h.Verify(xcryptoPHC(pw, []byte("0123456789abcdef"), h.params), pw); !ok || rehash || err != nil {
		t.Fatalf("Verify(x/crypto hash) = %v, %v, %v", ok, rehash, err)
	}
}

// TestMemoryPool runs concurrent hashes and verifications, with parameters
// below, at and above the hasher's, through a pool smaller than the
// concurrency: every result must match x/crypto, and the pool must end up
// holding at most its capacity of buffers no bigger than the hasher's memory.
func TestMemoryPool(t *testing.T) {
	base := cheapHasher(t, 2)
	if base.mem != nil {
		t.Fatal("cheapHasher has a pool; this test assumes it starts without")
	}
	h := base.WithMemoryPool(2)
	if cap(h.mem) != 2 || base.mem != nil {
		t.Fatalf("WithMemoryPool: cap %d, original changed: %v", cap(h.mem), base.mem != nil)
	}
	if h.WithObserver(nil).mem != h.mem {
		t.Fatal("WithObserver does not share the pool")
	}
	if got := cap(h.WithMemoryPool(0).mem); got != 1 {
		t.Fatalf("WithMemoryPool(0): cap %d, want 1", got)
	}

	salt := []byte("0123456789abcdef")
	variants := []Params{
		{Memory: 64, Time: 2, Threads: 1, KeyLen: 32},  // the hasher's own
		{Memory: 32, Time: 1, Threads: 2, KeyLen: 16},  // weaker import (padded with a dummy)
		{Memory: 200, Time: 1, Threads: 3, KeyLen: 24}, // more memory than the hasher: not pooled
		{Memory: 64, Time: 3, Threads: 4, KeyLen: 20},
	}
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for i := range 8 {
				pw := fmt.Sprintf("pw-%d-%d", g, i)
				p := variants[(g+i)%len(variants)]
				enc := xcryptoPHC(pw, salt, p)
				if ok, _, err := h.Verify(enc, pw); !ok || err != nil {
					t.Errorf("Verify(%v) = %v, %v", p, ok, err)
				}
				if ok, _, err := h.Verify(enc, pw+"x"); ok || err != nil {
					t.Errorf("Verify(%v, wrong password) = %v, %v", p, ok, err)
				}
				own, err := h.Hash(pw)
				if err != nil {
					t.Error(err)
					continue
				}
				a, err := parseArgon2id(own, h.limits)
				if err != nil {
					t.Error(err)
					continue
				}
				if want := xcryptoPHC(pw, a.salt, h.params); own != want {
					t.Errorf("Hash = %s, x/crypto %s", own, want)
				}
				h.VerifyDummy(pw)
			}
		})
	}
	wg.Wait()
	if n := len(h.mem); n < 1 || n > 2 {
		t.Errorf("pool holds %d buffers, want 1..2", n)
	}
	for range len(h.mem) {
		if m := <-h.mem; m.Size() > h.params.Memory {
			t.Errorf("pool holds a %d KiB buffer, more than the hasher's %d", m.Size(), h.params.Memory)
		}
	}
}

// TestMemoryPoolDefault: NewHasher pools one buffer, already used for the
// dummy hash, and Hash, Verify and VerifyDummy reuse it.
func TestMemoryPoolDefault(t *testing.T) {
	h, err := NewHasher(DefaultParams) // not the shared one: this test takes its buffer
	if err != nil {
		t.Fatal(err)
	}
	if cap(h.mem) != 1 {
		t.Fatalf("default pool cap %d, want 1", cap(h.mem))
	}
	if len(h.mem) != 1 {
		t.Fatalf("NewHasher left %d buffers in the pool, want 1", len(h.mem))
	}
	enc, err := h.Hash("pool-default")
	if err != nil {
		t.Fatal(err)
	}
	m := <-h.mem // take the buffer out and see whether it comes back
	if m.Size() != h.params.Memory {
		t.Fatalf("pooled buffer is %d KiB, want %d", m.Size(), h.params.Memory)
	}
	h.mem <- m
	for name, f := range map[string]func(){
		"Hash":        func() { _, _ = h.Hash("pool-default") },
		"Verify":      func() { _, _, _ = h.Verify(enc, "pool-default") },
		"VerifyDummy": func() { h.VerifyDummy("pool-default") },
	} {
		f()
		if len(h.mem) != 1 {
			t.Fatalf("%s: pool holds %d buffers", name, len(h.mem))
		}
		if got := <-h.mem; got != m {
			t.Fatalf("%s did not reuse the pooled buffer", name)
		} else {
			h.mem <- got
		}
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("unexpected hash %s", enc)
	}
}

// TestMemoryPoolKeepsIdleMemory: WithMemoryPool takes over the memory
// NewHasher's dummy hash left in the pool (so a gateway holds it from the
// start instead of dropping and reallocating it), never more than its
// capacity, and the result still matches x/crypto.
func TestMemoryPoolKeepsIdleMemory(t *testing.T) {
	base, err := NewHasher(DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	p := DefaultParams
	if len(base.mem) != 1 {
		t.Fatalf("NewHasher's pool holds %d memories after the dummy hash, want 1", len(base.mem))
	}
	h := base.WithMemoryPool(3)
	if len(h.mem) != 1 || len(base.mem) != 0 {
		t.Fatalf("after WithMemoryPool: copy holds %d, original %d; want 1 and 0", len(h.mem), len(base.mem))
	}
	// A second copy from the now empty original starts empty.
	if h2 := base.WithMemoryPool(2); len(h2.mem) != 0 {
		t.Fatalf("copy of an empty pool holds %d", len(h2.mem))
	}
	salt := []byte("0123456789abcdef")
	enc := xcryptoPHC("pw", salt, p)
	if ok, _, err := h.Verify(enc, "pw"); !ok || err != nil {
		t.Fatalf("Verify = %v, %v", ok, err)
	}
	if len(h.mem) != 1 {
		t.Fatalf("after a verification the pool holds %d, want 1", len(h.mem))
	}
}
