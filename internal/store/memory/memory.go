// Package memory implements store.Store in memory, for tests and throwaway
// demos: everything is gone when the process ends.
//
// Handles opened with the same name share one state, the way two gateways
// share one etcd cluster: a write through one is read through the other at
// once. The state lives as long as a handle on it is open; an unnamed
// handle has a state of its own.
//
// Every user goes in and comes out as a copy, so no caller shares a slice
// with the store or with another caller.
package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// Options configures Open. The zero value is ready to use.
type Options struct {
	// RerunUpdates makes UpdateUser and UpdateSession run fn twice, each
	// time on a fresh copy of the stored value, and keep the second result,
	// as an optimistic backend does when another writer committed in
	// between. Tests turn it on to prove that callers' fns cope (see
	// store.Store.UpdateUser).
	RerunUpdates bool
}

// state is what handles with one name share.
type state struct {
	mu      sync.RWMutex
	users   map[string]*store.User // by ID
	names   map[string]string      // normalized username -> ID
	deleted map[string]time.Time   // tombstoned IDs
	classes map[string]time.Time   // password.Class -> first stored
	secrets map[string][]byte
	keys    *store.KeySet // replaced, never modified: SigningKeys hands it out
	// sessions by user ID, then session ID. A user's entry is absent when
	// it has none.
	sessions map[string]map[string]*store.Session

	refs int // open handles; guarded by registry.mu
}

func newState() *state {
	return &state{
		users:    map[string]*store.User{},
		names:    map[string]string{},
		deleted:  map[string]time.Time{},
		classes:  map[string]time.Time{},
		secrets:  map[string][]byte{},
		keys:     &store.KeySet{},
		sessions: map[string]map[string]*store.Session{},
	}
}

// registry holds the named states that have an open handle.
var registry = struct {
	mu sync.Mutex
	m  map[string]*state
}{m: map[string]*state{}}

// Store is a handle on an in-memory state. Create it with Open.
type Store struct {
	st     *state
	name   string
	opts   Options
	closed atomic.Bool
}

// Open returns a handle on the state called name, creating it when no
// handle on it is open. An empty name gives a private state.
func Open(name string, opts Options) *Store {
	if name == "" {
		return &Store{st: newState(), opts: opts}
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	st := registry.m[name]
	if st == nil {
		st = newState()
		registry.m[name] = st
	}
	st.refs++
	return &Store{st: st, name: name, opts: opts}
}

// Name returns the name the handle was opened with.
func (s *Store) Name() string { return s.name }

// Close releases the handle. When it was the last open handle on a named
// state, the state is dropped. A second Close returns nil.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	if s.name == "" {
		return nil
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	s.st.refs--
	if s.st.refs == 0 && registry.m[s.name] == s.st {
		delete(registry.m, s.name)
	}
	return nil
}

// read runs fn under the read lock, after the closed and context checks.
func (s *Store) read(ctx context.Context, fn func(st *state) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	return fn(s.st)
}

// write runs fn under the write lock. fn must leave the state as it was
// when it fails: every writer checks everything before it changes anything.
func (s *Store) write(ctx context.Context, fn func(st *state) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	return fn(s.st)
}

func (st *state) addClass(hash string, now time.Time) {
	if c := password.Class(hash); c != "" {
		if _, ok := st.classes[c]; !ok {
			st.classes[c] = now
		}
	}
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	return s.CreateUsers(ctx, []*store.User{u})
}

