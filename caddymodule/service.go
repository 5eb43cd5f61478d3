package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// opError is a failure of a user operation that the caller can act on, with
// the HTTP status the admin API answers it with. The CLI prints msg.
type opError struct {
	status int
	msg    string
}

func (e *opError) Error() string { return e.msg }

func opErrorf(status int, format string, args ...any) error {
	return &opError{status: status, msg: fmt.Sprintf(format, args...)}
}

// statusOf returns the HTTP status for err: the opError's, or 500.
func statusOf(err error) int {
	var oe *opError
	if errors.As(err, &oe) {
		return oe.status
	}
	return http.StatusInternalServerError
}

// userService is the user administration shared by the admin API (on the
// running gateway's store) and the CLI (on a file it opened itself), so the
// two paths behave the same.
type userService struct {
	st       store.Store
	settings users.Settings
}

// addUserRequest is the body of an add.
type addUserRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	// AllowedScopes: absent or null means no per-user limit; [] means no
	// scope at all.
	AllowedScopes []string `json:"allowed_scopes"`
	Disabled      bool     `json:"disabled,omitempty"`
}

func (s *userService) lookup(ctx context.Context, username string) (*store.User, error) {
	u, err := s.st.GetUserByName(ctx, username)
	if errors.Is(err, store.ErrNotFound) {
		return nil, opErrorf(http.StatusNotFound, "no user %q", username)
	}
	return u, err
}

func validUsername(name string) error {
	if name == "" {
		return opErrorf(http.StatusBadRequest, "username is empty")
	}
	if err := auth.CheckUsername(name); err != nil {
		return opErrorf(http.StatusBadRequest, "invalid username %.64q: %v", name, err)
	}
	return nil
}

func normalizeScopes(list []string) ([]string, error) {
	if list == nil {
		return nil, nil
	}
	set, err := scope.New(list...)
	if err != nil {
		return nil, opErrorf(http.StatusBadRequest, "allowed_scopes: %v", err)
	}
	return append([]string{}, set...), nil // non-nil even when empty
}

// hashNew checks pw against the policy and hashes it.
func (s *userService) hashNew(ctx context.Context, pw string) (string, error) {
	if err := s.settings.Policy.Check(pw); err != nil {
		return "", opErrorf(http.StatusBadRequest, "password refused: %v", err)
	}
	release, err := s.settings.Limiter.Acquire(ctx)
	if err != nil {
		return "", opErrorf(http.StatusServiceUnavailable, "password hashing is busy, retry shortly")
	}
	defer release()
	return s.settings.Hasher.Hash(pw)
}

func (s *userService) add(ctx context.Context, req addUserRequest) (*store.User, error) {
	if err := validUsername(req.Username); err != nil {
		return nil, err
	}
	allowed, err := normalizeScopes(req.AllowedScopes)
	if err != nil {
		return nil, err
	}
	// Existence first, so that a taken name is reported as such whatever
	// the password.
	if _, err := s.st.GetUserByName(ctx, req.Username); err == nil {
		return nil, opErrorf(http.StatusConflict, "user %q already exists", req.Username)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	hash, err := s.hashNew(ctx, req.Password)
	if err != nil {
		return nil, err
	}
	u := &store.User{Username: req.Username, PasswordHash: hash, AllowedScopes: allowed, Disabled: req.Disabled}
	if err := s.st.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, opErrorf(http.StatusConflict, "user %q already exists", req.Username)
		}
		return nil, err
	}
	return u, nil
}

// passwd sets a new password and bumps token_version in one transaction.
func (s *userService) passwd(ctx context.Context, username, pw string) (*store.User, error) {
	u, err := s.lookup(ctx, username)
	if err != nil {
		return nil, err
	}
	hash, err := s.hashNew(ctx, pw)
	if err != nil {
		return nil, err
	}
	return s.mapNotFound(username)(store.SetPassword(ctx, s.st, u.ID, hash))
}

// userActions are the one-step changes; each returns the changed user.
var userActions = map[string]func(u *store.User) error{
	"revoke": func(u *store.User) error { u.TokenVersion++; return nil },
	// Disabling also bumps the epoch, so that enabling the user again does
	// not bring back tokens issued before (a stolen one among them).
	"disable": func(u *store.User) error { u.Disabled = true; u.TokenVersion++; return nil },
	"enable":  func(u *store.User) error { u.Disabled = false; return nil },
}

