package bolt

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/storetest"
)

// TestKeySetRecordFormat pins the signing_keys record: files written by
// this build hold exactly this, and store.SigningKey has no say in it.
func TestKeySetRecordFormat(t *testing.T) {
	const golden = `{"v":1,"keys":[` +
		`{"id":"k1","alg":"EdDSA","private":"AAEC/w==","created_at":"2026-01-02T03:04:05.000006Z",` +
		`"sign_from":"2026-01-02T03:05:05.000006Z"},` +
		`{"id":"k2","alg":"ES256","private":"Kg==","created_at":"2026-01-01T00:00:00Z",` +
		`"sign_from":"2026-01-01T00:00:00Z","retired_at":"2026-01-03T00:00:00Z"}]}`
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ks := &store.KeySet{Keys: []store.SigningKey{
		{ID: "k1", Alg: store.AlgEdDSA, Private: []byte{0, 1, 2, 0xff}, CreatedAt: at, SignFrom: at.Add(time.Minute)},
		{ID: "k2", Alg: store.AlgES256, Private: []byte("*"), CreatedAt: day, SignFrom: day, RetiredAt: day.Add(48 * time.Hour)},
	}}
	b, err := encodeKeySet(ks)
	if err != nil || string(b) != golden {
		t.Fatalf("encodeKeySet = %s, %v\nwant %s", b, err, golden)
	}
	got, err := decodeKeySet([]byte(golden))
	if err != nil || !got.Equal(ks) {
		t.Fatalf("decodeKeySet(golden) = %+v, %v", got, err)
	}
	if got, err := decodeKeySet(nil); err != nil || got == nil || len(got.Keys) != 0 {
		t.Errorf("decodeKeySet(nil) = %+v, %v; want the empty set", got, err)
	}
	if _, err := decodeKeySet([]byte(`{"v":2,"keys":[]}`)); err == nil || !strings.Contains(err.Error(), "layout 2") {
		t.Errorf("decodeKeySet of a later layout: %v", err)
	}
}

// putMeta writes one meta value into the closed file at path, as another
// build would have.
func putMeta(t *testing.T, path string, key, value []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(key, value) }); err != nil {
		t.Fatal(err)
	}
}

// TestKeysPersistAndNoSchemaBump: the key set survives a reopen (it is
// loaded at Open), and adding it left the schema version as it was, since
// a file without the record is a file with the empty set.
func TestKeysPersistAndNoSchemaBump(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.db")
	s := openAt(t, path, Options{})
	k := storetest.NewSigningKey(t, store.AlgES256, time.Now())
	if _, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		ks.Keys = append(ks.Keys, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := rawState(t, path); v != schemaVersion {
		t.Errorf("schema version %q after storing keys, want %q", v, schemaVersion)
	}
	s = openAt(t, path, Options{})
	ks, err := s.SigningKeys(t.Context())
	if err != nil || !ks.Equal(&store.KeySet{Keys: []store.SigningKey{k}}) {
		t.Fatalf("SigningKeys after reopening does not hold the key stored (%v)", err)
	}
}

// TestKeysOfLaterLayout: a key set record this build cannot read fails
// SigningKeys and UpdateSigningKeys, and is never overwritten; the rest of
// the store keeps working (a realm on HS256 does not need the keys).
func TestKeysOfLaterLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.db")
	s := openAt(t, path, Options{})
	u := &store.User{Username: "still"}
	if err := s.CreateUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	later := []byte(`{"v":2,"keys":[{"id":"k","alg":"EdDSA","private":"AA==","hsm":"slot 1"}]}`)
	putMeta(t, path, keySigningKeys, later)

	s = openAt(t, path, Options{})
	if _, err := s.SigningKeys(t.Context()); err == nil || !strings.Contains(err.Error(), "layout 2") {
		t.Errorf("SigningKeys of a later layout: %v", err)
	}
	ran := false
	if _, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		ran = true
		ks.Keys = nil
		return nil
	}); err == nil || ran {
		t.Errorf("UpdateSigningKeys of a later layout: %v (fn ran: %v)", err, ran)
	}
	if _, err := s.AuthState(t.Context(), u.ID); err != nil {
		t.Errorf("AuthState with keys of a later layout: %v", err)
	}
	if err := s.Check(); err == nil {
		t.Error("Check passed a key set record it cannot read")
	}
	var raw []byte
	if err := s.view(func(tx *bolt.Tx) error {
		raw = append(raw, tx.Bucket(bucketMeta).Get(keySigningKeys)...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if string(raw) != string(later) {
		t.Errorf("the record became %s", raw)
	}
}

// TestCheckKeySet: Check reports a stored set that breaks the rules of a
// key set (here, a key without a private half).
func TestCheckKeySet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.db")
	s := openAt(t, path, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	putMeta(t, path, keySigningKeys, []byte(`{"v":1,"keys":[{"id":"k","alg":"EdDSA","created_at":"2026-01-01T00:00:00Z","sign_from":"2026-01-01T00:00:00Z"}]}`))
	s = openAt(t, path, Options{})
	if err := s.Check(); err == nil || !strings.Contains(err.Error(), "no private key") {
		t.Errorf("Check of a key without a private half: %v", err)
	}
}

// TestUnchangedKeySetNotWritten: an update whose fn changes nothing does
// not commit, and SigningKeys keeps its pointer.
func TestUnchangedKeySetNotWritten(t *testing.T) {
	s := openTemp(t, Options{})
	k := storetest.NewSigningKey(t, store.AlgEdDSA, time.Now())
	if _, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		ks.Keys = append(ks.Keys, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before, _ := s.SigningKeys(t.Context())
	// The transaction ID counts commits.
	txid := func() (id int) {
		_ = s.view(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
		return id
	}
	committed := txid()
	got, err := s.UpdateSigningKeys(t.Context(), func(*store.KeySet) error { return nil })
	if err != nil || got != before {
		t.Errorf("UpdateSigningKeys changing nothing = %p, %v; SigningKeys had %p", got, err, before)
	}
	if after, _ := s.SigningKeys(t.Context()); after != before {
		t.Error("SigningKeys changed its pointer after an update that changed nothing")
	}
	if n := txid(); n != committed {
		t.Errorf("an update that changed nothing committed %d transactions", n-committed)
	}
	if errors.Is(err, store.ErrSkipWrite) {
		t.Error("ErrSkipWrite leaked to the caller")
	}
}