// CreateUsers implements store.Store: all of us are checked before any is
// stored. The elements of us are updated only on success.
func (s *Store) CreateUsers(ctx context.Context, us []*store.User) error {
	now := time.Now().UTC()
	prepared := make([]*store.User, len(us))
	for i, u := range us {
		if u == nil {
			return errors.New("user is nil")
		}
		if u.Username == "" {
			return errors.New("username is empty")
		}
		nu := u.Clone()
		if nu.CreatedAt.IsZero() {
			nu.CreatedAt = now
		}
		if nu.UpdatedAt.IsZero() {
			nu.UpdatedAt = now
		}
		if nu.PasswordChangedAt.IsZero() {
			nu.PasswordChangedAt = now
		}
		prepared[i] = nu
	}
	err := s.write(ctx, func(st *state) error {
		names := map[string]bool{}
		ids := map[string]bool{}
		for _, nu := range prepared {
			norm := store.NormalizeUsername(nu.Username)
			if _, taken := st.names[norm]; taken || names[norm] {
				return fmt.Errorf("username %q: %w", nu.Username, store.ErrExists)
			}
			names[norm] = true
			if nu.ID == "" {
				continue
			}
			if st.used(nu.ID) || ids[nu.ID] {
				return fmt.Errorf("user id %s is or was in use: %w", nu.ID, store.ErrExists)
			}
			ids[nu.ID] = true
		}
		for _, nu := range prepared {
			for nu.ID == "" {
				// 128 random bits: a clash is astronomically unlikely,
				// and checked anyway.
				if id := store.NewID(); !st.used(id) && !ids[id] {
					nu.ID = id
				}
			}
			ids[nu.ID] = true
		}
		for _, nu := range prepared {
			st.users[nu.ID] = nu.Clone()
			st.names[store.NormalizeUsername(nu.Username)] = nu.ID
			st.addClass(nu.PasswordHash, now)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, u := range us {
		*u = *prepared[i]
	}
	return nil
}

// used reports whether id is live or tombstoned.
func (st *state) used(id string) bool {
	if _, ok := st.users[id]; ok {
		return true
	}
	_, ok := st.deleted[id]
	return ok
}

// GetUser implements store.Store.
func (s *Store) GetUser(ctx context.Context, id string) (*store.User, error) {
	var out *store.User
	err := s.read(ctx, func(st *state) error {
		u, ok := st.users[id]
		if !ok {
			return store.ErrNotFound
		}
		out = u.Clone()
		return nil
	})
	return out, err
}

// GetUserByName implements store.Store.
func (s *Store) GetUserByName(ctx context.Context, username string) (*store.User, error) {
	var out *store.User
	err := s.read(ctx, func(st *state) error {
		id, ok := st.names[store.NormalizeUsername(username)]
		if !ok {
			return store.ErrNotFound
		}
		out = st.users[id].Clone()
		return nil
	})
	return out, err
}

// UpdateUser implements store.Store. fn runs under the state's write lock
// and must not call back into the store.
func (s *Store) UpdateUser(ctx context.Context, id string, fn func(u *store.User) error) (*store.User, error) {
	var out *store.User
	err := s.write(ctx, func(st *state) error {
		old, ok := st.users[id]
		if !ok {
			return store.ErrNotFound
		}
		runs := 1
		if s.opts.RerunUpdates {
			runs = 2
		}
		var u *store.User
		for range runs {
			u = old.Clone()
			if err := fn(u); err != nil {
				return err
			}
		}
		if u.ID != id {
			return errors.New("user id cannot be changed")
		}
		if u.Username == "" {
			return errors.New("username is empty")
		}
		oldNorm, newNorm := store.NormalizeUsername(old.Username), store.NormalizeUsername(u.Username)
		if owner, taken := st.names[newNorm]; taken && owner != id {
			return fmt.Errorf("username %q: %w", u.Username, store.ErrExists)
		}
		u.UpdatedAt = time.Now().UTC()
		delete(st.names, oldNorm)
		st.names[newNorm] = id
		st.users[id] = u.Clone()
		st.addClass(u.PasswordHash, u.UpdatedAt)
		out = u
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteUser implements store.Store. The ID stays tombstoned for the life
// of the state.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	return s.write(ctx, func(st *state) error {
		u, ok := st.users[id]
		if !ok {
			return store.ErrNotFound
		}
		delete(st.names, store.NormalizeUsername(u.Username))
		delete(st.users, id)
		delete(st.sessions, id)
		st.deleted[id] = time.Now().UTC()
		return nil
	})
}

// ListUsers implements store.Store. It copies the users out under the read
// lock and calls fn after releasing it, so fn may call into the store.
func (s *Store) ListUsers(ctx context.Context, fn func(u *store.User) error) error {
	var users []*store.User
	err := s.read(ctx, func(st *state) error {
		norms := make([]string, 0, len(st.names))
		for n := range st.names {
			norms = append(norms, n)
		}
		slices.Sort(norms)
		users = make([]*store.User, len(norms))
		for i, n := range norms {
			users[i] = st.users[st.names[n]].Clone()
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, u := range users {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(u); err != nil {
			return err
		}
	}
	return nil
}

// AuthState implements store.Store.
func (s *Store) AuthState(ctx context.Context, id string) (store.AuthState, error) {
	var out store.AuthState
	err := s.read(ctx, func(st *state) error {
		u, ok := st.users[id]
		if !ok {
			return store.ErrNotFound
		}
		out = u.Clone().State()
		out.Sessions = st.sessionIDs(id)
		return nil
	})
	return out, err
}

// HashClasses implements store.Store, in sorted order.
func (s *Store) HashClasses(ctx context.Context) ([]string, error) {
	var out []string
	err := s.read(ctx, func(st *state) error {
		for c := range st.classes {
			out = append(out, c)
		}
		return nil
	})
	slices.Sort(out)
	return out, err
}

// Secret implements store.Store. generate runs under the state's write
// lock, so it runs once even across handles.
func (s *Store) Secret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error) {
	if name == "" {
		return nil, errors.New("secret name is empty")
	}
	var out []byte
	err := s.write(ctx, func(st *state) error {
		if v, ok := st.secrets[name]; ok {
			out = slices.Clone(v)
			return nil
		}
		v, err := store.NewSecret(name, generate)
		if err != nil {
			return err
		}
		st.secrets[name] = v
		out = slices.Clone(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Secrets implements store.Store.
func (s *Store) Secrets(ctx context.Context) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.read(ctx, func(st *state) error {
		for k, v := range st.secrets {
			out[k] = slices.Clone(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SigningKeys implements store.Store.
func (s *Store) SigningKeys(ctx context.Context) (*store.KeySet, error) {
	var out *store.KeySet
	err := s.read(ctx, func(st *state) error {
		out = st.keys
		return nil
	})
	return out, err
}

// UpdateSigningKeys implements store.Store.
func (s *Store) UpdateSigningKeys(ctx context.Context, fn func(ks *store.KeySet) error) (*store.KeySet, error) {
	var out *store.KeySet
	err := s.write(ctx, func(st *state) error {
		runs := 1
		if s.opts.RerunUpdates {
			runs = 2
		}
		var next *store.KeySet
		for range runs {
			next = st.keys.Clone()
			if err := fn(next); err != nil {
				if errors.Is(err, store.ErrSkipWrite) {
					out = st.keys
					return nil
				}
				return err
			}
		}
		if err := store.CheckKeySetChange(st.keys, next); err != nil {
			return err
		}
		if next.Equal(st.keys) {
			// Unchanged: keep the pointer, so that callers rebuild nothing.
			out = st.keys
			return nil
		}
		st.keys = next.Clone() // the caller keeps next
		out = st.keys
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// String names the handle for logs.
func (s *Store) String() string {
	if s.name == "" {
		return "memory (private)"
	}
	return "memory:" + strings.ReplaceAll(s.name, "\n", " ")
}

// Interface guard.
var _ store.Store = (*Store)(nil)
