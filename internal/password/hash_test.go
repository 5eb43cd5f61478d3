package password

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// testHasher is shared: NewHasher computes a hash, and the suite must stay
// fast.
var testHasher = sync.OnceValue(func() *Hasher {
	h, err := NewHasher(DefaultParams)
	if err != nil {
		panic(err)
	}
	return h
})

// cheapHasher bypasses Validate for tests that exercise parsing and
// comparison rather than cost: the code path is the same, and the suite
// stays fast under -race (which slows argon2 about tenfold).
func cheapHasher(t testing.TB, time uint32) *Hasher {
	t.Helper()
	p := Params{Memory: 64, Time: time, Threads: 1, KeyLen: 32, SaltLen: 16}
	h := &Hasher{params: p, limits: limitsFor(p)}
	dummy, err := h.hash("dummy")
	if err != nil {
		t.Fatal(err)
	}
	h.dummy = dummy
	return h
}

// phc builds an argon2id string with zero salt and key of the given sizes.
func phc(m, t, p string, saltLen, keyLen int) string {
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=19$m=%s,t=%s,p=%s$%s$%s", m, t, p,
		enc.EncodeToString(make([]byte, saltLen)), enc.EncodeToString(make([]byte, keyLen)))
}

func TestParamsValidate(t *testing.T) {
	mod := func(f func(*Params)) Params { p := DefaultParams; f(&p); return p }
	tests := []struct {
		name    string
		p       Params
		wantErr string // substring naming the field; "" means valid
	}{
		{"default", DefaultParams, ""},
		{"floor", FloorParams, ""},
		{"stronger", Params{Memory: 65536, Time: 3, Threads: 4, KeyLen: 32, SaltLen: 16}, ""},
		{"ceilings", Params{Memory: MaxMemory, Time: MaxTime, Threads: MaxThreads, KeyLen: MaxKeyLen, SaltLen: MaxSaltLen}, ""},
		{"zero", Params{}, "memory"},
		{"memory below floor", mod(func(p *Params) { p.Memory = 19455 }), "memory"},
		{"memory absurd", mod(func(p *Params) { p.Memory = MaxMemory + 1 }), "memory"},
		{"time below floor", mod(func(p *Params) { p.Time = 1 }), "time"},
		{"time absurd", mod(func(p *Params) { p.Time = MaxTime + 1 }), "time"},
		{"threads zero", mod(func(p *Params) { p.Threads = 0 }), "threads"},
		{"threads absurd", mod(func(p *Params) { p.Threads = MaxThreads + 1 }), "threads"},
		{"key short", mod(func(p *Params) { p.KeyLen = 15 }), "key_len"},
		{"key absurd", mod(func(p *Params) { p.KeyLen = MaxKeyLen + 1 }), "key_len"},
		{"salt short", mod(func(p *Params) { p.SaltLen = 15 }), "salt_len"},
		{"salt absurd", mod(func(p *Params) { p.SaltLen = MaxSaltLen + 1 }), "salt_len"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr+" ") {
				t.Fatalf("Validate() = %v, want an error naming %q", err, tt.wantErr)
			}
		})
	}
	if _, err := NewHasher(Params{}); err == nil {
		t.Fatal("NewHasher(Params{}) succeeded")
	}
}

