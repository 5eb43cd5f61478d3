package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Signing key algorithms a KeySet may hold (JWS alg values, RFC 7518 and
// RFC 8037). An HS256 secret is not a SigningKey: it is a Secret, never
// published and never rotated through the key set.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
)

// MaxSigningKeys bounds a key set. Rotations add one key each and spent
// keys are pruned, so a set holds a handful; the bound keeps a runaway
// rotation loop from growing the record that every gateway watches.
const MaxSigningKeys = 64

// SigningKey is one asymmetric key of a store's key set. Every gateway on
// the store signs and verifies tokens with the set, and publishes the
// public halves (JWKS), so that upstreams can verify tokens themselves.
//
// A key, once stored, never changes, except that RetiredAt may be set once;
// it may be removed from the set when nothing it signed can still be alive.
type SigningKey struct {
	// ID is the kid: unique within the set; random, so never reused.
	ID string
	// Alg is the JWS algorithm the key is pinned to (AlgEdDSA or
	// AlgES256): a token naming this key with another alg is refused.
	Alg string
	// Private is the PKCS #8 DER encoding of the private key.
	Private []byte
	// CreatedAt is when the key was created and published.
	CreatedAt time.Time
	// SignFrom is when the key starts signing new tokens: CreatedAt plus
	// the publish delay of a rotation, so that upstreams' JWKS caches hold
	// it before the first token signed with it reaches them.
	SignFrom time.Time
	// RetiredAt, when set, ends the key at once: every token it signed is
	// refused and it is no longer published.
	RetiredAt time.Time
}

// Retired reports whether the key was retired.
func (k *SigningKey) Retired() bool { return !k.RetiredAt.IsZero() }

// KeySet is a store's signing keys in creation order.
type KeySet struct {
	Keys []SigningKey
}

// Clone returns a deep copy of ks (nil gives an empty set).
func (ks *KeySet) Clone() *KeySet {
	c := &KeySet{}
	if ks == nil {
		return c
	}
	c.Keys = make([]SigningKey, len(ks.Keys))
	for i, k := range ks.Keys {
		k.Private = bytes.Clone(k.Private)
		c.Keys[i] = k
	}
	return c
}

// Key returns the key with the given ID, or nil.
func (ks *KeySet) Key(id string) *SigningKey {
	for i := range ks.Keys {
		if ks.Keys[i].ID == id {
			return &ks.Keys[i]
		}
	}
	return nil
}

// Equal reports whether a and b hold the same keys in the same order.
func (ks *KeySet) Equal(b *KeySet) bool {
	return slices.EqualFunc(ks.Keys, b.Keys, sameKey)
}

// sameKey reports whether x and y are the same key, every field equal.
func sameKey(x, y SigningKey) bool {
	return x.ID == y.ID && x.Alg == y.Alg && bytes.Equal(x.Private, y.Private) &&
		x.CreatedAt.Equal(y.CreatedAt) && x.SignFrom.Equal(y.SignFrom) && x.RetiredAt.Equal(y.RetiredAt)
}

// ErrKeyConflict: a change to a key set that would alter a stored key
// (anything but setting RetiredAt once), or an import of a key whose ID is
// stored with other content.
var ErrKeyConflict = errors.New("signing key conflict")

// CheckKeySetChange is the rule every backend applies, inside the
// transaction, to the set fn of UpdateSigningKeys returned (next) against
// the stored one (prev): each key is well formed, IDs are unique, a kept
// key is unchanged except for RetiredAt going from zero to a time, and the
// set is no larger than MaxSigningKeys. Keys absent from next are removed.
func CheckKeySetChange(prev, next *KeySet) error {
	if len(next.Keys) > MaxSigningKeys {
		return fmt.Errorf("key set: %d keys, at most %d", len(next.Keys), MaxSigningKeys)
	}
	seen := make(map[string]bool, len(next.Keys))
	for i := range next.Keys {
		k := &next.Keys[i]
		switch {
		case k.ID == "":
			return errors.New("key set: a key has no ID")
		case seen[k.ID]:
			return fmt.Errorf("key set: key ID %q appears twice", k.ID)
		case k.Alg != AlgEdDSA && k.Alg != AlgES256:
			return fmt.Errorf("key set: key %q has algorithm %q, want %s or %s", k.ID, k.Alg, AlgEdDSA, AlgES256)
		case len(k.Private) == 0:
			return fmt.Errorf("key set: key %q has no private key", k.ID)
		case k.CreatedAt.IsZero() || k.SignFrom.Before(k.CreatedAt):
			return fmt.Errorf("key set: key %q must be created, and sign no earlier than it was created", k.ID)
		}
		seen[k.ID] = true
		old := prev.Key(k.ID)
		if old == nil {
			continue
		}
		same := old.Alg == k.Alg && bytes.Equal(old.Private, k.Private) &&
			old.CreatedAt.Equal(k.CreatedAt) && old.SignFrom.Equal(k.SignFrom)
		retire := old.RetiredAt.Equal(k.RetiredAt) || (old.RetiredAt.IsZero() && !k.RetiredAt.IsZero())
		if !same || !retire {
			return fmt.Errorf("%w: key %q may only be retired, never changed", ErrKeyConflict, k.ID)
		}
	}
	return nil
}

// KeyStore is the part of Store that keeps the signing keys.
type KeyStore interface {
	// SigningKeys returns the stored key set, empty when there is none.
	// It is served from memory, without I/O: the bearer check calls it on
	// every request, so that a retired key is refused from the next
	// request on. The *KeySet is shared and read-only, and the same
	// pointer is returned until the set changes: a caller may compare
	// pointers to see whether it must rebuild what it derived from it. A
	// change written through another handle on the same backing state
	// shows within the backend's propagation bound (as for AuthState);
	// one written through this handle shows once UpdateSigningKeys
	// returned.
	SigningKeys(ctx context.Context) (*KeySet, error)

	// UpdateSigningKeys runs fn on a copy of the stored key set and, when
	// fn returns nil, stores the result atomically after
	// CheckKeySetChange; with ErrSkipWrite it stores nothing and returns
	// the stored set; another error from fn aborts and is returned as is.
	// As for UpdateUser, fn may run more than once, each time on a fresh
	// copy (two gateways creating the first key at once: one of them
	// commits, the other's fn runs again and finds the key), so it must
	// compute its change from *ks alone. It returns the set as stored.
	UpdateSigningKeys(ctx context.Context, fn func(ks *KeySet) error) (*KeySet, error)
}
