package password

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"testing"
)

// TestArgon2idKnownAnswers verifies, through Verify's PHC parsing, the
// argon2id vectors golang.org/x/crypto/argon2 checks itself against
// (password "password", salt "somesalt"; generated with the reference
// implementation of RFC 9106), so a wrong parameter order or version in the
// call to the library shows up here.
func TestArgon2idKnownAnswers(t *testing.T) {
	t.Parallel()
	vectors := []struct {
		time, memory uint32
		threads      uint8
		hash         string
	}{
		{1, 64, 1, "655ad15eac652dc59f7170a7332bf49b8469be1fdb9c28bb"},
		{2, 64, 1, "068d62b26455936aa6ebe60060b0a65870dbfa3ddf8d41f7"},
		{2, 64, 2, "350ac37222f436ccb5c0972f1ebd3bf6b958bf2071841362"},
		{3, 256, 2, "4668d30ac4187e6878eedeacf0fd83c5a0a30db2cc16ef0b"},
		{4, 4096, 4, "145db9733a9f4ee43edf33c509be96b934d505a4efb33c5a"},
		{4, 1024, 8, "8dafa8e004f8ea96bf7c0f93eecf67a6047476143d15577f"},
		{2, 64, 3, "4a15b31aec7c2590b87d1f520be7d96f56658172deaa3079"},
		{3, 1024, 6, "1640b932f4b60e272f5d2207b9a9c626ffa1bd88d2349016"},
	}
	h := cheapHasher(t, 1)
	enc := base64.RawStdEncoding
	for _, v := range vectors {
		key, err := hex.DecodeString(v.hash)
		if err != nil {
			t.Fatal(err)
		}
		phc := fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", v.memory, v.time, v.threads,
			enc.EncodeToString([]byte("somesalt")), enc.EncodeToString(key))
		if ok, _, err := h.Verify(phc, "password"); !ok || err != nil {
			t.Errorf("Verify(%s, right password) = %v, %v", phc, ok, err)
		}
		if ok, _, err := h.Verify(phc, "passwore"); ok || err != nil {
			t.Errorf("Verify(%s, wrong password) = %v, %v", phc, ok, err)
		}
	}
}

// TestHashesMadeBeforeStillVerify: hashes stored by earlier releases of the
// gateway (these two were made by its own argon2id code, before it called
// golang.org/x/crypto/argon2) verify, and need no rehash at their own
// parameters.
func TestHashesMadeBeforeStillVerify(t *testing.T) {
	t.Parallel()
	const (
		defaultPW  = "hashed-before-the-fork-was-removed"
		defaultPHC = "$argon2id$v=19$m=19456,t=2,p=1$f4ld/Jsh//OFtqyELFy3og$hVKTHnhShB4q7sM5mXJK4PQJy4CVEta+/qXsDBnYeJ0"
		cheapPW    = "pässwörd-ü-日本語"
		cheapPHC   = "$argon2id$v=19$m=64,t=3,p=1$98IfYktg1ckwlNhjzNahXg$zWpVQ6kprw2Vpj1BksUBGjjylQJNQ9qSfz+EFzftcns"
	)
	if ok, rehash, err := testHasher().Verify(defaultPHC, defaultPW); !ok || rehash || err != nil {
		t.Errorf("Verify(default-parameter hash) = %v, %v, %v; want true, false, nil", ok, rehash, err)
	}
	h := cheapHasher(t, 3)
	if ok, rehash, err := h.Verify(cheapPHC, cheapPW); !ok || rehash || err != nil {
		t.Errorf("Verify(cheap hash) = %v, %v, %v; want true, false, nil", ok, rehash, err)
	}
	if ok, _, err := h.Verify(cheapPHC, cheapPW+"x"); ok || err != nil {
		t.Errorf("Verify(cheap hash, wrong password) = %v, %v", ok, err)
	}
}

// TestHashRoundTrip: a fresh hash at the default parameters verifies with
// the right password only.
func TestHashRoundTrip(t *testing.T) {
	h := testHasher()
	const pw = "correct horse battery staple"
	enc, err := h.Hash(pw)
	if err != nil {
		t.Fatal(err)
	}
	if ok, rehash, err := h.Verify(enc, pw); !ok || rehash || err != nil {
		t.Fatalf("Verify(own hash) = %v, %v, %v", ok, rehash, err)
	}
	if ok, _, err := h.Verify(enc, pw+"!"); ok || err != nil {
		t.Fatalf("Verify(own hash, wrong password) = %v, %v", ok, err)
	}
}
