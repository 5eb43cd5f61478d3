// Package keys is the policy of a store's asymmetric signing keys: which
// key signs, which keys verify and are published, how a rotation and a
// retirement change the set, and the JWKS (RFC 7517) that publishes the
// public halves. The keys themselves live in the store (store.KeySet), so
// that every gateway on the store signs and verifies with the same ones.
//
// The life of a key, for a gateway whose tokens live at most L (the
// longest of its access and refresh token lifetimes):
//
//	pending    created and published; signs from SignFrom on
//	signing    the newest live key whose SignFrom has come
//	verifying  superseded by a newer key at time T; its tokens stay valid
//	           until T+L, so it verifies and is published until then
//	expired    nothing it signed can still be valid: neither verified nor
//	           published, and pruned from the set
//	retired    ended at once by an operator: refused, never published
//
// A rotation publishes the new key first and lets it sign only after a
// delay, so that upstreams caching the JWKS hold it before they meet a
// token it signed; the old key keeps verifying until its last token has
// expired. No flag day: no token is refused by a rotation.
package keys

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// State is where a key is in its life (see the package comment).
type State string

const (
	Pending   State = "pending"
	Signing   State = "signing"
	Verifying State = "verifying"
	Expired   State = "expired"
	Retired   State = "retired"
)

// DefaultPublishDelay is how long a rotated key is published before it
// signs when nothing else is configured (the realm's key_publish_delay,
// the CLI's --delay).
const DefaultPublishDelay = time.Hour

// Errors of Rotate and Retire.
var (
	ErrKeyNotFound     = errors.New("no signing key with that id")
	ErrRotationPending = errors.New("a rotation is already pending")
)

// Asymmetric reports whether alg is an algorithm of the key set (EdDSA,
// ES256) rather than HS256's secret.
func Asymmetric(alg string) bool { return alg == store.AlgEdDSA || alg == store.AlgES256 }

// Generate makes a new key of alg, created at now, that signs from
// signFrom on. Its ID is 128 random bits, base64url.
func Generate(alg string, now, signFrom time.Time) (store.SigningKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case store.AlgEdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case store.AlgES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return store.SigningKey{}, fmt.Errorf("keys: %q is not an asymmetric algorithm (want %s or %s)", alg, store.AlgEdDSA, store.AlgES256)
	}
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("keys: generate %s key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("keys: encode %s key: %w", alg, err)
	}
	var id [16]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24+)
	// Not truncated: creation order decides which key signs (Describe).
	now, signFrom = now.UTC(), signFrom.UTC()
	if signFrom.Before(now) {
		signFrom = now
	}
	return store.SigningKey{
		ID:        base64.RawURLEncoding.EncodeToString(id[:]),
		Alg:       alg,
		Private:   der,
		CreatedAt: now,
		SignFrom:  signFrom,
	}, nil
}

// Parse decodes a stored key into the token package's form, checking that
// its private key fits its algorithm.
func Parse(k *store.SigningKey) (token.Key, error) {
	p, err := x509.ParsePKCS8PrivateKey(k.Private)
	if err != nil {
		return token.Key{}, fmt.Errorf("keys: key %q: %w", k.ID, err)
	}
	switch p := p.(type) {
	case ed25519.PrivateKey:
		if k.Alg == store.AlgEdDSA {
			return token.Key{ID: k.ID, Private: p, Public: p.Public()}, nil
		}
	case *ecdsa.PrivateKey:
		if k.Alg == store.AlgES256 && p.Curve == elliptic.P256() {
			return token.Key{ID: k.ID, Private: p, Public: &p.PublicKey}, nil
		}
	}
	return token.Key{}, fmt.Errorf("keys: key %q: the private key (%T) is not one of %s", k.ID, p, k.Alg)
}

// Status is one key of a set as seen at one moment.
type Status struct {
	ID        string
	Alg       string
	State     State
	CreatedAt time.Time
	SignFrom  time.Time
	// SignedUntil is when a newer key took over (or takes over) signing;
	// zero while no newer key is scheduled.
	SignedUntil time.Time
	// VerifyUntil is when the last token the key signed expires:
	// SignedUntil plus the token lifetime; zero while open ended. For a
	// retired key, when it was retired.
	VerifyUntil time.Time
	RetiredAt   time.Time
}

// Verifies reports whether tokens signed with the key are accepted (and
// so whether it is published).
func (s *Status) Verifies() bool {
	return s.State == Pending || s.State == Signing || s.State == Verifying
}

// Describe returns the status of every key of alg in ks at now, for tokens
// that live at most life, in creation order (CreatedAt, then SignFrom,
// then ID), retired keys among them.
//
// A key signs from its SignFrom until a key created after it starts
// signing (the earliest SignFrom among the later keys that are live, or
// that were retired after they started signing); it never signs again
// after that, even when its successor is retired (the retirement adds a
// fresh key instead, see Retire). A key retired before it ever signed
// takes nothing over. Ordering by creation rather than by SignFrom makes
// the newest key win: a replacement made by a retirement signs at once,
// even while an older rotation is still pending.
func Describe(ks *store.KeySet, alg string, now time.Time, life time.Duration) []Status {
	var keys []*store.SigningKey
	for i := range ks.Keys {
		if ks.Keys[i].Alg == alg {
			keys = append(keys, &ks.Keys[i])
		}
	}
	slices.SortFunc(keys, func(a, b *store.SigningKey) int {
		// Keys created at the same instant (a clock that did not move)
		// are taken in the order they sign.
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), a.SignFrom.Compare(b.SignFrom), cmp.Compare(a.ID, b.ID))
	})
	out := make([]Status, len(keys))
	var taken time.Time // earliest SignFrom of the later keys that sign(ed); zero: none
	for i := len(keys) - 1; i >= 0; i-- {
		k := keys[i]
		s := &out[i]
		*s = Status{ID: k.ID, Alg: k.Alg, CreatedAt: k.CreatedAt, SignFrom: k.SignFrom, RetiredAt: k.RetiredAt,
			SignedUntil: taken}
		if !taken.IsZero() {
			s.VerifyUntil = taken.Add(life)
		}
		signs := true
		switch {
		case k.Retired():
			s.State, s.VerifyUntil = Retired, k.RetiredAt
			signs = !k.RetiredAt.Before(k.SignFrom)
		case !taken.IsZero() && !now.Before(taken):
			s.State = Verifying
			if !now.Before(s.VerifyUntil) || !taken.After(k.SignFrom) {
				// Its last token expired, or it never signed: a pending
				// key overtaken by a newer one before its time came.
				s.State = Expired
			}
		case now.Before(k.SignFrom):
			s.State = Pending
		default:
			s.State = Signing
		}
		if signs && (taken.IsZero() || k.SignFrom.Before(taken)) {
			taken = k.SignFrom
		}
	}
	return out
}

