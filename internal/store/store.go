// Package store defines where users and their token epochs live.
//
// The Store interface is small on purpose and says nothing about how a
// backend keeps its data: every backend (the embedded bbolt file in package
// bolt, the in-memory one in package memory, a distributed engine such as
// etcd later) implements it, keeps its own record types, and must pass the
// conformance suite in package storetest. Callers never see a backend's own
// errors for the cases they handle; they see the sentinel errors below.
//
// What moves between backends (backup, restore, a migration) is the portable
// export format of export.go, not a backend's own file.
package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Sentinel errors. Backends wrap their own failures with %w around these
// where one applies, so callers use errors.Is.
var (
	// ErrNotFound: no user with that ID or username.
	ErrNotFound = errors.New("user not found")
	// ErrExists: the username (compared without regard to case) is taken.
	ErrExists = errors.New("username already exists")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store is closed")
	// ErrUnavailable: the backend cannot answer now (a distributed store
	// that lost its quorum or its connection, or whose local state it
	// cannot confirm as current within its staleness bound). Callers
	// answer 503 with Retry-After rather than risk a stale answer; the
	// request may succeed when retried.
	ErrUnavailable = errors.New("store is unavailable")
)

// User is one account. The zero value of AllowedScopes (nil) means the user
// is not restricted beyond the gateway's grantable_scopes; a non-nil empty
// slice means the user may hold no scope at all.
//
// User is the value callers and backends exchange, not a storage format: it
// has no encoding tags on purpose, so that renaming a field here cannot
// silently change what a backend has written to disk or what an export
// holds. Each backend encodes it with its own record type, and the export
// format with exportUser.
type User struct {
	// ID is random, stable and never reused. It is what tokens carry.
	ID string
	// Username is unique without regard to letter case (see NormalizeUsername).
	Username string
	// PasswordHash is a PHC string (argon2id) or a bcrypt hash.
	PasswordHash string
	// Disabled users cannot log in, refresh, or use existing tokens.
	Disabled bool
	// AllowedScopes, when non-nil, caps the scopes this user's tokens may hold.
	AllowedScopes []string
	// TokenVersion is the revocation epoch. Every token carries the value it
	// was issued under and is refused once this moves on.
	TokenVersion uint64

	CreatedAt         time.Time
	UpdatedAt         time.Time
	PasswordChangedAt time.Time
}

// Clone returns a deep copy of u: backends hand out and take in copies, so
// that no caller shares a slice with the store or with another caller.
func (u *User) Clone() *User {
	c := *u
	if u.AllowedScopes != nil {
		c.AllowedScopes = append([]string{}, u.AllowedScopes...)
	}
	return &c
}

// AuthState is the part of a user that every bearer check reads. Backends
// keep it cheap to fetch: it is on the per-request path.
type AuthState struct {
	Username      string
	TokenVersion  uint64
	Disabled      bool
	AllowedScopes []string // nil: unrestricted
	// Sessions are the IDs of the user's sessions, sorted: an access
	// token's sid must be among them. A session that expired may still be
	// listed until it is swept; its tokens expired with it.
	Sessions []string
}

// HasSession reports whether sid is among the user's sessions.
func (a *AuthState) HasSession(sid string) bool {
	_, ok := slices.BinarySearch(a.Sessions, sid)
	return ok
}

// State returns the AuthState of u.
func (u *User) State() AuthState {
	return AuthState{
		Username:      u.Username,
		TokenVersion:  u.TokenVersion,
		Disabled:      u.Disabled,
		AllowedScopes: u.AllowedScopes,
	}
}

