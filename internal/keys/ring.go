package keys

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// Ring keeps a token.Manager's keys in step with the store's key set: the
// keys that verify, and the one that signs, at the present moment.
//
// Sync is on every request's path and costs an atomic load and two
// comparisons while nothing changed: the store serves its key set from
// memory with a pointer that stays the same until the set changes, and
// the ring knows the next moment at which a key changes state (a pending
// key starts signing, a superseded one stops verifying). Only then does it
// rebuild, once, under a lock.
type Ring struct {
	st   store.KeyStore
	m    *token.Manager
	life time.Duration
	now  func() time.Time

	cur atomic.Pointer[ringState]

	mu     sync.Mutex
	parsed map[string]token.Key // by ID; keys never change, so parse once
}

type ringState struct {
	set  *store.KeySet
	next time.Time // the next state change; zero: none scheduled
	jwks []byte
	keys []Status
}

// NewRing ties m (an EdDSA or ES256 Manager) to the key set of st. life is
// the longest a token of m lives (the refresh token lifetime, leeway
// included). now is the clock (time.Now when nil).
func NewRing(st store.KeyStore, m *token.Manager, life time.Duration, now func() time.Time) *Ring {
	if now == nil {
		now = time.Now
	}
	return &Ring{st: st, m: m, life: life, now: now, parsed: map[string]token.Key{}}
}

// Sync brings the Manager's keys up to date with the store and the clock.
// When the set has no key that signs (the store's first start, or an
// operator retired the last one offline), it creates one. An error from
// the store (store.ErrUnavailable while a distributed store cannot confirm
// it is current) is returned as is: the caller must not verify a token
// with a key set that may be stale.
func (r *Ring) Sync(ctx context.Context) error {
	set, err := r.st.SigningKeys(ctx)
	if err != nil {
		return err
	}
	if s := r.cur.Load(); s != nil && s.set == set && (s.next.IsZero() || r.now().Before(s.next)) {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if s := r.cur.Load(); s != nil && s.set == set && (s.next.IsZero() || now.Before(s.next)) {
		return nil
	}
	sts := Describe(set, r.m.Alg(), now, r.life)
	if signer(sts) == nil {
		// life 0: no pruning here. Gateways on one store may give their
		// tokens different lifetimes, and a key spent for this one may
		// still verify another's; pruning is for a rotation through the
		// admin API, which judges by the longest lifetime it knows.
		if set, err = Ensure(ctx, r.st, r.m.Alg(), now, 0); err != nil {
			return fmt.Errorf("keys: creating a signing key: %w", err)
		}
		sts = Describe(set, r.m.Alg(), now, r.life)
	}
	st := &ringState{set: set, keys: sts}
	var signerID string
	var verify []token.Key
	var jwks jwkSet
	jwks.Keys = []jwk{}
	for i := range sts {
		s := &sts[i]
		for _, t := range []time.Time{s.SignFrom, s.VerifyUntil} {
			if t.After(now) && (st.next.IsZero() || t.Before(st.next)) {
				st.next = t
			}
		}
		if !s.Verifies() {
			continue
		}
		k, ok := r.parsed[s.ID]
		if !ok {
			if k, err = Parse(set.Key(s.ID)); err != nil {
				return err
			}
			r.parsed[s.ID] = k
		}
		verify = append(verify, k)
		if s.State == Signing {
			signerID = s.ID
		}
		j, err := publicJWK(s.ID, s.Alg, k)
		if err != nil {
			return err
		}
		jwks.Keys = append(jwks.Keys, j)
	}
	if st.jwks, err = json.Marshal(jwks); err != nil {
		return err
	}
	if err := r.m.SetKeys(signerID, verify); err != nil {
		return err
	}
	r.cur.Store(st)
	return nil
}

// JWKS returns the JSON Web Key Set (RFC 7517) of the public keys that
// verify tokens now, as of the last Sync.
func (r *Ring) JWKS() []byte {
	if s := r.cur.Load(); s != nil {
		return s.jwks
	}
	return []byte(`{"keys":[]}`)
}

// Keys returns the status of the Manager's keys as of the last Sync.
func (r *Ring) Keys() []Status {
	if s := r.cur.Load(); s != nil {
		return s.keys
	}
	return nil
}

// Life is the token lifetime the ring judges keys by.
func (r *Ring) Life() time.Duration { return r.life }

// jwk is one public key, RFC 7517 section 4, with the members of RFC 8037
// (OKP, Ed25519) and RFC 7518 section 6.2 (EC, P-256).
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y,omitempty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

type jwkSet struct {
	Keys []jwk `json:"keys"`
}

func publicJWK(id, alg string, k token.Key) (jwk, error) {
	enc := base64.RawURLEncoding
	switch pub := k.Public.(type) {
	case ed25519.PublicKey:
		return jwk{Kty: "OKP", Crv: "Ed25519", X: enc.EncodeToString(pub), Kid: id, Alg: alg, Use: "sig"}, nil
	case *ecdsa.PublicKey:
		// RFC 7518 section 6.2.1.2: each coordinate is the full size of
		// the field (32 bytes for P-256), leading zeros kept.
		b, err := pub.Bytes() // 0x04 || X || Y, uncompressed
		if err != nil {
			return jwk{}, err
		}
		n := (len(b) - 1) / 2
		return jwk{Kty: "EC", Crv: "P-256", X: enc.EncodeToString(b[1 : 1+n]), Y: enc.EncodeToString(b[1+n:]),
			Kid: id, Alg: alg, Use: "sig"}, nil
	}
	return jwk{}, fmt.Errorf("keys: key %q: no JWK form for %T", id, k.Public)
}
