package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// laggingStore is a store whose AuthState lags behind, as a gateway's
// cache of a shared store does until its watch delivers another gateway's
// writes: users in stale answer the state recorded by lagBehind (nil:
// unknown) until CatchUp.
type laggingStore struct {
	store.Store
	mu       sync.Mutex
	stale    map[string]*store.AuthState
	catchUps int
	fail     error // CatchUp's answer, when set
}

func (l *laggingStore) lagBehind(t *testing.T, ids ...string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stale = map[string]*store.AuthState{}
	for _, id := range ids {
		st, err := l.Store.AuthState(t.Context(), id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			l.stale[id] = nil
		case err != nil:
			t.Fatal(err)
		default:
			l.stale[id] = &st
		}
	}
}

func (l *laggingStore) AuthState(ctx context.Context, id string) (store.AuthState, error) {
	l.mu.Lock()
	st, ok := l.stale[id]
	l.mu.Unlock()
	switch {
	case !ok:
		return l.Store.AuthState(ctx, id)
	case st == nil:
		return store.AuthState{}, store.ErrNotFound
	}
	return *st, nil
}

func (l *laggingStore) CatchUp(ctx context.Context, id string, _ time.Time) (store.AuthState, error) {
	l.mu.Lock()
	l.catchUps++
	if l.fail != nil {
		l.mu.Unlock()
		return store.AuthState{}, l.fail
	}
	l.stale = nil
	l.mu.Unlock()
	return l.Store.AuthState(ctx, id)
}

// notCatchingUp is the same lag in a store that cannot catch up.
type notCatchingUp struct{ *laggingStore }

func (notCatchingUp) CatchUp() {} // hides laggingStore.CatchUp: not a store.CatchUpper

// TestCatchUpWithOtherGateways: a token minted through another gateway a
// moment ago names a user, a session or a token_version that this
// gateway's copy of the shared state does not hold yet. A bearer check and
// a refresh ask the store to catch up and then accept it, instead of
// signing out a client whose next request reached another gateway. A
// token refused for a reason the copy already holds (an older
// token_version) costs no catch-up; a store that cannot catch up in time
// gives temporarily_unavailable, not a refusal.
func TestCatchUpWithOtherGateways(t *testing.T) {
	calls := map[string]func(s *Service, toks *Tokens) error{
		"bearer": func(s *Service, toks *Tokens) error {
			_, err := s.Authenticate(context.Background(), toks.Access)
			return err
		},
		"refresh": func(s *Service, toks *Tokens) error {
			_, err := s.Refresh(context.Background(), toks.Refresh, nil, Client{IP: "192.0.2.1"})
			return err
		},
	}
	for name, call := range calls {
		for _, tc := range []struct {
			name string
			// setup makes a token the lagging copy does not know.
			setup func(t *testing.T, s *Service, l *laggingStore, alice *store.User) *Tokens
		}{
			{"new session", func(t *testing.T, s *Service, l *laggingStore, alice *store.User) *Tokens {
				l.lagBehind(t, alice.ID)
				return login(t, s)
			}},
			{"newer token_version", func(t *testing.T, s *Service, l *laggingStore, alice *store.User) *Tokens {
				login(t, s)
				l.lagBehind(t, alice.ID) // holds the session, not the revocation
				if _, err := store.Revoke(t.Context(), l.Store, alice.ID); err != nil {
					t.Fatal(err)
				}
				return login(t, s)
			}},
			{"new user", func(t *testing.T, s *Service, l *laggingStore, alice *store.User) *Tokens {
				if err := l.Store.DeleteUser(t.Context(), alice.ID); err != nil {
					t.Fatal(err)
				}
				bob := &store.User{Username: "alice", PasswordHash: alice.PasswordHash}
				if err := l.Store.CreateUser(t.Context(), bob); err != nil {
					t.Fatal(err)
				}
				l.lagBehind(t, bob.ID)
				return login(t, s)
			}},
		} {
			t.Run(fmt.Sprintf("%s/%s", name, tc.name), func(t *testing.T) {
				s, alice, _, _ := sessionService(t, nil)
				l := &laggingStore{Store: s.c.Store}
				s.c.Store = l
				toks := tc.setup(t, s, l, alice)
				if err := call(s, toks); err != nil {
					t.Errorf("a token the copy does not hold yet: %v, want it accepted after a catch-up", err)
				}
				if l.catchUps != 1 {
					t.Errorf("%d catch-ups, want 1", l.catchUps)
				}

				if tc.name != "new session" {
					return
				}
				// The same lag in a store that cannot catch up: refused,
				// as before.
				s2, alice2, _, _ := sessionService(t, nil)
				l2 := &laggingStore{Store: s2.c.Store}
				s2.c.Store = notCatchingUp{l2}
				toks2 := tc.setup(t, s2, l2, alice2)
				var ae *Error
				if err := call(s2, toks2); !errors.As(err, &ae) || ae.Code == CodeTemporarilyUnavailable {
					t.Errorf("without CatchUp: %v, want a refusal", err)
				}

				// A store that cannot catch up now: retry later.
				s3, alice3, _, _ := sessionService(t, nil)
				l3 := &laggingStore{Store: s3.c.Store, fail: fmt.Errorf("%w: no leader", store.ErrUnavailable)}
				s3.c.Store = l3
				toks3 := tc.setup(t, s3, l3, alice3)
				if err := call(s3, toks3); !errors.As(err, &ae) || ae.Code != CodeTemporarilyUnavailable || !errors.Is(err, store.ErrUnavailable) {
					t.Errorf("catch-up failing: %v, want temporarily_unavailable", err)
				}
			})
		}
		t.Run(name+"/revoked", func(t *testing.T) {
			s, alice, _, _ := sessionService(t, nil)
			l := &laggingStore{Store: s.c.Store}
			s.c.Store = l
			toks := login(t, s)
			if _, err := store.Revoke(t.Context(), l.Store, alice.ID); err != nil {
				t.Fatal(err)
			}
			var ae *Error
			if err := call(s, toks); !errors.As(err, &ae) || ae.Code == CodeTemporarilyUnavailable {
				t.Errorf("a revoked token: %v, want a refusal", err)
			}
			if l.catchUps != 0 {
				t.Errorf("a token older than the state cost %d catch-ups, want 0", l.catchUps)
			}
		})
	}
}
