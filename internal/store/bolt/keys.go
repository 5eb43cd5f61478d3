package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// The signing keys are one record, keySetRecord, under keySigningKeys in
// the meta bucket: the set is small (store.MaxSigningKeys), always read
// and written whole, and one Put replaces it atomically.
//
// A file without the record holds the empty set, which is what every file
// of an earlier build is, so the record came without a schema version:
// Open has nothing to build, and an earlier build that opens a file with
// keys leaves the record alone (it never reads or writes it, and nothing
// else in the file refers to a key), so it cannot break an invariant that
// this build relies on. The record carries its own layout version instead,
// so that a later layout is refused rather than misread or overwritten.

// keySigningKeys is the meta key of the key set; "secret:" keys are
// secrets, so this name must not start with secretPrefix.
var keySigningKeys = []byte("signing_keys")

// keyRecordVersion is the layout of keySetRecord.
const keyRecordVersion = 1

// keySetRecord is the key set as the meta bucket holds it: this package's
// own type, so that store.SigningKey can change without changing the
// file; TestKeySetRecordFormat pins the bytes.
type keySetRecord struct {
	V    int         `json:"v"`
	Keys []keyRecord `json:"keys"`
}

// keyRecord is one key; Private is standard base64 in the JSON, and a key
// never retired has no retired_at.
type keyRecord struct {
	ID        string    `json:"id"`
	Alg       string    `json:"alg"`
	Private   []byte    `json:"private"`
	CreatedAt time.Time `json:"created_at"`
	SignFrom  time.Time `json:"sign_from"`
	RetiredAt time.Time `json:"retired_at,omitzero"`
}

func encodeKeySet(ks *store.KeySet) ([]byte, error) {
	r := keySetRecord{V: keyRecordVersion, Keys: make([]keyRecord, len(ks.Keys))}
	for i, k := range ks.Keys {
		r.Keys[i] = keyRecord{ID: k.ID, Alg: k.Alg, Private: k.Private, CreatedAt: k.CreatedAt, SignFrom: k.SignFrom, RetiredAt: k.RetiredAt}
	}
	return json.Marshal(r)
}

// decodeKeySet decodes the record (nil: the empty set). The result shares
// no memory with data.
func decodeKeySet(data []byte) (*store.KeySet, error) {
	ks := &store.KeySet{}
	if data == nil {
		return ks, nil
	}
	var r keySetRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode signing keys: %w", err)
	}
	if r.V != keyRecordVersion {
		return nil, fmt.Errorf("signing keys record of layout %d, this build reads %d", r.V, keyRecordVersion)
	}
	ks.Keys = make([]store.SigningKey, len(r.Keys))
	for i, k := range r.Keys {
		ks.Keys[i] = store.SigningKey{ID: k.ID, Alg: k.Alg, Private: k.Private, CreatedAt: k.CreatedAt, SignFrom: k.SignFrom, RetiredAt: k.RetiredAt}
	}
	return ks, nil
}

// keysState is what SigningKeys serves: the set, or why the record could
// not be read.
type keysState struct {
	ks  *store.KeySet
	err error
}

// loadKeys reads the key set into the handle's cache (Open).
func (s *Store) loadKeys() error {
	return s.db.View(func(tx *bolt.Tx) error {
		ks, err := decodeKeySet(tx.Bucket(bucketMeta).Get(keySigningKeys))
		s.keys.Store(&keysState{ks: ks, err: err})
		return nil
	})
}

// SigningKeys implements store.Store from the copy the handle keeps: the
// handle is the file's only writer (bbolt's lock admits one per process,
// and a process shares it), so the copy changes only in UpdateSigningKeys.
func (s *Store) SigningKeys(ctx context.Context) (*store.KeySet, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st := s.keys.Load()
	if st.err != nil {
		return nil, st.err
	}
	return st.ks, nil
}

// errSkip ends UpdateSigningKeys' transaction without a commit when fn
// returned store.ErrSkipWrite or the set is unchanged.
var errSkip = errors.New("nothing to write")

// UpdateSigningKeys implements store.Store. fn runs inside the write
// transaction, on a copy decoded from the file, so it runs once and must
// not call back into the store. A set equal to the stored one is not
// written, and keeps the pointer SigningKeys returns.
func (s *Store) UpdateSigningKeys(ctx context.Context, fn func(ks *store.KeySet) error) (*store.KeySet, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Held from the read to the replacement of the cache, so that two
	// updates cannot leave the cache with the older of their sets.
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	var prev, next *store.KeySet
	err := s.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		var err error
		if prev, err = decodeKeySet(meta.Get(keySigningKeys)); err != nil {
			return err
		}
		next = prev.Clone()
		if err := fn(next); err != nil {
			return err
		}
		if err := store.CheckKeySetChange(prev, next); err != nil {
			return err
		}
		if next.Equal(prev) {
			return errSkip
		}
		data, err := encodeKeySet(next)
		if err != nil {
			return err
		}
		return meta.Put(keySigningKeys, data)
	})
	switch {
	case errors.Is(err, errSkip), errors.Is(err, store.ErrSkipWrite):
		return s.cacheKeys(prev), nil
	case err != nil:
		return nil, err
	}
	// A copy: fn's caller may still hold next.
	return s.cacheKeys(next.Clone()), nil
}

// cacheKeys makes ks, as just read or written, what SigningKeys serves,
// unless the cache holds an equal set: then that one keeps its pointer.
func (s *Store) cacheKeys(ks *store.KeySet) *store.KeySet {
	if cur := s.keys.Load(); cur.err == nil && cur.ks.Equal(ks) {
		return cur.ks
	}
	s.keys.Store(&keysState{ks: ks})
	return ks
}