// Store is a user database. All methods are safe for concurrent use.
type Store interface {
	// CreateUser stores u. A missing ID is generated with NewID; zero
	// timestamps are set to now. It fails with ErrExists when the username
	// (normalized) or the ID is taken. On success u holds what was stored.
	CreateUser(ctx context.Context, u *User) error

	// CreateUsers stores every user of us in one transaction: all of them
	// or, on any error, none. Each is handled as by CreateUser (IDs and
	// timestamps filled in); a username taken in the store or repeated
	// within us (compared normalized) fails with an error wrapping ErrExists
	// that names it. On success every element of us holds what was stored.
	CreateUsers(ctx context.Context, us []*User) error

	// GetUser returns the user with the given ID, or ErrNotFound.
	GetUser(ctx context.Context, id string) (*User, error)

	// GetUserByName returns the user with the given username, compared
	// without regard to case, or ErrNotFound.
	GetUserByName(ctx context.Context, username string) (*User, error)

	// UpdateUser runs fn on a copy of the stored user and stores the result
	// when fn returns nil; an error from fn aborts and is returned as is.
	// fn must not change ID; a changed Username is re-indexed (ErrExists on
	// a clash). UpdatedAt is set by the store. Once UpdateUser returns,
	// every read through this handle sees the change, and so does every
	// read through another handle on the same backing state, except that
	// another handle's AuthState may lag by the backend's propagation
	// bound: a cache fed by a watch (etcd) shows another gateway's write
	// a moment after it committed (milliseconds on a LAN; storetest's
	// Backend.Propagation).
	//
	// fn may run more than once: a backend with optimistic transactions
	// (etcd) runs it again, on a fresh copy of the then stored user, when
	// another writer committed in between. So fn must compute its change
	// from *u alone (u.TokenVersion++, not a value read before the call),
	// must not act on anything but *u (no counters, no messages, no calls
	// into the store), and only the run whose result is stored counts.
	// Values fn captures from outside must not depend on how often it ran.
	UpdateUser(ctx context.Context, id string, fn func(u *User) error) (*User, error)

	// DeleteUser removes the user and its sessions, or returns ErrNotFound.
	// Its ID is never handed out again.
	DeleteUser(ctx context.Context, id string) error

	// ListUsers calls fn for every user in normalized-username order, from a
	// consistent snapshot. An error from fn stops the walk and is returned.
	ListUsers(ctx context.Context, fn func(u *User) error) error

	// AuthState returns the revocation-relevant state of a user, or
	// ErrNotFound. It is called on every proxied request.
	AuthState(ctx context.Context, id string) (AuthState, error)

	// HashClasses returns the classes (password.Class) of the password
	// hashes stored, in no particular order. Every write that stores a
	// hash (CreateUser, CreateUsers, UpdateUser) adds its class in the same
	// transaction, so that once the write returns the class is listed. A
	// backend may keep listing a class after no user holds it any more:
	// logins pad every failure to the classes listed (see
	// password.Hasher.Pad), so a stale class costs work, never secrecy,
	// whereas a missing one would let its users be told apart by timing.
	HashClasses(ctx context.Context) ([]string, error)

	// Secret returns the stored secret with the given name, creating it
	// with generate (once, atomically, even across concurrent callers and
	// handles) when absent. A secret, once stored, never changes: tokens
	// signed with it must keep verifying.
	Secret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error)

	// Secrets returns every stored secret by name, each value the caller's
	// own copy. Export uses it; nothing on the request path does.
	Secrets(ctx context.Context) (map[string][]byte, error)

	// KeyStore keeps the asymmetric signing keys (see keys.go).
	KeyStore

	// CreateSession stores a new session s for its user (s.ID, when
	// empty, is set with NewSessionID; zero CreatedAt, LastUsedAt and
	// RotatedAt become now). In the same transaction it removes the user's
	// sessions that expired by s.CreatedAt (the caller's clock, which the
	// session's times all come from) and then, while the user holds more than max
	// sessions (max > 0), the least recently used ones (LastUsedAt, oldest
	// first), never s itself. It returns the IDs it removed, for logs
	// (see SessionsToEnd). ErrNotFound when the user does not exist; an
	// error when s has no UserID or ExpiresAt, or s.ID is already one of
	// the user's sessions. On success s holds what was stored. Once it
	// returns, AuthState lists s.ID.
	CreateSession(ctx context.Context, s *Session, max int) (removed []string, err error)

	// GetSession returns the user's session sid, or ErrSessionNotFound.
	// An expired session not yet swept is returned as stored: callers
	// check ExpiresAt.
	GetSession(ctx context.Context, userID, sid string) (*Session, error)

	// UpdateSession runs fn on a copy of the stored session and stores the
	// result when fn returns nil; with ErrSkipWrite it stores nothing and
	// returns the session as fn left it; another error from fn aborts and
	// is returned as is. ErrSessionNotFound when there is no such session.
	// fn must not change ID or UserID. As for UpdateUser, fn may run more
	// than once, each time on a fresh copy: it must compute its change from
	// *s alone. Writes from many callers may be committed together (bbolt's
	// Batch), so a refresh is durable once UpdateSession returns without
	// costing one disk sync each.
	UpdateSession(ctx context.Context, userID, sid string, fn func(s *Session) error) (*Session, error)

	// DeleteSession ends the user's session sid, or returns
	// ErrSessionNotFound. Once it returns, AuthState no longer lists it.
	DeleteSession(ctx context.Context, userID, sid string) error

	// DeleteSessions ends every session of the user and returns how many
	// there were (0, nil for a user without any; ErrNotFound for no user).
	DeleteSessions(ctx context.Context, userID string) (int, error)

	// ListSessions returns the user's sessions that have not expired at
	// now (see SessionExpired), oldest first (CreatedAt, then ID). ErrNotFound for no user.
	ListSessions(ctx context.Context, userID string, now time.Time) ([]*Session, error)

	// SweepSessions removes every session, of any user, that has expired
	// at now (see SessionExpired), and returns how many. The realm calls it periodically so
	// that sessions of users who never come back do not pile up.
	SweepSessions(ctx context.Context, now time.Time) (int, error)

	// Close releases the store. Later calls fail with ErrClosed.
	Close() error
}

// NormalizeUsername is the form under which usernames are compared and
// indexed: letter case is ignored.
func NormalizeUsername(name string) string {
	return strings.ToLower(name)
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewID returns a random user ID: 128 bits from crypto/rand, base32 lower case.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "u" + strings.ToLower(idEncoding.EncodeToString(b[:]))
}

