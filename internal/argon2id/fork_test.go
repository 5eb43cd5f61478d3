package argon2id

// Tests for what the fork changed: Key must return exactly what
// x/crypto/argon2.IDKey returns, whatever a reused Memory held before.

import (
	"bytes"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"math/rand/v2"
	"runtime"
	"testing"

	"golang.org/x/crypto/argon2"
)

var seedFlag = flag.Uint64("argon2id.seed", 0, "seed for the random differential test (0: random)")

// poison fills every block m holds with random data, so that a computation
// that read a block before writing it would produce a different key.
func poison(m *Memory, rng *rand.Rand) {
	for i := range m.blocks {
		for j := range m.blocks[i] {
			m.blocks[i][j] = rng.Uint64()
		}
	}
}

// withBlockImpls runs f with the assembly block function, when the CPU has
// it, and with the generic Go one.
func withBlockImpls(t *testing.T, f func(t *testing.T)) {
	defer func(sse4, lsx bool) { useSSE4, useLSX = sse4, lsx }(useSSE4, useLSX)
	if useSSE4 || useLSX {
		t.Run("asm", f)
	}
	useSSE4, useLSX = false, false
	t.Run("generic", f)
}

// TestRFC9106ReusedMemory checks the RFC 9106 section 5 test vectors
// (Argon2d, Argon2i and Argon2id, with secret and associated data: the
// genKat values of argon2_test.go) and upstream's vectors, computing each in
// a Memory that is dirty from the previous computation and then poisoned.
func TestRFC9106ReusedMemory(t *testing.T) {
	withBlockImpls(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		mem := NewMemory(64)
		rfc := []struct {
			mode int
			want string
		}{
			{argon2d, "512b391b6f1162975371d30919734294f868e3be3984f3c1a13a4db9fabe4acb"},
			{argon2i, "c814d9d1dc7f37aa13f0d77f2494bda1c8de6b016dd388d29952a4c4672b6ce8"},
			{argon2id, "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"},
		}
		for _, v := range rfc {
			for round := range 2 { // dirty from the previous vector, then from itself
				if round == 1 {
					poison(mem, rng)
				}
				got := deriveKey(v.mode, genKatPassword, genKatSalt, genKatSecret, genKatAAD, 3, 32, 4, 32, mem)
				if hex.EncodeToString(got) != v.want {
					t.Errorf("mode %d round %d: got %x, want %s", v.mode, round, got, v.want)
				}
			}
		}
		password, salt := []byte("password"), []byte("somesalt")
		for i, v := range testVectors {
			want, _ := hex.DecodeString(v.hash)
			poison(mem, rng)
			got := deriveKey(v.mode, password, salt, nil, nil, v.time, v.memory, v.threads, uint32(len(want)), mem)
			if !bytes.Equal(got, want) {
				t.Errorf("vector %d: got %x, want %x", i, got, want)
			}
			if v.mode == argon2id {
				poison(mem, rng)
				if got := Key(password, salt, v.time, v.memory, v.threads, uint32(len(want)), mem); !bytes.Equal(got, want) {
					t.Errorf("vector %d via Key: got %x, want %x", i, got, want)
				}
			}
		}
	})
}

