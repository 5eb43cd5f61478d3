package users

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/keys"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// KeySettings are a realm's signing key settings as the caller of a key
// operation knows them: all of them through a running gateway, none on a
// store the CLI opened itself.
type KeySettings struct {
	// Alg is the realm's signing_alg (HS256, EdDSA or ES256); empty when
	// not known.
	Alg string
	// PublishDelay is the realm's key_publish_delay; zero:
	// keys.DefaultPublishDelay.
	PublishDelay time.Duration
	// TokenLifetime is the longest a token of the realm's gateways lives
	// (their longest refresh_ttl); zero when not known.
	TokenLifetime time.Duration
}

// Where the token lifetime of a key list comes from.
const (
	LifetimeRealm   = "realm"   // the running gateways' longest refresh_ttl
	LifetimeRequest = "request" // given by the caller (--token-lifetime)
	LifetimeDefault = "default" // assumed: the default refresh_ttl
)

// hs256Note is what the key operations say of a realm on HS256.
const hs256Note = "signing_alg HS256 signs with one secret, never published and never rotated: there is no key set " +
	"(signing_alg EdDSA or ES256 keep published, rotatable keys)"

// KeyView is one signing key as the key operations show it: its public
// metadata and where it is in its life. The private key never leaves the
// store.
type KeyView struct {
	ID        string    `json:"kid"`
	Alg       string    `json:"alg"`
	State     string    `json:"state"` // pending, signing, verifying, expired, retired
	CreatedAt time.Time `json:"created_at"`
	SignFrom  time.Time `json:"sign_from"`
	// SignedUntil is when a newer key took or takes over signing; zero
	// while none is scheduled.
	SignedUntil time.Time `json:"signed_until,omitzero"`
	// VerifyUntil is when the last token the key signed expires, judged
	// with the list's token lifetime (for a retired key, when it was
	// retired); zero while open ended.
	VerifyUntil time.Time `json:"verify_until,omitzero"`
	RetiredAt   time.Time `json:"retired_at,omitzero"`
}

func keyViewOf(s *keys.Status) KeyView {
	return KeyView{ID: s.ID, Alg: s.Alg, State: string(s.State), CreatedAt: s.CreatedAt.UTC(), SignFrom: s.SignFrom.UTC(),
		SignedUntil: s.SignedUntil.UTC(), VerifyUntil: s.VerifyUntil.UTC(), RetiredAt: s.RetiredAt.UTC()}
}

// KeyListRequest narrows a key list; its fields are the admin API's query
// parameters.
type KeyListRequest struct {
	// Alg lists the keys of this algorithm only. Empty: the realm's
	// signing_alg, or when that is not known every algorithm in the store.
	Alg string
	// TokenLifetime (a Go duration) judges until when a superseded key
	// verifies. Empty: the realm's, or when that is not known the default
	// refresh_ttl.
	TokenLifetime string
}

// KeyList is the answer of a key list.
type KeyList struct {
	// SigningAlg is the realm's signing_alg; empty when not known.
	SigningAlg string `json:"signing_alg,omitempty"`
	// TokenLifetime is the lifetime VerifyUntil is judged with, as a Go
	// duration, and TokenLifetimeFrom where it comes from (LifetimeRealm,
	// LifetimeRequest or LifetimeDefault).
	TokenLifetime     string `json:"token_lifetime"`
	TokenLifetimeFrom string `json:"token_lifetime_from"`
	// Note says what the list leaves out, if anything.
	Note string    `json:"note,omitempty"`
	Keys []KeyView `json:"keys"`
}

// KeyRotateRequest is a rotation; its JSON form is the admin API's body.
type KeyRotateRequest struct {
	// Alg is the algorithm whose key is rotated. Empty: the realm's
	// signing_alg, or when that is not known the one algorithm of the
	// store's keys.
	Alg string `json:"alg,omitempty"`
	// Delay (a Go duration) is how long the new key is published before it
	// signs. Empty: the realm's key_publish_delay, or
	// keys.DefaultPublishDelay.
	Delay string `json:"delay,omitempty"`
}

// KeyRotateResult is the answer of a rotation.
type KeyRotateResult struct {
	// Key is the new key.
	Key KeyView `json:"key"`
	// Previous is the key that signs until Key takes over; empty when none
	// did.
	Previous string `json:"previous,omitempty"`
	// Note warns of a choice the caller may not have meant.
	Note string `json:"note,omitempty"`
}

