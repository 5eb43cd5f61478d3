package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// The signing keys are one key, <prefix>keys, holding a keySetRecord: the
// set is small (store.MaxSigningKeys) and always read and written whole,
// so one compare-and-swap on its ModRevision makes every update atomic
// across gateways, and the watch that feeds the auth cache brings each
// change to every gateway in revision order. An absent key is the empty
// set.

// keysKey is where the key set lives; outside every namespace, so that no
// user or session key can reach it.
func (s *Store) keysKey() string { return s.o.Prefix + "keys" }

// keySetRecord is the key set as <prefix>keys holds it. It is this
// package's own type so that store.SigningKey can change without changing
// what the cluster holds; TestKeySetRecordFormat pins the bytes.
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

func encodeKeySet(ks *store.KeySet) (string, error) {
	r := keySetRecord{V: recordVersion, Keys: make([]keyRecord, len(ks.Keys))}
	for i, k := range ks.Keys {
		r.Keys[i] = keyRecord{ID: k.ID, Alg: k.Alg, Private: k.Private, CreatedAt: k.CreatedAt, SignFrom: k.SignFrom, RetiredAt: k.RetiredAt}
	}
	b, err := json.Marshal(r)
	return string(b), err
}

// decodeKeySet decodes the record (nil: the key is absent, the empty set).
// The result shares no memory with data.
func decodeKeySet(data []byte) (*store.KeySet, error) {
	ks := &store.KeySet{}
	if data == nil {
		return ks, nil
	}
	var r keySetRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode signing keys record: %w", err)
	}
	if r.V != recordVersion {
		return nil, fmt.Errorf("signing keys record of layout %d, this gateway reads %d", r.V, recordVersion)
	}
	ks.Keys = make([]store.SigningKey, len(r.Keys))
	for i, k := range r.Keys {
		ks.Keys[i] = store.SigningKey{ID: k.ID, Alg: k.Alg, Private: k.Private, CreatedAt: k.CreatedAt, SignFrom: k.SignFrom, RetiredAt: k.RetiredAt}
	}
	return ks, nil
}

// SigningKeys implements store.Store from the cache the watch keeps, with
// the rule of AuthState: while the cache cannot be confirmed current
// within MaxStaleness, or is behind this handle's own writes, it fails
// with store.ErrUnavailable, so that a key another gateway retired is
// never honoured past the bound.
func (s *Store) SigningKeys(ctx context.Context) (*store.KeySet, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.cache.signingKeys()
}

// UpdateSigningKeys implements store.Store. It reads the set (a
// linearizable read), runs fn on a copy and writes the result in one
// transaction that compares the key's ModRevision with the one read; when
// another writer committed in between, fn runs again on the set the
// failed transaction read back. A set equal to the stored one is not
// written. Once it returns, this handle's SigningKeys shows the write (or
// fails closed until its watch delivers it).
func (s *Store) UpdateSigningKeys(ctx context.Context, fn func(ks *store.KeySet) error) (*store.KeySet, error) {
	key := s.keysKey()
	var resp *clientv3.GetResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, key)
		return err
	}); err != nil {
		return nil, err
	}
	var data []byte
	var rev int64
	if len(resp.Kvs) > 0 {
		data, rev = resp.Kvs[0].Value, resp.Kvs[0].ModRevision
	}
	for range maxAttempts {
		prev, err := decodeKeySet(data)
		if err != nil {
			return nil, err
		}
		next := prev.Clone()
		if err := fn(next); err != nil {
			if errors.Is(err, store.ErrSkipWrite) {
				return s.cache.sameKeys(prev), nil
			}
			return nil, err
		}
		if err := store.CheckKeySetChange(prev, next); err != nil {
			return nil, err
		}
		if next.Equal(prev) {
			return s.cache.sameKeys(prev), nil
		}
		rec, err := encodeKeySet(next)
		if err != nil {
			return nil, err
		}
		var tresp *clientv3.TxnResponse
		if err := s.call(ctx, func(ctx context.Context) (err error) {
			tresp, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
				Then(clientv3.OpPut(key, rec)).Else(clientv3.OpGet(key)).Commit()
			return err
		}); err != nil {
			return nil, err
		}
		if tresp.Succeeded {
			s.committed(ctx, tresp.Header.Revision)
			// A copy: fn's caller may still hold next.
			return s.cache.sameKeys(next.Clone()), nil
		}
		data, rev = nil, 0
		if cur := tresp.Responses[0].GetResponseRange().Kvs; len(cur) > 0 {
			data, rev = cur[0].Value, cur[0].ModRevision
		}
	}
	return nil, errContended
}