// TestKeyMatchesXCrypto is the differential guard against stale-buffer bugs:
// random inputs and parameters, one Memory reused throughout (dirty from the
// previous case, which had other parameters and inputs, and every third case
// also poisoned), compared with x/crypto/argon2.IDKey.
func TestKeyMatchesXCrypto(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	t.Logf("seed %d (rerun with -argon2id.seed=%d)", seed, seed)
	cases := 120
	if testing.Short() || raceEnabled {
		cases = 40
	}
	withBlockImpls(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		var mem Memory // zero value: grows on first use
		for i := range cases {
			pw := randBytes(rng, rng.IntN(65))
			salt := randBytes(rng, rng.IntN(33))
			tm := 1 + rng.Uint32N(3)
			m := 8 + rng.Uint32N(4096-8+1)
			if rng.IntN(4) == 0 {
				m = 8 + rng.Uint32N(64) // small, often below the 8*threads minimum
			}
			threads := uint8(1 + rng.IntN(4))
			keyLen := 4 + rng.Uint32N(64-4+1)
			if i%3 == 2 {
				poison(&mem, rng)
			}
			got := Key(pw, salt, tm, m, threads, keyLen, &mem)
			want := argon2.IDKey(pw, salt, tm, m, threads, keyLen)
			if !bytes.Equal(got, want) {
				t.Fatalf("case %d (seed %d): Key(pw=%x, salt=%x, t=%d, m=%d, p=%d, len=%d) = %x, x/crypto %x",
					i, seed, pw, salt, tm, m, threads, keyLen, got, want)
			}
		}
	})
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// FuzzKey dirties a Memory with one computation (and optionally random
// garbage), then checks a second computation in it against x/crypto.
func FuzzKey(f *testing.F) {
	f.Add([]byte("password"), []byte("somesalt"), uint8(2), uint16(64), uint8(1), uint8(32), uint16(200), uint8(3), false)
	f.Add([]byte(""), []byte(""), uint8(1), uint16(8), uint8(4), uint8(4), uint16(1000), uint8(1), true)
	f.Add([]byte("x"), []byte("0123456789abcdef"), uint8(3), uint16(300), uint8(3), uint8(64), uint16(17), uint8(4), true)
	f.Fuzz(func(t *testing.T, pw, salt []byte, tm uint8, m uint16, threads, keyLen uint8, prevM uint16, prevThreads uint8, poisonIt bool) {
		tm = 1 + tm%3
		mem32 := 8 + uint32(m)%1017 // 8..1024 KiB
		threads = 1 + threads%4
		keyLen = 4 + keyLen%61 // 4..64
		var mem Memory
		// Dirty mem with other inputs and parameters first.
		Key(append([]byte("prev"), pw...), salt, 1, 8+uint32(prevM)%1017, 1+prevThreads%4, 32, &mem)
		if poisonIt {
			poison(&mem, rand.New(rand.NewPCG(uint64(len(pw)), uint64(m))))
		}
		got := Key(pw, salt, uint32(tm), mem32, threads, uint32(keyLen), &mem)
		want := argon2.IDKey(pw, salt, uint32(tm), mem32, threads, uint32(keyLen))
		if !bytes.Equal(got, want) {
			t.Fatalf("Key(t=%d, m=%d, p=%d, len=%d) = %x, x/crypto %x", tm, mem32, threads, keyLen, got, want)
		}
	})
}

func TestMemorySize(t *testing.T) {
	var nilMem *Memory
	if nilMem.Size() != 0 {
		t.Fatal("nil Memory has a size")
	}
	want := argon2.IDKey([]byte("pw"), []byte("saltsalt"), 1, 64, 1, 16)
	if got := Key([]byte("pw"), []byte("saltsalt"), 1, 64, 1, 16, nil); !bytes.Equal(got, want) {
		t.Fatalf("nil Memory: got %x, want %x", got, want)
	}
	m := new(Memory)
	Key([]byte("pw"), []byte("saltsalt"), 1, 100, 1, 16, m)
	if got := m.Size(); got != 100 {
		t.Errorf("after m=100, p=1: Size = %d, want 100", got)
	}
	Key([]byte("pw"), []byte("saltsalt"), 1, 8, 4, 16, m) // needs 32 blocks
	if got := m.Size(); got != 100 {
		t.Errorf("a smaller computation changed Size to %d", got)
	}
	Key([]byte("pw"), []byte("saltsalt"), 1, 500, 3, 16, m) // 500/12*12 = 492 blocks
	if got := m.Size(); got != 492 {
		t.Errorf("after m=500, p=3: Size = %d, want 492", got)
	}
	if got := NewMemory(19456).Size(); got != 19456 {
		t.Errorf("NewMemory(19456).Size() = %d", got)
	}
	// A preallocated Memory is enough for its size with any threads up to
	// memory/8: Key must not grow it.
	m = NewMemory(1000)
	before := &m.blocks[0]
	for p := uint8(1); p <= 125 && p < 255; p += 31 {
		Key([]byte("pw"), []byte("saltsalt"), 1, 1000, p, 16, m)
	}
	if &m.blocks[0] != before || m.Size() != 1000 {
		t.Errorf("NewMemory(1000) was reallocated")
	}
}

// TestKeyReusesMemory checks that Key with a big-enough Memory allocates
// only small things (blake2b states, the key, a goroutine per segment), not
// the blocks.
func TestKeyReusesMemory(t *testing.T) {
	m := NewMemory(1024)
	Key([]byte("pw"), []byte("saltsalt"), 1, 1024, 1, 32, m)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const runs = 3
	for range runs {
		Key([]byte("pw"), []byte("saltsalt"), 1, 1024, 1, 32, m)
	}
	runtime.ReadMemStats(&after)
	if perRun := (after.TotalAlloc - before.TotalAlloc) / runs; perRun > 64<<10 {
		t.Errorf("Key with a reused 1 MiB Memory allocated %d bytes per call", perRun)
	}
}

func BenchmarkKeyOWASP(b *testing.B) {
	pw, salt := []byte("password"), []byte("choosing random salts is hard")
	b.Run("reused", func(b *testing.B) {
		m := new(Memory)
		b.ReportAllocs()
		for b.Loop() {
			Key(pw, salt, 2, 19456, 1, 32, m)
		}
	})
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Key(pw, salt, 2, 19456, 1, 32, nil)
		}
	})
}