// signer returns the key of sts that signs, or nil.
func signer(sts []Status) *Status {
	for i := range sts {
		if sts[i].State == Signing {
			return &sts[i]
		}
	}
	return nil
}

// prune drops the keys that can no longer matter: expired ones, and
// retired ones once every token they could have signed has expired.
func prune(ks *store.KeySet, now time.Time, life time.Duration) {
	gone := map[string]bool{}
	algs := map[string]bool{}
	for _, k := range ks.Keys {
		algs[k.Alg] = true
	}
	for alg := range algs {
		for _, s := range Describe(ks, alg, now, life) {
			if s.State == Expired || (s.State == Retired && !now.Before(s.RetiredAt.Add(life))) {
				gone[s.ID] = true
			}
		}
	}
	ks.Keys = slices.DeleteFunc(ks.Keys, func(k store.SigningKey) bool { return gone[k.ID] })
}

// Ensure makes sure that alg has a key that signs at now: on a store
// without one (a gateway's first start) it adds one that signs at once,
// created once even when several gateways start together. With life > 0
// it also prunes the keys that no longer matter.
func Ensure(ctx context.Context, st store.KeyStore, alg string, now time.Time, life time.Duration) (*store.KeySet, error) {
	if !Asymmetric(alg) {
		return nil, fmt.Errorf("keys: %q is not an asymmetric algorithm", alg)
	}
	ks, err := st.SigningKeys(ctx)
	if err != nil {
		return nil, err
	}
	if signer(Describe(ks, alg, now, life)) != nil && !needsPrune(ks, now, life) {
		return ks, nil
	}
	return st.UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
		changed := false
		if life > 0 && needsPrune(ks, now, life) {
			prune(ks, now, life)
			changed = true
		}
		if signer(Describe(ks, alg, now, life)) == nil {
			k, err := Generate(alg, now, now)
			if err != nil {
				return err
			}
			ks.Keys = append(ks.Keys, k)
			changed = true
		}
		if !changed {
			return store.ErrSkipWrite
		}
		return nil
	})
}

func needsPrune(ks *store.KeySet, now time.Time, life time.Duration) bool {
	if life <= 0 {
		return false
	}
	c := ks.Clone()
	prune(c, now, life)
	return len(c.Keys) != len(ks.Keys)
}

// Rotate adds a new key of alg that is published at once and signs from
// now+delay on; the key signing now keeps signing until then, and keeps
// verifying for life after that. With life > 0 it also prunes. It refuses
// (ErrRotationPending) while a key of alg is still pending: one rotation
// at a time, so that the schedule stays readable.
func Rotate(ctx context.Context, st store.KeyStore, alg string, now time.Time, delay, life time.Duration) (store.SigningKey, error) {
	if !Asymmetric(alg) {
		return store.SigningKey{}, fmt.Errorf("keys: %q is not an asymmetric algorithm: an HS256 secret is not rotated through the key set", alg)
	}
	if delay < 0 {
		return store.SigningKey{}, errors.New("keys: the publish delay must not be negative")
	}
	var added store.SigningKey
	_, err := st.UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
		for _, s := range Describe(ks, alg, now, life) {
			if s.State == Pending {
				return fmt.Errorf("%w: key %s signs from %s", ErrRotationPending, s.ID, s.SignFrom.Format(time.RFC3339))
			}
		}
		if life > 0 {
			prune(ks, now, life)
		}
		k, err := Generate(alg, now, now.Add(delay))
		if err != nil {
			return err
		}
		ks.Keys = append(ks.Keys, k)
		added = k
		return nil
	})
	return added, err
}

// Retire ends the key id at once: every token it signed is refused. When
// that leaves its algorithm without a key that signs now, a replacement
// that signs at once is added in the same write (returned; nil when none
// was needed): a compromised key must stop signing now, not after a delay.
// Retiring a retired key changes nothing.
func Retire(ctx context.Context, st store.KeyStore, id string, now time.Time) (retired store.SigningKey, replacement *store.SigningKey, err error) {
	_, err = st.UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
		replacement = nil
		k := ks.Key(id)
		if k == nil {
			return fmt.Errorf("%w: %q", ErrKeyNotFound, id)
		}
		if k.Retired() {
			retired = *k
			return store.ErrSkipWrite
		}
		k.RetiredAt = now.UTC()
		retired = *k
		if signer(Describe(ks, k.Alg, now, 0)) == nil {
			r, err := Generate(k.Alg, now, now)
			if err != nil {
				return err
			}
			ks.Keys = append(ks.Keys, r)
			replacement = &r
		}
		return nil
	})
	retired.Private = nil
	if replacement != nil {
		replacement.Private = nil
	}
	return retired, replacement, err
}
