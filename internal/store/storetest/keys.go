package storetest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// NewSigningKey returns a well-formed key of alg (store.AlgEdDSA or
// store.AlgES256) with a random ID, created at the given time (truncated to
// microseconds, so that every backend's encoding keeps it exactly) and
// signing from then on.
func NewSigningKey(t testing.TB, alg string, created time.Time) store.SigningKey {
	t.Helper()
	var priv any
	switch alg {
	case store.AlgEdDSA:
		_, priv, _ = ed25519.GenerateKey(rand.Reader)
	case store.AlgES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv = k
	default:
		t.Fatalf("NewSigningKey: algorithm %q", alg)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	created = created.UTC().Truncate(time.Microsecond)
	return store.SigningKey{ID: "k" + store.NewID(), Alg: alg, Private: der, CreatedAt: created, SignFrom: created}
}

// mustKeys returns s's key set, failing t on an error or a nil set.
func mustKeys(t *testing.T, s store.Store) *store.KeySet {
	t.Helper()
	ks, err := s.SigningKeys(t.Context())
	if err != nil {
		t.Fatalf("SigningKeys: %v", err)
	}
	if ks == nil {
		t.Fatal("SigningKeys returned a nil set")
	}
	return ks
}

// addKey adds k to s's set.
func addKey(t *testing.T, s store.Store, k store.SigningKey) *store.KeySet {
	t.Helper()
	ks, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		ks.Keys = append(ks.Keys, k)
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateSigningKeys adding %s: %v", k.ID, err)
	}
	return ks
}

// keysAre fails t unless ks holds exactly want (every field), in order.
func keysAre(t *testing.T, what string, ks *store.KeySet, want ...store.SigningKey) {
	t.Helper()
	if !ks.Equal(&store.KeySet{Keys: want}) {
		t.Fatalf("%s: key set %s, want %s", what, describeKeys(ks.Keys), describeKeys(want))
	}
}

// describeKeys names keys without their private halves.
func describeKeys(keys []store.SigningKey) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s created %s sign_from %s retired %s (%d bytes)", k.ID, k.Alg,
			k.CreatedAt.Format(time.RFC3339Nano), k.SignFrom.Format(time.RFC3339Nano), k.RetiredAt.Format(time.RFC3339Nano), len(k.Private))
	}
	b.WriteByte(']')
	return b.String()
}

// testKeysEmptyAddRead: a new store has an empty set; an added key reads
// back with every field, the same pointer until the set changes, and a
// new one after.
func testKeysEmptyAddRead(t *testing.T, s store.Store) {
	empty := mustKeys(t, s)
	if len(empty.Keys) != 0 {
		t.Fatalf("a new store holds keys %s", describeKeys(empty.Keys))
	}
	if again := mustKeys(t, s); again != empty {
		t.Error("SigningKeys returned another pointer without a change")
	}
	now := time.Now()
	k1 := NewSigningKey(t, store.AlgEdDSA, now)
	k1.SignFrom = k1.CreatedAt.Add(90 * time.Second)
	got := addKey(t, s, k1)
	keysAre(t, "UpdateSigningKeys' result", got, k1)
	first := mustKeys(t, s)
	if first == empty {
		t.Fatal("SigningKeys kept the pointer of the empty set after a key was added")
	}
	keysAre(t, "SigningKeys after the add", first, k1)
	if again := mustKeys(t, s); again != first {
		t.Error("SigningKeys returned another pointer without a change")
	}

	k2 := NewSigningKey(t, store.AlgES256, now.Add(time.Second))
	addKey(t, s, k2)
	second := mustKeys(t, s)
	if second == first {
		t.Fatal("SigningKeys kept its pointer after a second key was added")
	}
	keysAre(t, "SigningKeys after the second add", second, k1, k2)
	// The set handed out before is not changed under its holder.
	keysAre(t, "the set read before the second add", first, k1)

	// Retiring and removing are changes too.
	retired := k1
	retired.RetiredAt = now.Add(time.Hour).UTC().Truncate(time.Microsecond)
	if _, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		ks.Key(k1.ID).RetiredAt = retired.RetiredAt
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	third := mustKeys(t, s)
	if third == second {
		t.Fatal("SigningKeys kept its pointer after a retirement")
	}
	keysAre(t, "SigningKeys after the retirement", third, retired, k2)
	if !third.Keys[0].Retired() {
		t.Error("the retired key does not say so")
	}
	if _, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		ks.Keys = ks.Keys[1:]
		return nil
	}); err != nil {
		t.Fatalf("removing a key: %v", err)
	}
	keysAre(t, "SigningKeys after the removal", mustKeys(t, s), k2)
}