// KeyRetireResult is the answer of a retirement.
type KeyRetireResult struct {
	// Key is the retired key.
	Key KeyView `json:"key"`
	// AlreadyRetired: the key was retired before; nothing changed.
	AlreadyRetired bool `json:"already_retired,omitempty"`
	// Replacement is the key added because no other key of the algorithm
	// signed; it signs at once.
	Replacement *KeyView `json:"replacement,omitempty"`
	// Signer is the key of the algorithm that signs now.
	Signer string `json:"signer,omitempty"`
}

func (s *Service) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// keyAlg checks an algorithm a caller named.
func keyAlg(alg string) error {
	switch alg {
	case "", token.AlgHS256, store.AlgEdDSA, store.AlgES256:
		return nil
	}
	return errorf(Invalid, nil, "unknown signing algorithm %.32q: want %s or %s", alg, store.AlgEdDSA, store.AlgES256)
}

// algsOf returns the algorithms of ks's keys, sorted.
func algsOf(ks *store.KeySet) []string {
	set := map[string]bool{}
	for _, k := range ks.Keys {
		set[k.Alg] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// signingKey returns the key of alg that signs at now, or nil.
func signingKey(sts []keys.Status) *keys.Status {
	for i := range sts {
		if sts[i].State == keys.Signing {
			return &sts[i]
		}
	}
	return nil
}

// ListKeys returns the keys of the store with their state at this moment,
// in creation order per algorithm, retired ones included.
func (s *Service) ListKeys(ctx context.Context, req KeyListRequest) (KeyList, error) {
	life, from := s.settings.Keys.TokenLifetime, LifetimeRealm
	if req.TokenLifetime != "" {
		d, err := time.ParseDuration(req.TokenLifetime)
		if err != nil || d <= 0 {
			return KeyList{}, errorf(Invalid, err, "token lifetime %.32q is not a positive duration such as 720h", req.TokenLifetime)
		}
		life, from = d, LifetimeRequest
	} else if life <= 0 {
		life, from = token.DefaultRefreshTTL, LifetimeDefault
	}
	if err := keyAlg(req.Alg); err != nil {
		return KeyList{}, err
	}
	out := KeyList{SigningAlg: s.settings.Keys.Alg, TokenLifetime: life.String(), TokenLifetimeFrom: from, Keys: []KeyView{}}
	alg := req.Alg
	if alg == "" {
		alg = s.settings.Keys.Alg
	}
	if alg == token.AlgHS256 {
		out.Note = hs256Note
		return out, nil
	}
	ks, err := s.st.SigningKeys(ctx)
	if err != nil {
		return KeyList{}, internal(err)
	}
	present := algsOf(ks)
	algs := present
	if alg != "" {
		algs = []string{alg}
		if others := slices.DeleteFunc(slices.Clone(present), func(a string) bool { return a == alg }); len(others) > 0 {
			out.Note = fmt.Sprintf("the store also holds keys of %s, which this list leaves out (name one to list them)",
				strings.Join(others, ", "))
		}
	}
	now := s.clock()
	for _, a := range algs {
		for _, st := range keys.Describe(ks, a, now, life) {
			out.Keys = append(out.Keys, keyViewOf(&st))
		}
	}
	return out, nil
}

// RotateKey adds a key that is published at once and signs after the
// delay; the key signing now keeps signing until then, and verifies its
// tokens until they expire. One rotation at a time: while a key is
// pending, it refuses (Conflict).
func (s *Service) RotateKey(ctx context.Context, req KeyRotateRequest) (KeyRotateResult, error) {
	realmAlg := s.settings.Keys.Alg
	if err := keyAlg(req.Alg); err != nil {
		return KeyRotateResult{}, err
	}
	alg := req.Alg
	switch {
	case realmAlg == token.AlgHS256 || alg == token.AlgHS256:
		return KeyRotateResult{}, errorf(Invalid, nil, "nothing to rotate: %s", hs256Note)
	case alg == "":
		alg = realmAlg
	case realmAlg != "" && alg != realmAlg:
		return KeyRotateResult{}, errorf(Invalid, nil, "the realm signs with %s: a new %s key would never sign there", realmAlg, alg)
	}
	delay := s.settings.Keys.PublishDelay
	if req.Delay != "" {
		d, err := time.ParseDuration(req.Delay)
		if err != nil || d < 0 {
			return KeyRotateResult{}, errorf(Invalid, err, "publish delay %.32q is not a duration such as 1h (0 or more)", req.Delay)
		}
		delay = d
	} else if delay <= 0 {
		delay = keys.DefaultPublishDelay
	}
	ks, err := s.st.SigningKeys(ctx)
	if err != nil {
		return KeyRotateResult{}, internal(err)
	}
	if alg == "" {
		switch present := algsOf(ks); len(present) {
		case 0:
			return KeyRotateResult{}, errorf(Invalid, nil, "the store holds no signing key: a gateway with signing_alg EdDSA or ES256 creates the first one when it starts")
		case 1:
			alg = present[0]
		default:
			return KeyRotateResult{}, errorf(Invalid, nil, "the store holds keys of %s: name the algorithm to rotate", strings.Join(present, " and "))
		}
	}
	now := s.clock()
	// The token lifetime is known only through a running gateway. On a
	// store the CLI opened itself (life 0) nothing is pruned: a key that
	// looks spent by a guessed lifetime may still verify the tokens of a
	// gateway whose refresh_ttl is longer.
	life := s.settings.Keys.TokenLifetime
	prev := signingKey(keys.Describe(ks, alg, now, life))
	if prev == nil {
		return KeyRotateResult{}, errorf(Invalid, nil, "no %s key signs in the store: a gateway with signing_alg %s creates one when it starts", alg, alg)
	}
	k, err := keys.Rotate(ctx, s.st, alg, now, delay, life)
	if errors.Is(err, keys.ErrRotationPending) {
		return KeyRotateResult{}, errorf(Conflict, err, "%v; rotate again once it signs, or retire it", err)
	}
	if err != nil {
		return KeyRotateResult{}, internal(err)
	}
	state := keys.Pending
	if !now.Before(k.SignFrom) {
		state = keys.Signing
	}
	out := KeyRotateResult{
		Key:      KeyView{ID: k.ID, Alg: k.Alg, State: string(state), CreatedAt: k.CreatedAt.UTC(), SignFrom: k.SignFrom.UTC()},
		Previous: prev.ID,
	}
	if d := s.settings.Keys.PublishDelay; realmAlg != "" && delay < d {
		out.Note = fmt.Sprintf("the delay %s is shorter than the realm's key_publish_delay %s: an upstream that cached the JWKS before the rotation may meet a token of the new key before it holds the key",
			delay, d)
	}
	return out, nil
}

// RetireKey ends the key kid at once: every token it signed is refused
// from the next request on. When no other key of its algorithm signs, a
// replacement that signs at once is added. Retiring a retired key changes
// nothing and is no error.
func (s *Service) RetireKey(ctx context.Context, kid string) (KeyRetireResult, error) {
	if kid == "" {
		return KeyRetireResult{}, errorf(Invalid, nil, "key id is empty")
	}
	if s.settings.Keys.Alg == token.AlgHS256 {
		return KeyRetireResult{}, errorf(Invalid, nil, "nothing to retire: %s", hs256Note)
	}
	now := s.clock()
	k, repl, err := keys.Retire(ctx, s.st, kid, now)
	if errors.Is(err, keys.ErrKeyNotFound) {
		return KeyRetireResult{}, errorf(NotFound, err, "no signing key %q", truncate(kid))
	}
	if err != nil {
		return KeyRetireResult{}, internal(err)
	}
	// Retire set RetiredAt to now when it retired the key; an older time is
	// the stored one of an earlier retirement.
	out := KeyRetireResult{AlreadyRetired: !k.RetiredAt.Equal(now.UTC())}
	ks, err := s.st.SigningKeys(ctx)
	if err != nil {
		return KeyRetireResult{}, internal(err)
	}
	sts := keys.Describe(ks, k.Alg, now, s.settings.Keys.TokenLifetime)
	out.Key = KeyView{ID: k.ID, Alg: k.Alg, State: string(keys.Retired), CreatedAt: k.CreatedAt.UTC(), SignFrom: k.SignFrom.UTC(),
		VerifyUntil: k.RetiredAt.UTC(), RetiredAt: k.RetiredAt.UTC()}
	for i := range sts {
		if sts[i].ID == k.ID {
			out.Key = keyViewOf(&sts[i])
		}
		if repl != nil && sts[i].ID == repl.ID {
			v := keyViewOf(&sts[i])
			out.Replacement = &v
		}
	}
	if repl != nil && out.Replacement == nil {
		// Another process changed the set meanwhile; the key was added
		// all the same.
		out.Replacement = &KeyView{ID: repl.ID, Alg: repl.Alg, State: string(keys.Signing), CreatedAt: repl.CreatedAt.UTC(), SignFrom: repl.SignFrom.UTC()}
	}
	if sg := signingKey(sts); sg != nil {
		out.Signer = sg.ID
	}
	return out, nil
}