func TestHashFormat(t *testing.T) {
	t.Parallel()
	h := testHasher()
	enc, err := h.Hash("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("unexpected prefix: %s", enc)
	}
	parts := strings.Split(enc, "$")
	if len(parts[4]) != 22 || len(parts[5]) != 43 { // 16 and 32 bytes, unpadded
		t.Fatalf("salt/key lengths %d/%d", len(parts[4]), len(parts[5]))
	}
	enc2, _ := h.Hash("correct horse battery staple")
	if enc == enc2 {
		t.Fatal("two hashes of the same password are equal: salt is not random")
	}
	if !IsHash(enc) || Algorithm(enc) != AlgArgon2id {
		t.Fatalf("IsHash/Algorithm do not recognize %s", enc)
	}
	if err := h.ValidateHash(enc); err != nil {
		t.Fatal(err)
	}
	// Round trip with the real parameters; TestVerify covers the cases.
	if ok, rehash, err := h.Verify(enc, "correct horse battery staple"); !ok || rehash || err != nil {
		t.Fatalf("Verify = %v %v %v", ok, rehash, err)
	}
	if _, err := h.Hash(strings.Repeat("a", MaxBytes+1)); !errors.Is(err, ErrTooLong) {
		t.Fatalf("Hash(oversized) = %v, want ErrTooLong", err)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	h := cheapHasher(t, 1)
	const pw = "correct horse battery staple"
	own, err := h.Hash(pw)
	if err != nil {
		t.Fatal(err)
	}
	stronger := cheapHasher(t, 2)
	other, err := stronger.Hash(pw)
	if err != nil {
		t.Fatal(err)
	}
	bc := func(pw string) string {
		b, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	bcHash := bc(pw)
	long72 := strings.Repeat("x", 72)
	bcLong := bc(long72)
	// $2y$ (PHP) and $2b$ differ from $2a$ only in the prefix for
	// passwords that x/crypto accepts.
	bcY := "$2y$" + bcHash[4:]
	bcB := "$2b$" + bcHash[4:]
	unicode := "pässwörd-ü-日本語"
	uHash, _ := h.Hash(unicode)

	tests := []struct {
		name        string
		encoded, pw string
		ok, rehash  bool
	}{
		{"argon2id match", own, pw, true, false},
		{"argon2id wrong", own, pw + "!", false, false},
		{"argon2id empty pw", own, "", false, false},
		{"argon2id unicode", uHash, unicode, true, false},
		{"argon2id other params", other, pw, true, true},
		{"argon2id other params wrong", other, "nope", false, false},
		{"argon2id oversized pw", own, strings.Repeat("a", MaxBytes+1), false, false},
		{"bcrypt 2a", bcHash, pw, true, true},
		{"bcrypt 2y", bcY, pw, true, true},
		{"bcrypt 2b", bcB, pw, true, true},
		{"bcrypt wrong", bcHash, "wrong", false, false},
		{"bcrypt 72 bytes", bcLong, long72, true, true},
		// bcrypt would ignore the 73rd byte; we refuse instead.
		{"bcrypt 73 bytes", bcLong, long72 + "y", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, rehash, err := h.Verify(tt.encoded, tt.pw)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if ok != tt.ok || rehash != tt.rehash {
				t.Fatalf("Verify = ok %v rehash %v, want %v %v", ok, rehash, tt.ok, tt.rehash)
			}
		})
	}
	// The stronger hasher can verify a default hash and wants it upgraded.
	if ok, rehash, err := stronger.Verify(own, pw); !ok || !rehash || err != nil {
		t.Fatalf("stronger.Verify(default hash) = %v %v %v", ok, rehash, err)
	}
	if Algorithm(bcHash) != AlgBcrypt || !IsHash(bcY) || !IsHash(bcB) {
		t.Fatal("bcrypt hash not recognized")
	}
}

func TestVerifyMalformed(t *testing.T) {
	h := testHasher()
	valid := phc("19456", "2", "1", 16, 32)
	if _, err := parseArgon2id(valid, h.limits); err != nil {
		t.Fatalf("base string invalid: %v", err)
	}
	salt := base64.RawStdEncoding.EncodeToString(make([]byte, 16))
	key := base64.RawStdEncoding.EncodeToString(make([]byte, 32))
	bc, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	bcs := string(bc)

	tests := []struct{ name, encoded string }{
		{"empty", ""},
		{"plaintext", "hunter2"},
		{"dollar only", "$"},
		{"argon2i", strings.Replace(valid, "argon2id", "argon2i", 1)},
		{"argon2d", strings.Replace(valid, "argon2id", "argon2d", 1)},
		{"uppercase variant", strings.Replace(valid, "argon2id", "ARGON2ID", 1)},
		{"no leading dollar", valid[1:]},
		{"scrypt", "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E"},
		{"version 16", strings.Replace(valid, "v=19", "v=16", 1)},
		{"version missing", strings.Replace(valid, "$v=19", "", 1)},
		{"version empty", strings.Replace(valid, "v=19", "v=", 1)},
		{"version garbage", strings.Replace(valid, "v=19", "v=abc", 1)},
		{"missing key", "$argon2id$v=19$m=19456,t=2,p=1$" + salt},
		{"missing salt and key", "$argon2id$v=19$m=19456,t=2,p=1"},
		{"extra field", valid + "$" + key},
		{"trailing dollar", valid + "$"},
		{"two params", "$argon2id$v=19$m=19456,t=2$" + salt + "$" + key},
		{"four params", "$argon2id$v=19$m=19456,t=2,p=1,keyid=abc$" + salt + "$" + key},
		{"params reordered", "$argon2id$v=19$t=2,m=19456,p=1$" + salt + "$" + key},
		{"param empty", phc("", "2", "1", 16, 32)},
		{"param signed", phc("+19456", "2", "1", 16, 32)},
		{"param negative", phc("-1", "2", "1", 16, 32)},
		{"param leading zero", phc("019456", "2", "1", 16, 32)},
		{"param hex", phc("0x4c00", "2", "1", 16, 32)},
		{"param space", phc("19456 ", "2", "1", 16, 32)},
		{"param overflow", phc("4294967296", "2", "1", 16, 32)},
		{"param huge", phc("99999999999999999999999", "2", "1", 16, 32)},
		{"memory absurd", phc("4294967295", "2", "1", 16, 32)},
		{"memory above ceiling", phc("262145", "2", "1", 16, 32)},
		{"memory below 8p", phc("31", "1", "4", 16, 32)},
		{"time zero", phc("19456", "0", "1", 16, 32)},
		{"time absurd", phc("19456", "4294967295", "1", 16, 32)},
		{"work above ceiling", phc("262144", "5", "1", 16, 32)},
		{"threads zero", phc("19456", "2", "0", 16, 32)},
		{"threads absurd", phc("19456", "2", "255", 16, 32)},
		{"threads overflow uint8", phc("19456", "2", "257", 16, 32)},
		{"salt short", phc("19456", "2", "1", 7, 32)},
		{"salt huge", phc("19456", "2", "1", MaxSaltLen+1, 32)},
		{"key short", phc("19456", "2", "1", 16, 15)},
		{"key absurd", phc("19456", "2", "1", 16, MaxKeyLen+1)},
		{"salt padded", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "==$" + key},
		{"salt url alphabet", "$argon2id$v=19$m=19456,t=2,p=1$" + strings.Repeat("-", 22) + "$" + key},
		{"salt bad char", "$argon2id$v=19$m=19456,t=2,p=1$" + strings.Repeat("*", 22) + "$" + key},
		{"salt nonzero trailing bits", "$argon2id$v=19$m=19456,t=2,p=1$" + salt[:21] + "B$" + key},
		{"key bad base64", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key[:42] + "!"},
		{"key impossible length", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key + "AA"},
		{"too long", valid + strings.Repeat("A", maxEncodedLen)},
		{"bcrypt short", bcs[:59]},
		{"bcrypt long", bcs + "A"},
		{"bcrypt 2x", "$2x$" + bcs[4:]},
		{"bcrypt 2", "$2$" + bcs[4:]},
		{"bcrypt cost 03", bcs[:4] + "03" + bcs[6:]},
		{"bcrypt cost 31", bcs[:4] + "31" + bcs[6:]},
		{"bcrypt cost 17", bcs[:4] + "17" + bcs[6:]},
		{"bcrypt cost letters", bcs[:4] + "ab" + bcs[6:]},
		{"bcrypt missing separator", bcs[:6] + "x" + bcs[7:]},
		{"bcrypt bad char", bcs[:30] + "!" + bcs[31:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, rehash, err := h.Verify(tt.encoded, "pw")
			if !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("Verify err = %v, want ErrMalformedHash", err)
			}
			if ok || rehash {
				t.Fatalf("Verify = ok %v rehash %v on malformed hash", ok, rehash)
			}
			if IsHash(tt.encoded) || Algorithm(tt.encoded) != "" {
				t.Fatal("IsHash/Algorithm accept a malformed hash")
			}
			if err := h.ValidateHash(tt.encoded); !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("ValidateHash = %v", err)
			}
			// The input must not leak into the message (it may be a
			// plaintext password stored by mistake).
			if len(tt.encoded) > 8 && strings.Contains(err.Error(), tt.encoded) {
				t.Fatalf("error echoes the input: %v", err)
			}
		})
	}
}