// testKeysSkipAndAbort: an error from fn aborts the update and is returned
// as it is; ErrSkipWrite stores nothing and returns the stored set.
func testKeysSkipAndAbort(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := NewSigningKey(t, store.AlgEdDSA, time.Now())
	addKey(t, s, k)
	before := mustKeys(t, s)

	boom := errors.New("boom")
	_, err := s.UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
		ks.Keys = append(ks.Keys, NewSigningKey(t, store.AlgEdDSA, time.Now()))
		return boom
	})
	if err != boom { // returned as is, not wrapped
		t.Errorf("UpdateSigningKeys with a failing fn: %v, want the fn's error itself", err)
	}
	keysAre(t, "after an aborted update", mustKeys(t, s), k)

	got, err := s.UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
		ks.Keys = nil
		return store.ErrSkipWrite
	})
	if err != nil {
		t.Fatalf("UpdateSigningKeys with ErrSkipWrite: %v", err)
	}
	keysAre(t, "UpdateSigningKeys' result with ErrSkipWrite", got, k)
	after := mustKeys(t, s)
	keysAre(t, "after ErrSkipWrite", after, k)
	if after != before {
		t.Error("SigningKeys changed its pointer after an update that stored nothing")
	}

	// An fn that returns nil without changing anything: nothing to
	// store, and the pointer stays, so callers rebuild nothing.
	if _, err := s.UpdateSigningKeys(ctx, func(*store.KeySet) error { return nil }); err != nil {
		t.Fatalf("UpdateSigningKeys without a change: %v", err)
	}
	if mustKeys(t, s) != before {
		t.Error("SigningKeys changed its pointer after an update that changed nothing")
	}
}

// testKeysRefusals: every change CheckKeySetChange refuses is refused by
// the store and leaves the set as it was.
func testKeysRefusals(t *testing.T, s store.Store) {
	now := time.Now()
	k := NewSigningKey(t, store.AlgEdDSA, now)
	k.RetiredAt = time.Time{}
	addKey(t, s, k)
	retiredAt := now.Add(time.Minute).UTC().Truncate(time.Microsecond)
	cases := []struct {
		name     string
		fn       func(ks *store.KeySet)
		conflict bool // wraps ErrKeyConflict
	}{
		{"change Private", func(ks *store.KeySet) { ks.Keys[0].Private = NewSigningKey(t, store.AlgEdDSA, now).Private }, true},
		{"change Alg", func(ks *store.KeySet) { ks.Keys[0].Alg = store.AlgES256 }, true},
		{"change SignFrom", func(ks *store.KeySet) { ks.Keys[0].SignFrom = ks.Keys[0].SignFrom.Add(time.Second) }, true},
		{"change CreatedAt", func(ks *store.KeySet) { ks.Keys[0].CreatedAt = ks.Keys[0].CreatedAt.Add(-time.Second) }, true},
		{"duplicate ID", func(ks *store.KeySet) { ks.Keys = append(ks.Keys, ks.Keys[0]) }, false},
		{"bad alg", func(ks *store.KeySet) {
			x := NewSigningKey(t, store.AlgEdDSA, now)
			x.Alg = "HS256"
			ks.Keys = append(ks.Keys, x)
		}, false},
		{"no private key", func(ks *store.KeySet) {
			x := NewSigningKey(t, store.AlgEdDSA, now)
			x.Private = nil
			ks.Keys = append(ks.Keys, x)
		}, false},
		{"no ID", func(ks *store.KeySet) {
			x := NewSigningKey(t, store.AlgEdDSA, now)
			x.ID = ""
			ks.Keys = append(ks.Keys, x)
		}, false},
		{"too many keys", func(ks *store.KeySet) {
			for range store.MaxSigningKeys {
				ks.Keys = append(ks.Keys, NewSigningKey(t, store.AlgEdDSA, now))
			}
		}, false},
	}
	for _, tc := range cases {
		_, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
			tc.fn(ks)
			return nil
		})
		if err == nil || errors.Is(err, store.ErrKeyConflict) != tc.conflict {
			t.Errorf("%s: UpdateSigningKeys = %v, want a refusal (ErrKeyConflict: %v)", tc.name, err, tc.conflict)
		}
		keysAre(t, tc.name+", refused", mustKeys(t, s), k)
	}

	// Retired once, a key stays retired, at the time it was retired.
	if _, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		ks.Keys[0].RetiredAt = retiredAt
		return nil
	}); err != nil {
		t.Fatalf("retiring: %v", err)
	}
	retired := k
	retired.RetiredAt = retiredAt
	for name, at := range map[string]time.Time{"un-retire": {}, "move the retirement": retiredAt.Add(time.Second)} {
		_, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
			ks.Keys[0].RetiredAt = at
			return nil
		})
		if !errors.Is(err, store.ErrKeyConflict) {
			t.Errorf("%s: UpdateSigningKeys = %v, want ErrKeyConflict", name, err)
		}
		keysAre(t, name+", refused", mustKeys(t, s), retired)
	}

	// The bound itself is allowed.
	if _, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		for len(ks.Keys) < store.MaxSigningKeys {
			ks.Keys = append(ks.Keys, NewSigningKey(t, store.AlgES256, now))
		}
		return nil
	}); err != nil {
		t.Errorf("filling the set to MaxSigningKeys: %v", err)
	}
	if n := len(mustKeys(t, s).Keys); n != store.MaxSigningKeys {
		t.Errorf("the set holds %d keys, want %d", n, store.MaxSigningKeys)
	}
}

