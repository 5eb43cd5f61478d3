package keys

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// unreachableKeys is a key store that cannot be reached.
type unreachableKeys struct{ store.KeyStore }

func (unreachableKeys) SigningKeys(context.Context) (*store.KeySet, error) {
	return nil, store.ErrUnavailable
}

func TestNewSigner(t *testing.T) {
	ctx := context.Background()
	cfg := func(alg string, key []byte) token.Config {
		return token.Config{Alg: alg, Key: key, Issuer: "iss", Audience: "aud", AccessTTL: time.Minute, RefreshTTL: time.Hour}
	}

	m, ring, err := NewSigner(ctx, cfg(token.AlgHS256, []byte(strings.Repeat("k", token.MinKeyLen))), nil, "db")
	if err != nil || m == nil || ring != nil {
		t.Fatalf("HS256: %v, %v, %v; want a manager and no ring", m, ring, err)
	}
	if _, _, err := NewSigner(ctx, cfg(token.AlgHS256, []byte("short")), nil, "db"); err == nil || !strings.HasPrefix(err.Error(), "secret: ") {
		t.Errorf("HS256 with a short key: %v, want a secret: error", err)
	}

	for _, alg := range []string{token.AlgEdDSA, token.AlgES256} {
		st := memory.Open("", memory.Options{})
		m, ring, err := NewSigner(ctx, cfg(alg, nil), st, "memory:x")
		if err != nil || m == nil || ring == nil {
			t.Fatalf("%s: %v, %v, %v; want a manager and a ring", alg, m, ring, err)
		}
		if ks := ring.Keys(); len(ks) != 1 || ks[0].Alg != alg || ring.Life() != time.Hour {
			t.Errorf("%s: keys %+v, life %s; want the one key created at start, judged by the refresh lifetime", alg, ks, ring.Life())
		}
		if _, _, err := m.IssueAccess(token.Subject{UserID: "u1"}); err != nil {
			t.Errorf("%s: the manager does not sign: %v", alg, err)
		}
		_ = st.Close()
	}

	_, _, err = NewSigner(ctx, cfg(token.AlgEdDSA, nil), unreachableKeys{}, "etcd:a:1/crudauth/")
	if want := "signing keys (EdDSA) in etcd:a:1/crudauth/: "; err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("an unreachable store: %v, want %q and ErrUnavailable", err, want)
	}
}