func TestStoredCeilingsFollowHasher(t *testing.T) {
	// A Hasher configured above the fixed verify ceilings can still verify
	// what it produces; the default one refuses such a hash.
	big := Params{Memory: 300 << 10, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}
	enc := phc("307200", "1", "1", 16, 32)
	if _, err := parseArgon2id(enc, limitsFor(big)); err != nil {
		t.Fatalf("hasher ceilings refuse its own params: %v", err)
	}
	if _, err := parseArgon2id(enc, testHasher().limits); !errors.Is(err, ErrMalformedHash) {
		t.Fatalf("default ceilings accept memory above 256 MiB: %v", err)
	}
	// Weaker but sane stored params (older configs, imports) are accepted
	// and flagged for rehash by Verify.
	for _, enc := range []string{phc("4096", "3", "1", 16, 32), phc("65536", "3", "4", 8, 16)} {
		if !IsHash(enc) {
			t.Errorf("IsHash(%s) = false", enc)
		}
	}
}

func TestVerifyDummy(t *testing.T) {
	t.Parallel()
	custom := Params{Memory: 20480, Time: 3, Threads: 2, KeyLen: 24, SaltLen: 20}
	hc, err := NewHasher(custom)
	if err != nil {
		t.Fatal(err)
	}
	if hc.Params() != custom {
		t.Fatalf("Params() = %+v", hc.Params())
	}
	for _, h := range []*Hasher{testHasher(), hc} {
		a, err := parseArgon2id(h.dummy, h.limits)
		if err != nil {
			t.Fatalf("dummy hash does not parse: %v", err)
		}
		// Same parameters, so the same work as a real Verify of a hash
		// made by h.
		if a.params != h.Params() {
			t.Fatalf("dummy params %+v, hasher params %+v", a.params, h.Params())
		}
		// Verify accepts the dummy, so VerifyDummy does the full work
		// instead of failing early on a parse error.
		if err := h.ValidateHash(h.dummy); err != nil {
			t.Fatal(err)
		}
	}
	testHasher().VerifyDummy("guess")
	if testHasher().dummy == hc.dummy {
		t.Fatal("dummy hashes are shared")
	}
}

