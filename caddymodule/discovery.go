package caddymodule

import (
	"context"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/config"
	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/keys"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// Defaults of the discovery settings.
const (
	DefaultJWKSPath     = "/.well-known/jwks.json"
	DefaultMetadataPath = "/.well-known/oauth-authorization-server"
)

// DiscoverySettings are what lets an upstream verify the gateway's tokens
// itself: the public keys, the metadata that points to them, and whether
// the token reaches the upstream at all.
type DiscoverySettings struct {
	// Path of the JSON Web Key Set (RFC 7517): the public keys that verify
	// tokens now (each with kid, alg and use "sig"; a key pending in a
	// rotation is there before it signs, a superseded one until its last
	// token expired). Public, GET. With HS256 the set is empty: an HMAC
	// secret is never published. "off" turns it off. Default:
	// /.well-known/jwks.json.
	JWKSPath string `json:"jwks_path,omitempty"`

	// Path of the authorization server metadata (RFC 8414): issuer,
	// token endpoint, jwks_uri, grant types, scopes. Public, GET. "off"
	// turns it off. Default: /.well-known/oauth-authorization-server.
	MetadataPath string `json:"metadata_path,omitempty"`

	// Whether a request that passed the bearer check goes upstream with
	// its Authorization header. Default: off, the header is removed and
	// the upstream gets the identity headers only, not a credential it
	// could replay against the gateway (or that its logs could leak). Turn
	// it on for an upstream that verifies the token itself against the
	// JWKS. Requests to public rules lose the header too.
	ForwardToken bool `json:"forward_token,omitempty"`
}

func (s *DiscoverySettings) setDefaults() {
	orDefault(&s.JWKSPath, DefaultJWKSPath)
	orDefault(&s.MetadataPath, DefaultMetadataPath)
}

// subdirectives are the discovery subdirectives.
func (s *DiscoverySettings) subdirectives() subdirectives {
	return subdirectives{
		"jwks_path":     pathArg(&s.JWKSPath, true),
		"metadata_path": pathArg(&s.MetadataPath, true),
		"forward_token": onOff(&s.ForwardToken),
	}
}

// provisionKeys builds the handler's token manager on the realm's
// algorithm (keys.NewSigner): the realm's secret for HS256, a key Ring on
// the realm's store for EdDSA and ES256.
func (h *Handler) provisionKeys(ctx context.Context) error {
	r := h.realm
	cfg := token.Config{
		Alg:        r.signingAlg,
		Key:        r.key,
		Issuer:     h.Issuer,
		Audience:   h.Audience,
		AccessTTL:  time.Duration(h.AccessTTL),
		RefreshTTL: time.Duration(h.RefreshTTL),
	}
	var err error
	if h.tokens, h.keyRing, err = keys.NewSigner(ctx, cfg, r.store, storeName(r.storeKey)); err != nil {
		return err
	}
	if h.keyRing != nil {
		// The admin API's key commands judge keys by this lifetime too.
		r.addRing(h.keyRing)
	}
	return nil
}

// discovery is the endpoints' Discovery configuration.
func (h *Handler) discovery() endpoints.Discovery {
	d := endpoints.Discovery{
		JWKSPath:     config.DiscoveryPath(h.JWKSPath),
		MetadataPath: config.DiscoveryPath(h.MetadataPath),
		Issuer:       h.Issuer,
		Scopes:       []string(h.ceiling),
	}
	if h.realm != nil {
		d.SigningAlg = h.realm.signingAlg
		d.JWKSMaxAge = config.JWKSMaxAge(h.realm.publishDelay)
	}
	if ring := h.keyRing; ring != nil {
		d.JWKS = func(ctx context.Context) ([]byte, error) {
			if err := ring.Sync(ctx); err != nil {
				return nil, err
			}
			return ring.JWKS(), nil
		}
	}
	return d
}
