package password

import (
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func BenchmarkHash(b *testing.B) {
	h := testHasher()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Hash("correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	h := testHasher()
	enc, err := h.Hash("correct horse battery staple")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _, err := h.Verify(enc, "correct horse battery staple"); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkVerifyDummy(b *testing.B) {
	h := testHasher()
	b.ReportAllocs()
	for b.Loop() {
		h.VerifyDummy("correct horse battery staple")
	}
}

// BenchmarkVerifyBcrypt uses bcrypt's default cost (10), typical of
// imported htpasswd files.
func BenchmarkVerifyBcrypt(b *testing.B) {
	h := testHasher()
	enc, err := bcrypt.GenerateFromPassword([]byte("correct horse battery staple"), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _, err := h.Verify(string(enc), "correct horse battery staple"); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