func TestZeroHasher(t *testing.T) {
	var h Hasher
	if _, err := h.Hash("password"); err == nil {
		t.Fatal("zero Hasher hashed")
	}
	if ok, _, err := h.Verify(phc("19456", "2", "1", 16, 32), "x"); ok || err == nil {
		t.Fatal("zero Hasher verified")
	}
	h.VerifyDummy("x") // must not panic
}

// FuzzVerify feeds arbitrary stored strings to Verify. It must never panic,
// and parameters outside the ceilings must be refused before any work; a
// fuzzed "m=4294967295" would otherwise allocate 4 TiB.
func FuzzVerify(f *testing.F) {
	h := testHasher()
	own, err := h.Hash("password")
	if err != nil {
		f.Fatal(err)
	}
	bc, err := bcrypt.GenerateFromPassword([]byte("password"), bcrypt.MinCost)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		own,
		string(bc),
		"$2y$" + string(bc)[4:],
		phc("19456", "2", "1", 16, 32),
		phc("4294967295", "2", "1", 16, 32),
		"$argon2id$v=19$m=19456,t=2,p=1$$",
		"$argon2id$",
		"",
	} {
		f.Add(s, "password")
	}
	f.Fuzz(func(t *testing.T, encoded, pw string) {
		ok, rehash, err := h.Verify(encoded, pw)
		if err != nil {
			if ok || rehash {
				t.Fatal("ok or rehash with an error")
			}
			if !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("error does not wrap ErrMalformedHash: %v", err)
			}
		}
		if rehash && !ok {
			t.Fatal("rehash without ok")
		}
		// h has DefaultParams, so its ceilings are IsHash's.
		if (err == nil) != IsHash(encoded) {
			t.Fatalf("Verify err %v but IsHash %v", err, IsHash(encoded))
		}
	})
}
