package users

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
)

// newTestStore returns an empty store for one test, closed when the test
// ends. It is the only place the tests name a backend.
func newTestStore(t *testing.T) store.Store {
	t.Helper()
	st := memory.Open("", memory.Options{RerunUpdates: true}) // unnamed: private; every update's fn runs twice
	t.Cleanup(func() { _ = st.Close() })
	return st
}

var testHasher = sync.OnceValue(func() *password.Hasher {
	h, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		panic(err)
	}
	return h
})

// newTestService returns a service over a fresh store with the default
// policy, the default hasher and no limiter.
func newTestService(t *testing.T) (*Service, store.Store) {
	t.Helper()
	st := newTestStore(t)
	return New(st, Settings{Hasher: testHasher()}), st
}

// wantErr checks that err is an *Error of kind k whose message holds every
// one of msgs.
func wantErr(t *testing.T, err error, k Kind, msgs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s %q", k, msgs)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%T %v is not an *Error", err, err)
	}
	if got := KindOf(err); got != k {
		t.Errorf("kind %s, want %s (%v)", got, k, err)
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not contain %q", err, m)
		}
	}
}

// mustAdd adds a user with a valid password.
func mustAdd(t *testing.T, svc *Service, name string) View {
	t.Helper()
	v, err := svc.Add(context.Background(), AddRequest{Username: name, Password: name + "-password"})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// readUser returns the stored user, hash included.
func readUser(t *testing.T, st store.Store, name string) *store.User {
	t.Helper()
	u, err := st.GetUserByName(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