// testKeysConcurrentFirst: gateways that start at once each create the
// first key when there is none; exactly one key results, and every caller
// gets the set that holds it (a loser's fn runs again and finds it).
func testKeysConcurrentFirst(t *testing.T, s store.Store) {
	const n = 10
	var wg sync.WaitGroup
	results := make([]*store.KeySet, n)
	errs := make([]error, n)
	var runs atomic.Int64
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
				runs.Add(1)
				if len(ks.Keys) > 0 {
					return store.ErrSkipWrite
				}
				ks.Keys = append(ks.Keys, NewSigningKey(t, store.AlgEdDSA, time.Now()))
				return nil
			})
		})
	}
	wg.Wait()
	t.Logf("%d creators ran fn %d times", n, runs.Load())
	final := mustKeys(t, s)
	if len(final.Keys) != 1 {
		t.Fatalf("%d creators left %d keys, want 1: %s", n, len(final.Keys), describeKeys(final.Keys))
	}
	for i := range n {
		if errs[i] != nil {
			t.Errorf("creator %d: %v", i, errs[i])
			continue
		}
		keysAre(t, fmt.Sprintf("creator %d's result", i), results[i], final.Keys...)
	}
}

// testKeysNoAlias: the set fn changed is the caller's; changing it after
// the update returned changes nothing stored.
func testKeysNoAlias(t *testing.T, s store.Store) {
	k := NewSigningKey(t, store.AlgEdDSA, time.Now())
	var held *store.KeySet
	if _, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		ks.Keys = append(ks.Keys, k)
		held = ks
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// k.Private is the very array fn appended: keep the original bytes
	// apart to compare with, then change the caller's.
	k.Private = bytes.Clone(k.Private)
	held.Keys[0].Private[0] ^= 0xff // the array fn appended
	held.Keys[0].ID = "kchanged"
	held.Keys[0].RetiredAt = time.Now()
	held.Keys = append(held.Keys, NewSigningKey(t, store.AlgEdDSA, time.Now()))
	keysAre(t, "SigningKeys after the caller changed fn's set", mustKeys(t, s), k)

	// The next fn gets a fresh copy too.
	if _, err := s.UpdateSigningKeys(t.Context(), func(ks *store.KeySet) error {
		ks.Keys[0].Private[0] ^= 0xff
		return store.ErrSkipWrite
	}); err != nil {
		t.Fatal(err)
	}
	keysAre(t, "SigningKeys after a skipped fn changed its copy", mustKeys(t, s), k)
}
