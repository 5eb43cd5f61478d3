// Package users is the user administration shared by the admin API (on a
// running gateway's store) and the CLI (on a database it opened itself):
// add, change password, disable, enable, revoke, set scopes, delete, show,
// list and import. Both callers go through one Service, so the two paths
// apply the same rules; failures are *Error values with a Kind, which each
// caller maps to its own answer (an HTTP status, an exit message).
package users

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// MaxUsernameLen is the longest username accepted, in bytes.
const MaxUsernameLen = 256

// Settings are how new passwords are checked and hashed for one database:
// the gateway's configured policy, hasher and hashing limiter, so that a
// password set through the admin API meets the same rules and parameters as
// one changed at the gateway.
type Settings struct {
	// Policy is checked before hashing. The zero value is the default policy.
	Policy password.Policy
	// Hasher hashes new passwords and vets imported hashes. Required.
	Hasher *password.Hasher
	// Limiter bounds concurrent hashing; nil imposes no limit.
	Limiter *password.Limiter
	// Keys are the realm's signing key settings, which the key operations
	// judge and change keys by; the zero value when no running gateway
	// holds the store (the CLI on a store it opened itself).
	Keys KeySettings
}

// Service administers the users of one store, and its signing keys. It
// holds no state of its own and is safe for concurrent use.
type Service struct {
	st       store.Store
	settings Settings
	now      func() time.Time // the key operations' clock; nil: time.Now
}

// New returns the service over st. It panics when s.Hasher is nil: that is
// a wiring mistake, not something a request could cause.
func New(st store.Store, s Settings) *Service {
	if s.Hasher == nil {
		panic("users.New: Settings.Hasher is nil")
	}
	return &Service{st: st, settings: s}
}

// AddRequest is a user to add; its JSON form is the admin API's body.
type AddRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	// AllowedScopes: absent or null means no per-user limit; [] means no
	// scope at all.
	AllowedScopes []string `json:"allowed_scopes"`
	Disabled      bool     `json:"disabled,omitempty"`
}