// SetPassword stores a new password hash and bumps TokenVersion in the same
// transaction, so that every token issued before it is refused from the
// moment it commits.
//
// It then ends every session of the user: their tokens are refused by the
// epoch already, and the sessions would only linger in listings.
func SetPassword(ctx context.Context, s Store, id, hash string) (*User, error) {
	u, err := s.UpdateUser(ctx, id, func(u *User) error {
		u.PasswordHash = hash
		u.TokenVersion++
		u.PasswordChangedAt = time.Now().UTC()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := s.DeleteSessions(ctx, id); err != nil {
		return u, fmt.Errorf("password set, but ending the sessions failed: %w", err)
	}
	return u, nil
}

// Revoke bumps TokenVersion without touching the password and ends every
// session of the user: every token issued before it is refused.
func Revoke(ctx context.Context, s Store, id string) (*User, error) {
	u, err := s.UpdateUser(ctx, id, func(u *User) error {
		u.TokenVersion++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := s.DeleteSessions(ctx, id); err != nil {
		return u, fmt.Errorf("revoked, but ending the sessions failed: %w", err)
	}
	return u, nil
}

// CatchUpper is implemented by a backend whose AuthState serves from a
// local copy that follows the writes made through other handles (etcd:
// other gateways' writes reach it through a watch, a moment later). A
// token minted by another gateway a moment ago may name a user, a session
// or a token_version that the copy does not hold yet; refusing it would
// sign out a client whose next request merely reached another gateway.
// CatchUp returns the user's AuthState as of every write committed
// anywhere before t: from the copy when it was proven current after t,
// otherwise read from the shared state itself (one round trip). It fails
// with an error wrapping ErrUnavailable when the shared state cannot be
// read within the backend's bound.
type CatchUpper interface {
	CatchUp(ctx context.Context, id string, t time.Time) (AuthState, error)
}

// FileSnapshotter is implemented by a backend that can also copy its own
// storage file (bbolt): a snapshot restored by putting the file in place,
// faster than an import for a large database but readable only by the same
// backend. The portable backup is Export.
type FileSnapshotter interface {
	// SnapshotFile writes a consistent copy of the file to w while the
	// store keeps serving and returns the number of bytes written.
	SnapshotFile(ctx context.Context, w io.Writer) (int64, error)
}

// NewSecret runs generate for the secret name that a backend found absent,
// with the checks every backend applies: a generator must be given and
// must produce a value. Backends call it inside the transaction that
// stores the value, so that only one caller generates.
func NewSecret(name string, generate func() ([]byte, error)) ([]byte, error) {
	if generate == nil {
		return nil, fmt.Errorf("secret %q is missing and no generator was given", name)
	}
	v, err := generate()
	if err != nil {
		return nil, fmt.Errorf("generate secret %q: %w", name, err)
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("generate secret %q: empty value", name)
	}
	return bytes.Clone(v), nil
}

// ErrSessionNotFound: no session with that ID for that user (it never
// existed, ended, expired and was removed, or its user is gone). A session
// that expired but was not removed yet is still found: callers check
// ExpiresAt.
var ErrSessionNotFound = errors.New("session not found")

// ErrSkipWrite, returned by the fn of UpdateSession, stores nothing and
// makes UpdateSession return the session as fn left it, with a nil error:
// for a caller that decides, from the stored state, that no write is due
// (a refresh token presented again within its grace period).
var ErrSkipWrite = errors.New("store: skip write")

// MaxUserAgentLen is the most of a client's User-Agent a session keeps.
const MaxUserAgentLen = 256

// Session is one login of one user on one device: the state behind its
// refresh token. Like User it is an exchange value without encoding tags;
// each backend keeps its own record type.
type Session struct {
	// ID (the sid claim) is random (NewSessionID) and unique per user.
	ID     string
	UserID string
	// Scopes are what the login granted; every refresh is cut down from
	// them.
	Scopes []string
	// Generation counts rotations: a refresh token carries the generation
	// it was issued for, and only the current one rotates. It is 1 at login.
	Generation uint64
	// RotatedAt is when Generation last moved (the login, at first): a
	// refresh token one generation behind is honoured for the reuse grace
	// counted from here, and the successor it gets is re-issued from it.
	RotatedAt  time.Time
	CreatedAt  time.Time
	LastUsedAt time.Time
	// ExpiresAt is the absolute end of the session; no token of it
	// outlives it.
	ExpiresAt time.Time
	// UserAgent (at most MaxUserAgentLen bytes) and Address are the
	// client's at login, for the owner to recognise the device.
	UserAgent string
	Address   string
}

// Clone returns a deep copy of s.
func (s *Session) Clone() *Session {
	c := *s
	if s.Scopes != nil {
		c.Scopes = append([]string{}, s.Scopes...)
	}
	return &c
}

// NewSessionID returns a random session ID: 128 bits from crypto/rand,
// base32 lower case, prefixed "s".
func NewSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "s" + strings.ToLower(idEncoding.EncodeToString(b[:]))
}
