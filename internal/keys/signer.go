package keys

import (
	"context"
	"fmt"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// NewSigner builds the token manager of cfg: for HS256 on cfg.Key; for
// EdDSA and ES256 on the key set of st, with the Ring that keeps it
// current, synced once here, so that the first key pair is created at
// start and a store that cannot be reached fails the start, as a bad HS256
// secret does. The ring is nil for HS256. storeName names st in messages.
func NewSigner(ctx context.Context, cfg token.Config, st store.KeyStore, storeName string) (*token.Manager, *Ring, error) {
	if Asymmetric(cfg.Alg) {
		cfg.Key = nil // the key pair comes from the store
	}
	m, err := token.New(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("secret: %w", err)
	}
	if !Asymmetric(cfg.Alg) {
		return m, nil, nil
	}
	// A key verifies for the longest a token it signed lives: a refresh
	// token (the access token's lifetime is never longer).
	ring := NewRing(st, m, cfg.RefreshTTL, nil)
	if err := ring.Sync(ctx); err != nil {
		return nil, nil, fmt.Errorf("signing keys (%s) in %s: %w", cfg.Alg, storeName, err)
	}
	return m, ring, nil
}