func (s *userService) change(ctx context.Context, username, action string) (*store.User, error) {
	fn, ok := userActions[action]
	if !ok {
		return nil, opErrorf(http.StatusNotFound, "unknown action %q", action)
	}
	u, err := s.lookup(ctx, username)
	if err != nil {
		return nil, err
	}
	return s.mapNotFound(username)(s.st.UpdateUser(ctx, u.ID, fn))
}

// setScopes replaces the user's allowed scopes; nil removes the limit.
func (s *userService) setScopes(ctx context.Context, username string, list []string) (*store.User, error) {
	allowed, err := normalizeScopes(list)
	if err != nil {
		return nil, err
	}
	u, err := s.lookup(ctx, username)
	if err != nil {
		return nil, err
	}
	return s.mapNotFound(username)(s.st.UpdateUser(ctx, u.ID, func(u *store.User) error {
		u.AllowedScopes = allowed
		return nil
	}))
}

func (s *userService) remove(ctx context.Context, username string) (*store.User, error) {
	u, err := s.lookup(ctx, username)
	if err != nil {
		return nil, err
	}
	if err := s.st.DeleteUser(ctx, u.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, opErrorf(http.StatusNotFound, "no user %q", username)
		}
		return nil, err
	}
	return u, nil
}

func (s *userService) list(ctx context.Context) ([]userView, error) {
	views := []userView{}
	err := s.st.ListUsers(ctx, func(u *store.User) error {
		views = append(views, viewOf(u))
		return nil
	})
	return views, err
}

// importUsers validates every record, then stores them all in one
// transaction: a bad record names its line and nothing is imported.
func (s *userService) importUsers(ctx context.Context, records []importRecord) (int, error) {
	users, err := validateImport(records, s.settings.Hasher)
	if err != nil {
		return 0, err
	}
	for i, u := range users {
		if _, err := s.st.GetUserByName(ctx, u.Username); err == nil {
			return 0, opErrorf(http.StatusConflict, "line %d: user %q already exists; nothing imported", records[i].Line, u.Username)
		} else if !errors.Is(err, store.ErrNotFound) {
			return 0, err
		}
	}
	if err := s.st.CreateUsers(ctx, users); err != nil {
		if errors.Is(err, store.ErrExists) {
			return 0, opErrorf(http.StatusConflict, "%v; nothing imported", err)
		}
		return 0, fmt.Errorf("import: %w; nothing imported", err)
	}
	return len(users), nil
}

// Backup formats: the portable export (the default), and the bbolt file
// snapshot of a bolt store.
const (
	backupExport = "export"
	backupBolt   = "bolt"
)

// maxRestoreBytes caps an export sent to the admin API to restore.
const maxRestoreBytes = 1 << 30

func (s *userService) backup(ctx context.Context, w io.Writer, format string) (int64, error) {
	switch format {
	case "", backupExport:
		cw := &countingWriter{w: w}
		err := store.Export(ctx, s.st, cw)
		return cw.n, err
	case backupBolt:
		fs, ok := s.st.(store.FileSnapshotter)
		if !ok {
			return 0, opErrorf(http.StatusBadRequest, "this store keeps no file to snapshot; back it up in the default format (export)")
		}
		return fs.SnapshotFile(ctx, w)
	default:
		return 0, opErrorf(http.StatusBadRequest, "unknown backup format %q: use export or bolt", format)
	}
}

// restore imports an export into the store (see store.ImportDump): all the
// users or none, and no secret that would replace another.
func (s *userService) restore(ctx context.Context, d *store.Dump) (store.ImportStats, error) {
	stats, err := store.ImportDump(ctx, s.st, d)
	switch {
	case err == nil:
		return stats, nil
	case errors.Is(err, store.ErrExists):
		return stats, opErrorf(http.StatusConflict, "%v: restore into an empty store, or one that holds none of these users", err)
	case errors.Is(err, store.ErrSecretConflict):
		return stats, opErrorf(http.StatusConflict, "%v", err)
	}
	return stats, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// mapNotFound turns a store.ErrNotFound from a write (the user was deleted
// between lookup and write) into the same message a lookup gives.
func (s *userService) mapNotFound(username string) func(*store.User, error) (*store.User, error) {
	return func(u *store.User, err error) (*store.User, error) {
		if errors.Is(err, store.ErrNotFound) {
			return nil, opErrorf(http.StatusNotFound, "no user %q", username)
		}
		return u, err
	}
}
