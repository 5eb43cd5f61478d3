package store

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheckKeySetChange(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	key := func(id, alg string) SigningKey {
		return SigningKey{ID: id, Alg: alg, Private: []byte("der of " + id), CreatedAt: t0, SignFrom: t0.Add(time.Minute)}
	}
	k1, k2 := key("k1", AlgEdDSA), key("k2", AlgES256)
	retired := k1
	retired.RetiredAt = t0.Add(time.Hour)
	set := func(keys ...SigningKey) *KeySet { return &KeySet{Keys: keys} }
	with := func(k SigningKey, change func(*SigningKey)) SigningKey {
		k.Private = append([]byte(nil), k.Private...)
		change(&k)
		return k
	}
	many := func(n int) *KeySet {
		ks := &KeySet{}
		for i := range n {
			ks.Keys = append(ks.Keys, key("k"+strings.Repeat("x", i+1), AlgEdDSA))
		}
		return ks
	}
	for _, tc := range []struct {
		name       string
		prev, next *KeySet
		want       string // "" passes; otherwise a part of the message
		conflict   bool   // the error wraps ErrKeyConflict
	}{
		{"empty to empty", set(), set(), "", false},
		{"first key", set(), set(k1), "", false},
		{"add a key", set(k1), set(k1, k2), "", false},
		{"reorder", set(k1, k2), set(k2, k1), "", false},
		{"remove a key", set(k1, k2), set(k2), "", false},
		{"remove every key", set(k1, k2), set(), "", false},
		{"retire", set(k1), set(retired), "", false},
		{"keep retired", set(retired), set(retired), "", false},
		{"add retired", set(), set(retired), "", false},
		{"sign from creation", set(), set(with(k1, func(k *SigningKey) { k.SignFrom = k.CreatedAt })), "", false},
		{"MaxSigningKeys", set(), many(MaxSigningKeys), "", false},

		{"one too many", set(), many(MaxSigningKeys + 1), "at most 64", false},
		{"no ID", set(), set(with(k1, func(k *SigningKey) { k.ID = "" })), "no ID", false},
		{"duplicate ID", set(), set(k1, k1), "appears twice", false},
		{"duplicate ID, other content", set(k1), set(k1, with(k1, func(k *SigningKey) { k.Alg = AlgES256 })), "appears twice", false},
		{"HS256", set(), set(with(k1, func(k *SigningKey) { k.Alg = "HS256" })), "algorithm", false},
		{"no alg", set(), set(with(k1, func(k *SigningKey) { k.Alg = "" })), "algorithm", false},
		{"alg case", set(), set(with(k1, func(k *SigningKey) { k.Alg = "eddsa" })), "algorithm", false},
		{"no private key", set(), set(with(k1, func(k *SigningKey) { k.Private = nil })), "no private key", false},
		{"not created", set(), set(with(k1, func(k *SigningKey) { k.CreatedAt = time.Time{} })), "created", false},
		{"signs before created", set(), set(with(k1, func(k *SigningKey) { k.SignFrom = k.CreatedAt.Add(-time.Second) })), "created", false},

		{"change Private", set(k1), set(with(k1, func(k *SigningKey) { k.Private[0] ^= 1 })), "never changed", true},
		{"change Alg", set(k1), set(with(k1, func(k *SigningKey) { k.Alg = AlgES256 })), "never changed", true},
		{"change CreatedAt", set(k1), set(with(k1, func(k *SigningKey) { k.CreatedAt = k.CreatedAt.Add(-time.Second) })), "never changed", true},
		{"change SignFrom", set(k1), set(with(k1, func(k *SigningKey) { k.SignFrom = k.SignFrom.Add(time.Second) })), "never changed", true},
		{"un-retire", set(retired), set(k1), "never changed", true},
		{"move the retirement", set(retired), set(with(retired, func(k *SigningKey) { k.RetiredAt = k.RetiredAt.Add(time.Second) })), "never changed", true},
		{"retire and change", set(k1), set(with(retired, func(k *SigningKey) { k.Alg = AlgES256 })), "never changed", true},
		{"change one of two", set(k1, k2), set(k1, with(k2, func(k *SigningKey) { k.Private = []byte("other") })), `"k2"`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckKeySetChange(tc.prev, tc.next)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "":
				return
			case err == nil:
				t.Fatalf("passed, want an error with %q", tc.want)
			case !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
			if errors.Is(err, ErrKeyConflict) != tc.conflict {
				t.Errorf("error %v: wraps ErrKeyConflict %v, want %v", err, errors.Is(err, ErrKeyConflict), tc.conflict)
			}
		})
	}
}

// TestKeySetClone: a clone shares no memory with its original, and a nil
// set clones to an empty one.
func TestKeySetClone(t *testing.T) {
	t0 := time.Now()
	ks := &KeySet{Keys: []SigningKey{{ID: "k1", Alg: AlgEdDSA, Private: []byte{1, 2}, CreatedAt: t0, SignFrom: t0}}}
	c := ks.Clone()
	if !c.Equal(ks) {
		t.Fatal("a clone differs from its original")
	}
	c.Keys[0].Private[0] = 9
	c.Keys[0].ID = "k2"
	if ks.Keys[0].Private[0] != 1 || ks.Keys[0].ID != "k1" || c.Equal(ks) {
		t.Error("changing a clone changed its original")
	}
	var none *KeySet
	if e := none.Clone(); e == nil || len(e.Keys) != 0 {
		t.Errorf("nil.Clone() = %+v", e)
	}
}