// View is what the service returns of a user: everything but the hash.
type View struct {
	ID            string    `json:"id"`
	Username      string    `json:"username"`
	Disabled      bool      `json:"disabled"`
	AllowedScopes []string  `json:"allowed_scopes"`
	TokenVersion  uint64    `json:"token_version"`
	HashAlgorithm string    `json:"hash_algorithm"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// ViewOf returns the view of u.
func ViewOf(u *store.User) View {
	return View{
		ID: u.ID, Username: u.Username, Disabled: u.Disabled, AllowedScopes: u.AllowedScopes,
		TokenVersion: u.TokenVersion, HashAlgorithm: password.Algorithm(u.PasswordHash),
		CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt,
	}
}

// CheckUsername refuses usernames no account could have: too long, invalid
// UTF-8, or holding control characters. It does not refuse the empty name,
// which a login treats as an unknown user; the service refuses it on its own.
func CheckUsername(name string) error {
	if len(name) > MaxUsernameLen {
		return fmt.Errorf("username longer than %d bytes", MaxUsernameLen)
	}
	if !utf8.ValidString(name) {
		return errors.New("username is not valid UTF-8")
	}
	for _, c := range name {
		if unicode.IsControl(c) {
			return errors.New("username holds a control character")
		}
	}
	return nil
}

func validUsername(name string) error {
	if name == "" {
		return errorf(Invalid, nil, "username is empty")
	}
	if err := CheckUsername(name); err != nil {
		return errorf(Invalid, err, "invalid username %q: %v", truncate(name), err)
	}
	return nil
}

// truncate shortens a refused username before it goes into a message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// normalizeScopes validates and sorts a scope list; nil stays nil (no
// per-user limit) and an empty list stays non-nil (no scope at all).
func normalizeScopes(list []string) ([]string, error) {
	if list == nil {
		return nil, nil
	}
	set, err := scope.New(list...)
	if err != nil {
		return nil, errorf(Invalid, err, "allowed_scopes: %v", err)
	}
	return append([]string{}, set...), nil
}

func notFound(username string, cause error) error {
	return errorf(NotFound, cause, "no user %q", username)
}

func (s *Service) lookup(ctx context.Context, username string) (*store.User, error) {
	u, err := s.st.GetUserByName(ctx, username)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound(username, err)
	}
	return u, internal(err)
}

// hashNew checks pw against the policy, then hashes it under the limiter.
// The policy comes first so that a refused password costs no slot.
func (s *Service) hashNew(ctx context.Context, pw string) (string, error) {
	if err := s.settings.Policy.Check(pw); err != nil {
		return "", errorf(Invalid, err, "password refused: %v", err)
	}
	release, err := s.settings.Limiter.Acquire(ctx)
	if err != nil {
		return "", errorf(Busy, err, "password hashing is busy, retry shortly")
	}
	defer release()
	hash, err := s.settings.Hasher.Hash(pw)
	return hash, internal(err)
}

// written maps the result of a write on a user found by lookup: a
// store.ErrNotFound (the user was deleted in between) gives the same error
// as the lookup would have.
func written(username string, u *store.User, err error) (View, error) {
	if errors.Is(err, store.ErrNotFound) {
		return View{}, notFound(username, err)
	}
	if err != nil {
		return View{}, internal(err)
	}
	return ViewOf(u), nil
}

// Get returns the user with that name (compared without regard to case).
func (s *Service) Get(ctx context.Context, username string) (View, error) {
	u, err := s.lookup(ctx, username)
	if err != nil {
		return View{}, err
	}
	return ViewOf(u), nil
}

// List returns every user, in normalized-username order; never nil.
func (s *Service) List(ctx context.Context) ([]View, error) {
	views := []View{}
	err := s.st.ListUsers(ctx, func(u *store.User) error {
		views = append(views, ViewOf(u))
		return nil
	})
	if err != nil {
		return nil, internal(err)
	}
	return views, nil
}

// Add creates a user with a new password.
func (s *Service) Add(ctx context.Context, req AddRequest) (View, error) {
	if err := validUsername(req.Username); err != nil {
		return View{}, err
	}
	allowed, err := normalizeScopes(req.AllowedScopes)
	if err != nil {
		return View{}, err
	}
	// Existence first, so that a taken name is reported as such whatever
	// the password, and no hash is spent on it.
	if _, err := s.st.GetUserByName(ctx, req.Username); err == nil {
		return View{}, errorf(Exists, store.ErrExists, "user %q already exists", req.Username)
	} else if !errors.Is(err, store.ErrNotFound) {
		return View{}, internal(err)
	}
	hash, err := s.hashNew(ctx, req.Password)
	if err != nil {
		return View{}, err
	}
	u := &store.User{Username: req.Username, PasswordHash: hash, AllowedScopes: allowed, Disabled: req.Disabled}
	if err := s.st.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrExists) {
			return View{}, errorf(Exists, err, "user %q already exists", req.Username)
		}
		return View{}, internal(err)
	}
	return ViewOf(u), nil
}

// SetPassword sets a new password and bumps the token epoch in the same
// transaction (store.SetPassword), so that every token issued before is
// refused from the moment it commits.
func (s *Service) SetPassword(ctx context.Context, username, pw string) (View, error) {
	u, err := s.lookup(ctx, username)
	if err != nil {
		return View{}, err
	}
	hash, err := s.hashNew(ctx, pw)
	if err != nil {
		return View{}, err
	}
	u, err = store.SetPassword(ctx, s.st, u.ID, hash)
	return written(username, u, err)
}

// Revoke bumps the token epoch: every token issued so far is refused.
func (s *Service) Revoke(ctx context.Context, username string) (View, error) {
	u, err := s.lookup(ctx, username)
	if err != nil {
		return View{}, err
	}
	u, err = store.Revoke(ctx, s.st, u.ID)
	return written(username, u, err)
}

// Disable refuses the user's logins, refreshes and tokens. It also bumps
// the epoch and ends every session of the user, so that enabling the user
// again brings back none of the tokens or sessions from before (a stolen
// one among them).
func (s *Service) Disable(ctx context.Context, username string) (View, error) {
	v, err := s.update(ctx, username, func(u *store.User) error {
		u.Disabled = true
		u.TokenVersion++
		return nil
	})
	if err != nil {
		return v, err
	}
	if _, err := s.st.DeleteSessions(ctx, v.ID); err != nil {
		return v, internal(fmt.Errorf("disabled, but ending the sessions failed: %w", err))
	}
	return v, nil
}

// Enable lets a disabled user log in again; earlier tokens stay refused.
func (s *Service) Enable(ctx context.Context, username string) (View, error) {
	return s.update(ctx, username, func(u *store.User) error {
		u.Disabled = false
		return nil
	})
}

// SetScopes replaces the user's allowed scopes; nil removes the per-user
// limit and an empty list allows no scope at all.
func (s *Service) SetScopes(ctx context.Context, username string, list []string) (View, error) {
	allowed, err := normalizeScopes(list)
	if err != nil {
		return View{}, err
	}
	return s.update(ctx, username, func(u *store.User) error {
		u.AllowedScopes = allowed
		return nil
	})
}

func (s *Service) update(ctx context.Context, username string, fn func(*store.User) error) (View, error) {
	u, err := s.lookup(ctx, username)
	if err != nil {
		return View{}, err
	}
	u, err = s.st.UpdateUser(ctx, u.ID, fn)
	return written(username, u, err)
}

// Delete removes the user and returns what it was.
func (s *Service) Delete(ctx context.Context, username string) (View, error) {
	u, err := s.lookup(ctx, username)
	if err != nil {
		return View{}, err
	}
	if err := s.st.DeleteUser(ctx, u.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return View{}, notFound(username, err)
		}
		return View{}, internal(err)
	}
	return ViewOf(u), nil
}

// Import validates every record, then stores them all in one transaction
// (store.CreateUsers): a bad record names its line and nothing is
// imported. It returns the number of users imported.
func (s *Service) Import(ctx context.Context, records []Record) (int, error) {
	us, err := validateImport(records, s.settings.Hasher)
	if err != nil {
		return 0, err
	}
	// A taken name is looked up first so that the error names its line;
	// CreateUsers still refuses one taken in between.
	for i, u := range us {
		if _, err := s.st.GetUserByName(ctx, u.Username); err == nil {
			return 0, errorf(Exists, store.ErrExists, "line %d: user %q already exists; nothing imported", records[i].Line, u.Username)
		} else if !errors.Is(err, store.ErrNotFound) {
			return 0, internal(err)
		}
	}
	if err := s.st.CreateUsers(ctx, us); err != nil {
		if errors.Is(err, store.ErrExists) {
			return 0, errorf(Exists, err, "%v; nothing imported", err)
		}
		return 0, errorf(Internal, err, "import: %v; nothing imported", err)
	}
	return len(us), nil
}
