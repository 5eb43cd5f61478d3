package endpoints

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// Discovery is what the two public discovery endpoints need: the JWKS
// (RFC 7517) of the keys that verify the gateway's tokens, and the
// authorization server metadata (RFC 8414) that points to it.
type Discovery struct {
	// JWKSPath and MetadataPath are the endpoints' paths; "" is off.
	JWKSPath, MetadataPath string
	// JWKS returns the current key set document, brought up to date with
	// the store first. Nil for HS256: its secret is never published, and
	// the JWKS is an empty set.
	JWKS func(ctx context.Context) ([]byte, error)
	// JWKSMaxAge is the JWKS's Cache-Control max-age: shorter than the
	// time a rotated key is published before it signs, so that a cache
	// holds a new key before the first token it signed arrives.
	JWKSMaxAge time.Duration
	// Issuer is the iss of the gateway's tokens, and the metadata's issuer.
	Issuer string
	// Scopes are the scopes a token may hold (grantable_scopes).
	Scopes []string
	// SigningAlg is the algorithm tokens are signed with.
	SigningAlg string
}

// metadataMaxAge is how long a client may cache the metadata: it changes
// only with the configuration.
const metadataMaxAge = time.Hour

// ServeJWKS answers GET and HEAD at jwks_path with the public keys that
// verify tokens now. It is public: anyone may verify a token.
func (s *Server) ServeJWKS(w http.ResponseWriter, r *http.Request) error {
	if !publicGet(w, r) {
		return nil
	}
	doc := []byte(`{"keys":[]}`)
	if d := s.cfg.Discovery; d.JWKS != nil {
		var err error
		if doc, err = d.JWKS(r.Context()); err != nil {
			if errors.Is(err, store.ErrUnavailable) {
				w.Header().Set("Retry-After", "1")
				return writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
			}
			s.cfg.Logger.Error("serving the JWKS", zap.Error(err))
			return writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/jwk-set+json")
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(s.cfg.Discovery.JWKSMaxAge/time.Second)))
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write(doc)
	return err
}

// ServeMetadata answers GET and HEAD at metadata_path with the RFC 8414
// authorization server metadata. Its URLs are absolute (the RFC requires
// it), on the scheme and host the request came in on.
func (s *Server) ServeMetadata(w http.ResponseWriter, r *http.Request) error {
	if !publicGet(w, r) {
		return nil
	}
	d := s.cfg.Discovery
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	base := scheme + "://" + r.Host
	scopes := d.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	md := map[string]any{
		"issuer":                                d.Issuer,
		"token_endpoint":                        base + s.cfg.TokenPath,
		"grant_types_supported":                 []string{"password", "refresh_token"},
		"response_types_supported":              []string{},
		"scopes_supported":                      scopes,
		"token_endpoint_auth_methods_supported": []string{"none"},
	}
	if d.JWKS != nil && d.JWKSPath != "" {
		md["jwks_uri"] = base + d.JWKSPath
	}
	if d.SigningAlg != "" {
		// Not an RFC 8414 member for access tokens, but RFC 9068
		// verifiers look for the algorithm; servers commonly publish it
		// under this name.
		md["access_token_signing_alg_values_supported"] = []string{d.SigningAlg}
	}
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(metadataMaxAge/time.Second)))
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		return nil
	}
	return writeJSON(w, http.StatusOK, md)
}

// publicGet handles what the two discovery endpoints share: GET and HEAD
// only, and CORS for any origin (the documents are public and carry no
// credentials, so a browser app on any site may read them). It reports
// whether the caller should go on to serve the document.
func publicGet(w http.ResponseWriter, r *http.Request) bool {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return true
	case http.MethodOptions:
		h.Set("Access-Control-Allow-Methods", "GET, HEAD")
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	h.Set("Allow", "GET, HEAD, OPTIONS")
	_ = writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "invalid_request", "error_description": "use GET"})
	return false
}
