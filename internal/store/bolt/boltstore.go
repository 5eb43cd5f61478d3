// Package bolt implements store.Store on an embedded bbolt file.
//
// Layout (schema version 5), all buckets created once at Open:
//
//	users         id -> JSON of userRecord (see record.go)
//	auth          id -> the user's store.AuthState, its session IDs included,
//	              a compact binary record (see authrecord.go)
//	usernames     store.NormalizeUsername(name) -> id
//	deleted_ids   id -> RFC 3339 deletion time (tombstone: the ID is never handed out again)
//	hash_classes  password.Class of a stored hash -> RFC 3339 time it was first stored
//	sessions      user id 0x00 session id -> JSON of sessionRecord (see sessions.go)
//	meta          "schema_version" -> "5"; "secret:<name>" -> secret bytes;
//	              "signing_keys" -> JSON of keySetRecord (see keys.go), absent
//	              while the set is empty
//
// users and auth have the same keys, and every write that changes a user
// writes both in the same transaction; every write that adds or removes a
// session rewrites the user's auth record, whose sid list is the user's
// keys in sessions, in the same transaction too. AuthState reads only
// auth: a record of a few dozen bytes instead of the whole JSON user with
// its password hash and the JSON of its sessions, so a gateway serving many
// distinct users touches (and keeps resident) the auth bucket's pages, a
// small part of the file, instead of all of it. Check verifies that auth
// matches users and sessions.
//
// hash_classes holds the class of every password hash stored (see
// HashClasses): every write that stores a hash adds its class in the same
// transaction. It only ever grows, so it may name classes that no user
// holds any more; that is safe, it makes failed logins pad more, never less.
//
// Schema version 1 was version 2 without auth, version 2 was version 3
// without hash_classes, version 3 was version 4 without sessions, and
// version 4 is this one with auth records that list no sessions. Open
// upgrades such a file in place, in one transaction: it builds what is
// missing from users (a file without sessions starts with none), fills
// the sid lists of a version 4 file's auth records from its sessions
// bucket, and sets the version to 5. Builds that know only an older
// version refuse to open the upgraded file (they would write users without
// auth records or without their hash classes, delete users and leave their
// sessions, or add and remove sessions without updating the sid lists),
// and this one refuses versions it does not know.
//
// bbolt itself advises the kernel (madvise MADV_RANDOM) on every mapping it
// makes of the file, at Open and whenever it remaps to grow, so readahead
// does not pull neighbouring pages in on a miss; there is nothing left to
// do here for that.
//
// bbolt locks the file exclusively, so only one process (and, within a
// process, one Store) can have it open at a time; see Open.
package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

const (
	// DefaultTimeout is how long Open waits for the file lock when
	// Options.Timeout is zero.
	DefaultTimeout = 2 * time.Second
	// DefaultCacheSize is the AuthState cache bound when Options.CacheSize
	// is zero: the active users of a busy gateway fit, and the cache stays
	// around 10 MB (a miss costs one read transaction, a few µs).
	DefaultCacheSize = 25_000
	// DefaultBatchDelay is Options.BatchDelay's default. Callers whose
	// commit just finished come back within microseconds, so a short wait
	// gathers them all; what a longer one adds is latency, to every batch.
	// In BenchmarkUpdateSessionParallel (64 refreshers, a disk whose sync
	// takes 2-3 ms) 1 ms gave 5 to 20 times the throughput of no wait
	// (where each commit carries one or two writes), and more than 2 ms or
	// bbolt's own 10 ms at every -cpu tried. A lone refresh costs the sync
	// plus this.
	DefaultBatchDelay = time.Millisecond

	// schemaVersion is the layout described in the package comment.
	schemaVersion = "5"
	// schemaVersion1 is the layout before the auth bucket, schemaVersion2
	// the one before hash_classes, schemaVersion3 the one before sessions,
	// schemaVersion4 the one whose auth records list no sessions; Open
	// upgrades them all.
	schemaVersion1 = "1"
	schemaVersion2 = "2"
	schemaVersion3 = "3"
	schemaVersion4 = "4"
	// bulkFillPercent is how full CreateUsers packs the pages of users and
	// auth when a batch only appends keys after the last one stored (see
	// appendsOnly), and the upgrade packs auth. bbolt's default, 0.5,
	// leaves in-order inserts in half empty pages: for a million users
	// filled in ID order that is 1046 B of users pages and 123 B of auth
	// pages per user, against 460 B and 60 B at 1.0 (0.9: 518 B and 67 B).
	// 1.0 is what `bbolt compact` uses. A later write that grows a record
	// of a full page splits that page in two, as an insert into any page
	// does; auth records grow on a rename, a token version crossing 128,
	// 16384, ..., and a user's first session (and each further one).
	bulkFillPercent = 1.0
	// maxIDTries bounds the (astronomically unlikely) retries when NewID
	// collides with a live or deleted ID.
	maxIDTries = 8
)

var (
	bucketUsers     = []byte("users")
	bucketAuth      = []byte("auth")
	bucketUsernames = []byte("usernames")
	bucketDeleted   = []byte("deleted_ids")
	bucketMeta      = []byte("meta")
	bucketClasses   = []byte("hash_classes")
	bucketSessions  = []byte("sessions")

	keySchemaVersion = []byte("schema_version")
)

// secretPrefix namespaces secrets inside the meta bucket.
const secretPrefix = "secret:"

// errIDChanged is returned by UpdateUser when fn changed the user's ID.
var errIDChanged = errors.New("user id cannot be changed")

// Options configures Open. The zero value is ready to use.
type Options struct {
	// Timeout bounds how long Open waits for the exclusive file lock that
	// another process (or another open Store in this process) holds.
	// Default: DefaultTimeout (2s). Zero or negative means the default; bbolt's
	// "wait forever" is deliberately not offered.
	Timeout time.Duration

	// CacheSize bounds the number of users whose AuthState is kept in
	// memory; when it is full, the users seen least often make room.
	// Default: DefaultCacheSize (25000).
	// Negative disables the cache.
	CacheSize int

	// BatchDelay is how long a session write (UpdateSession: a refresh)
	// waits for others to share its commit, and so its disk sync. Longer
	// delays commit more writes at once under load and make a lone write
	// slower. Default: DefaultBatchDelay. Negative means no wait.
	BatchDelay time.Duration
}

// Store is a store.Store backed by one bbolt file. It is safe for
// concurrent use. Create it with Open.
type Store struct {
	db     *bolt.DB
	path   string
	closed atomic.Bool
	cache  authCache
	// keys is what SigningKeys serves, replaced (never modified) by
	// UpdateSigningKeys under keysMu.
	keys   atomic.Pointer[keysState]
	keysMu sync.Mutex
}

// ErrLocked is wrapped by Open's error when another process (or another
// open Store in this process) holds the file. It belongs to this backend:
// only a file has a lock that another process can hold.
var ErrLocked = errors.New("database is locked by another process")

// lockedError is returned by Open when the file lock cannot be taken in
// time. It unwraps to ErrLocked but carries its own message, which tells
// the operator what to do.
type lockedError struct{ path string }

func (e *lockedError) Error() string {
	return "file " + e.path + " is locked by another process, e.g. a running caddy holding it: " +
		"stop that process, or use `caddy crudauth` (which talks to a running caddy's admin api), " +
		"or choose another db path"
}

func (e *lockedError) Unwrap() error { return ErrLocked }

// Open opens (creating if needed) the bbolt database at path. The parent
// directory is created with mode 0700 and a new file with mode 0600; the mode
// of an existing file is left alone.
//
// When another process holds the file, Open gives up after opts.Timeout with
// an error that wraps ErrLocked. Within one process, share a single
// Store per file (for example through a caddy.UsagePool): a second Open of the
// same path also waits for the lock and fails.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("database path is empty")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve database path %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}

	bopts := *bolt.DefaultOptions
	bopts.Timeout = opts.Timeout
	if bopts.Timeout <= 0 {
		bopts.Timeout = DefaultTimeout
	}
	db, err := bolt.Open(abs, 0o600, &bopts)
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, &lockedError{path: abs}
		}
		return nil, fmt.Errorf("open database %s: %w", abs, err)
	}

	err = db.Update(initialize)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialize database %s: %w", abs, err)
	}

	size := opts.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	switch {
	case opts.BatchDelay == 0:
		db.MaxBatchDelay = DefaultBatchDelay
	case opts.BatchDelay < 0:
		db.MaxBatchDelay = 0
	default:
		db.MaxBatchDelay = opts.BatchDelay
	}
	s := &Store{db: db, path: abs}
	s.cache.init(size)
	if err := s.loadKeys(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("read signing keys of %s: %w", abs, err)
	}
	return s, nil
}

// initialize creates the buckets of a new file and upgrades a schema 1
// file, in Open's transaction: an error (a version this build does not
// know, a user that does not decode) leaves the file as it was.
func initialize(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketUsers, bucketUsernames, bucketDeleted, bucketMeta} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	switch v := string(meta.Get(keySchemaVersion)); {
	case v == schemaVersion:
		for _, name := range [][]byte{bucketAuth, bucketClasses, bucketSessions} {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("schema version %s file has no %s bucket", schemaVersion, name)
			}
		}
		return nil
	case v == schemaVersion4:
		for _, name := range [][]byte{bucketAuth, bucketClasses, bucketSessions} {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("schema version %s file has no %s bucket", v, name)
			}
		}
		if err := fillAuthSessions(tx); err != nil {
			return fmt.Errorf("upgrade to schema version %s: %w", schemaVersion, err)
		}
		return meta.Put(keySchemaVersion, []byte(schemaVersion))
	case meta.Get(keySchemaVersion) == nil, v == schemaVersion1, v == schemaVersion2, v == schemaVersion3:
		// A new file, or one written before the auth, hash_classes or
		// sessions bucket.
		if v == "" || v == schemaVersion1 {
			if err := buildAuth(tx); err != nil {
				return fmt.Errorf("upgrade to schema version %s: %w", schemaVersion, err)
			}
		} else if tx.Bucket(bucketAuth) == nil {
			return fmt.Errorf("schema version %s file has no %s bucket", v, bucketAuth)
		}
		if v != schemaVersion3 {
			if err := buildClasses(tx); err != nil {
				return fmt.Errorf("upgrade to schema version %s: %w", schemaVersion, err)
			}
		} else if tx.Bucket(bucketClasses) == nil {
			return fmt.Errorf("schema version %s file has no %s bucket", v, bucketClasses)
		}
		// No build before this one wrote sessions: a leftover bucket
		// would be somebody else's.
		if tx.Bucket(bucketSessions) != nil {
			return fmt.Errorf("schema version %q file already has a %s bucket", v, bucketSessions)
		}
		if _, err := tx.CreateBucket(bucketSessions); err != nil {
			return fmt.Errorf("create bucket %s: %w", bucketSessions, err)
		}
		return meta.Put(keySchemaVersion, []byte(schemaVersion))
	default:
		return fmt.Errorf("unsupported schema version %q (this build understands %q and upgrades %q, %q, %q and %q)",
			v, schemaVersion, schemaVersion1, schemaVersion2, schemaVersion3, schemaVersion4)
	}
}

// buildClasses (re)creates the hash_classes bucket from the users bucket.
func buildClasses(tx *bolt.Tx) error {
	if tx.Bucket(bucketClasses) != nil {
		if err := tx.DeleteBucket(bucketClasses); err != nil {
			return fmt.Errorf("drop bucket %s: %w", bucketClasses, err)
		}
	}
	if _, err := tx.CreateBucket(bucketClasses); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketClasses, err)
	}
	now := time.Now().UTC()
	return tx.Bucket(bucketUsers).ForEach(func(id, data []byte) error {
		var f struct {
			PasswordHash string `json:"password_hash"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			return fmt.Errorf("decode user %s: %w", id, err)
		}
		return addClass(tx, f.PasswordHash, now)
	})
}

// addClass records the class of hash in hash_classes, in the transaction
// that stores hash: the set is never behind what the users bucket holds.
// Something that is not a hash (see password.Class) has no class: Verify
// refuses it without hashing, and the login pads as for an unknown user.
func addClass(tx *bolt.Tx, hash string, now time.Time) error {
	class := password.Class(hash)
	if class == "" {
		return nil
	}
	b := tx.Bucket(bucketClasses)
	if b.Get([]byte(class)) != nil {
		return nil
	}
	return b.Put([]byte(class), []byte(now.Format(time.RFC3339)))
}

// buildAuth (re)creates the auth bucket from the users bucket.
func buildAuth(tx *bolt.Tx) error {
	if tx.Bucket(bucketAuth) != nil {
		if err := tx.DeleteBucket(bucketAuth); err != nil {
			return fmt.Errorf("drop bucket %s: %w", bucketAuth, err)
		}
	}
	auth, err := tx.CreateBucket(bucketAuth)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketAuth, err)
	}
	// ForEach visits the IDs in order and auth starts empty: every Put
	// appends, so the pages can be packed.
	auth.FillPercent = bulkFillPercent
	var buf []byte
	return tx.Bucket(bucketUsers).ForEach(func(id, data []byte) error {
		var f authFields
		if err := json.Unmarshal(data, &f); err != nil {
			return fmt.Errorf("decode user %s: %w", id, err)
		}
		var rec []byte
		buf, rec = appendRecord(buf, store.AuthState{
			Username:      f.Username,
			TokenVersion:  f.TokenVersion,
			Disabled:      f.Disabled,
			AllowedScopes: f.AllowedScopes,
		})
		// id points into the mmap, valid for the whole transaction, which
		// is as long as bbolt holds on to a key.
		return auth.Put(id, rec)
	})
}

// appendRecord appends the auth record of st to buf and returns buf and the
// record, a slice of buf capped at its end. bbolt keeps the value slices
// of Put until the transaction ends, so records must not be overwritten:
// later appends only ever write past a record's end (or into a new array),
// so one buffer serves a whole transaction with few allocations. When the
// room left is short, a new chunk is started (the old one lives on through
// the records cut from it) rather than letting append copy them; chunks
// grow from 64 bytes, so that a single record costs little, to 4 KB.
func appendRecord(buf []byte, st store.AuthState) ([]byte, []byte) {
	if cap(buf)-len(buf) < 64 {
		buf = make([]byte, 0, min(4096, max(64, 2*cap(buf))))
	}
	start := len(buf)
	buf = appendAuthRecord(buf, st)
	return buf, buf[start:len(buf):len(buf)]
}

// appendsOnly reports whether the users of us all have IDs that ascend
// strictly and sort after every key in the buckets bs (a bulk import in ID
// order): then each Put appends at the right edge of the B+tree, no page
// this transaction fills is inserted into again by it, and the pages can be
// packed full. A later transaction that inserts into (or grows a record
// of) a packed page splits it in two, as it would split any full page:
// pages that take random inserts later end up about as full as without
// packing, and the others stay packed. Batches with generated (random) IDs
// keep the default.
func appendsOnly(us []store.User, bs ...*bolt.Bucket) bool {
	if len(us) == 0 {
		return false
	}
	prev := ""
	for i := range us {
		id := us[i].ID
		if id == "" || (i > 0 && id <= prev) {
			return false
		}
		prev = id
	}
	for _, b := range bs {
		if last, _ := b.Cursor().Last(); last != nil && string(last) >= us[0].ID {
			return false
		}
	}
	return true
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database file and drops the cache. Every later call,
// including AuthState for cached users, fails with store.ErrClosed; a second
// Close is a no-op that returns nil. Close waits for running transactions.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	err := s.db.Close()
	s.cache.clear()
	// Drop the private keys with the rest of the cache.
	s.keys.Store(&keysState{err: store.ErrClosed})
	if err != nil {
		return fmt.Errorf("close database %s: %w", s.path, err)
	}
	return nil
}

// view runs fn in a read-only transaction. Errors from fn are returned
// unchanged; a store closed underneath yields store.ErrClosed.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return mapErr(s.db.View(fn))
}

// update runs fn in a read-write transaction, like view.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return mapErr(s.db.Update(fn))
}

// mapErr turns bbolt's "closed" error, which a call racing Close can get
// after passing the closed check, into store.ErrClosed.
func mapErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return err
}

// CreateUser implements store.Store. The username must be non-empty. u is
// updated only on success.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	return s.CreateUsers(ctx, []*store.User{u})
}

// CreateUsers implements store.Store: every user is put in one read-write
// transaction, so a failure on any of them leaves the database as it was.
// The elements of us are updated only on success.
func (s *Store) CreateUsers(ctx context.Context, us []*store.User) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now().UTC()
	prepared := make([]store.User, len(us))
	for i, u := range us {
		if u == nil {
			return errors.New("user is nil")
		}
		if u.Username == "" {
			return errors.New("username is empty")
		}
		nu := *u
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

	err := s.update(func(tx *bolt.Tx) error {
		users, names, deleted := tx.Bucket(bucketUsers), tx.Bucket(bucketUsernames), tx.Bucket(bucketDeleted)
		auth := tx.Bucket(bucketAuth)
		// FillPercent belongs to this transaction's Bucket values: it
		// only decides how the pages this transaction writes are split.
		if appendsOnly(prepared, users, auth) {
			users.FillPercent, auth.FillPercent = bulkFillPercent, bulkFillPercent
		}
		var buf []byte
		for i := range prepared {
			nu := &prepared[i]
			norm := []byte(store.NormalizeUsername(nu.Username))
			// The index is written as each user goes in, so a name
			// repeated within us is caught here too.
			if names.Get(norm) != nil {
				return fmt.Errorf("username %q: %w", nu.Username, store.ErrExists)
			}
			if nu.ID == "" {
				for try := 0; ; try++ {
					if try == maxIDTries {
						return errors.New("could not generate an unused user id")
					}
					id := store.NewID()
					if users.Get([]byte(id)) == nil && deleted.Get([]byte(id)) == nil {
						nu.ID = id
						break
					}
				}
			} else if users.Get([]byte(nu.ID)) != nil || deleted.Get([]byte(nu.ID)) != nil {
				return fmt.Errorf("user id %s is or was in use: %w", nu.ID, store.ErrExists)
			}
			data, err := encodeUser(nu)
			if err != nil {
				return fmt.Errorf("encode user: %w", err)
			}
			if err := users.Put([]byte(nu.ID), data); err != nil {
				return err
			}
			var rec []byte
			buf, rec = appendRecord(buf, nu.State())
			if err := auth.Put([]byte(nu.ID), rec); err != nil {
				return err
			}
			if err := names.Put(norm, []byte(nu.ID)); err != nil {
				return err
			}
			if err := addClass(tx, nu.PasswordHash, now); err != nil {
				return err
			}
		}
		return nil
	})
	for i := range prepared {
		if prepared[i].ID != "" {
			// Nothing can be cached for a new ID (negative results are not
			// cached), but every write path invalidates, so that stays true
			// if that ever changes.
			s.cache.invalidate(prepared[i].ID)
		}
	}
	if err != nil {
		return err
	}
	for i, u := range us {
		*u = prepared[i]
	}
	return nil
}

// GetUser implements store.Store. The returned user is the caller's own copy.
func (s *Store) GetUser(ctx context.Context, id string) (*store.User, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var u *store.User
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		u, err = getUser(tx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

// GetUserByName implements store.Store. The returned user is the caller's
// own copy.
func (s *Store) GetUserByName(ctx context.Context, username string) (*store.User, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var u *store.User
	err := s.view(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketUsernames).Get([]byte(store.NormalizeUsername(username)))
		if id == nil {
			return store.ErrNotFound
		}
		var err error
		u, err = getUser(tx, string(id))
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("username index for %q points to missing user %s", username, id)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

// getUser decodes the user with the given ID. Decoding copies everything
// out of the mmap, so the result outlives tx.
func getUser(tx *bolt.Tx, id string) (*store.User, error) {
	if id == "" {
		return nil, store.ErrNotFound
	}
	data := tx.Bucket(bucketUsers).Get([]byte(id))
	if data == nil {
		return nil, store.ErrNotFound
	}
	u, err := decodeUser(data)
	if err != nil {
		return nil, fmt.Errorf("decode user %s: %w", id, err)
	}
	return u, nil
}

// UpdateUser implements store.Store. fn runs inside the write transaction
// on a decoded copy and must not call back into the store. An error from
// fn is returned unchanged and nothing is written.
func (s *Store) UpdateUser(ctx context.Context, id string, fn func(u *store.User) error) (*store.User, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var u *store.User
	err := s.update(func(tx *bolt.Tx) error {
		var err error
		if u, err = getUser(tx, id); err != nil {
			return err
		}
		oldNorm := store.NormalizeUsername(u.Username)
		if err := fn(u); err != nil {
			return err
		}
		if u.ID != id {
			return errIDChanged
		}
		if u.Username == "" {
			return errors.New("username is empty")
		}
		u.UpdatedAt = time.Now().UTC()

		names := tx.Bucket(bucketUsernames)
		if newNorm := store.NormalizeUsername(u.Username); newNorm != oldNorm {
			if owner := names.Get([]byte(newNorm)); owner != nil && string(owner) != id {
				return fmt.Errorf("username %q: %w", u.Username, store.ErrExists)
			}
			if err := names.Delete([]byte(oldNorm)); err != nil {
				return err
			}
			if err := names.Put([]byte(newNorm), []byte(id)); err != nil {
				return err
			}
		}
		data, err := encodeUser(u)
		if err != nil {
			return fmt.Errorf("encode user: %w", err)
		}
		if err := tx.Bucket(bucketUsers).Put([]byte(id), data); err != nil {
			return err
		}
		if err := addClass(tx, u.PasswordHash, u.UpdatedAt); err != nil {
			return err
		}
		// Most updates that are not revocations (a password change bumps
		// the version) leave the auth record as it is: then its page is
		// not rewritten. The sid list is taken from the sessions bucket,
		// which it mirrors, rather than from the old record, so that a
		// damaged record is rebuilt whole.
		auth := tx.Bucket(bucketAuth)
		st := u.State()
		st.Sessions = sessionIDs(tx, id)
		if rec := appendAuthRecord(nil, st); !bytes.Equal(auth.Get([]byte(id)), rec) {
			return auth.Put([]byte(id), rec)
		}
		return nil
	})
	// After the commit and before returning: from here on AuthState reads
	// the new state. Invalidating on failure too is harmless.
	s.cache.invalidate(id)
	if err != nil {
		return nil, err
	}
	return u, nil
}

// DeleteUser implements store.Store. The ID is kept as a tombstone in
// deleted_ids so that CreateUser never accepts it again.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.update(func(tx *bolt.Tx) error {
		u, err := getUser(tx, id)
		if err != nil {
			return err
		}
		names := tx.Bucket(bucketUsernames)
		norm := []byte(store.NormalizeUsername(u.Username))
		if owner := names.Get(norm); owner != nil && string(owner) == id {
			if err := names.Delete(norm); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketUsers).Delete([]byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAuth).Delete([]byte(id)); err != nil {
			return err
		}
		if _, err := deleteSessions(tx, id); err != nil {
			return err
		}
		stamp := time.Now().UTC().Format(time.RFC3339Nano)
		return tx.Bucket(bucketDeleted).Put([]byte(id), []byte(stamp))
	})
	s.cache.invalidate(id)
	return err
}

// ListUsers implements store.Store. It walks the usernames index in key
// order inside one read transaction, so fn must not call back into the
// store: a write (and even a read, when a writer is waiting to grow the
// file) would deadlock. Each user passed to fn is its own copy.
func (s *Store) ListUsers(ctx context.Context, fn func(u *store.User) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketUsernames).Cursor()
		for k, id := c.First(); k != nil; k, id = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			u, err := getUser(tx, string(id))
			if err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("username index for %q points to missing user %s", k, id)
				}
				return err
			}
			if err := fn(u); err != nil {
				return err
			}
		}
		return nil
	})
}

// authFields is the subset of a stored user that the auth record holds;
// the upgrade from schema version 1 decodes users into it.
type authFields struct {
	Username      string   `json:"username"`
	Disabled      bool     `json:"disabled"`
	AllowedScopes []string `json:"allowed_scopes"`
	TokenVersion  uint64   `json:"token_version"`
}

// AuthState implements store.Store. It is served from an in-memory cache
// that every write invalidates before returning; a miss reads the user's
// record in the auth bucket, sid list included, and nothing else. The
// AllowedScopes and Sessions slices of the result are shared with the
// cache and other callers: they must not be modified.
func (s *Store) AuthState(ctx context.Context, id string) (store.AuthState, error) {
	if s.closed.Load() {
		return store.AuthState{}, store.ErrClosed
	}
	if st, ok := s.cache.get(id); ok {
		return st, nil
	}
	if err := ctx.Err(); err != nil {
		return store.AuthState{}, err
	}
	if id == "" {
		return store.AuthState{}, store.ErrNotFound
	}
	// Record the generation before reading: if any write finishes its
	// invalidation while we read, what we read may be stale and is not
	// cached.
	gen := s.cache.generation()
	var st store.AuthState
	err := s.view(func(tx *bolt.Tx) error {
		// A user without an auth record is corruption that Check reports;
		// here it reads as not found, like a user that does not exist.
		data := tx.Bucket(bucketAuth).Get([]byte(id))
		if data == nil {
			return store.ErrNotFound
		}
		var err error
		if st, err = decodeAuthRecord(data); err != nil {
			return fmt.Errorf("decode auth record of user %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return store.AuthState{}, err
	}
	s.cache.fill(id, gen, st)
	return st, nil
}

// HashClasses implements store.Store: the keys of hash_classes, in order.
func (s *Store) HashClasses(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []string
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketClasses).ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Secret implements store.Store. name must be non-empty; generate must
// return a non-empty value. The secret lives in the meta bucket under
// "secret:<name>". The returned slice is the caller's own copy.
func (s *Store) Secret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error) {
	if name == "" {
		return nil, errors.New("secret name is empty")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	key := []byte(secretPrefix + name)
	var out []byte
	// Fast path: it almost always exists already.
	err := s.view(func(tx *bolt.Tx) error {
		out = bytes.Clone(tx.Bucket(bucketMeta).Get(key))
		return nil
	})
	if err != nil || out != nil {
		return out, err
	}
	// Check again inside the write transaction: concurrent callers are
	// serialized there, so only the first one generates.
	err = s.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(key); v != nil {
			out = bytes.Clone(v)
			return nil
		}
		v, err := store.NewSecret(name, generate)
		if err != nil {
			return err
		}
		out = v
		return meta.Put(key, bytes.Clone(v))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Secrets implements store.Store: every "secret:<name>" of the meta bucket.
func (s *Store) Secrets(ctx context.Context) (map[string][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMeta).Cursor()
		prefix := []byte(secretPrefix)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			out[string(k[len(prefix):])] = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SnapshotFile implements store.FileSnapshotter: it writes a consistent
// copy of the file (a valid bbolt database) from one read transaction, so
// writers are not blocked.
func (s *Store) SnapshotFile(ctx context.Context, w io.Writer) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var n int64
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("snapshot: %w", err)
	}
	return n, nil
}

// Check verifies the file: bbolt's page-level consistency check, then this
// package's invariants (every user decodes and is indexed under its
// normalized username, every index entry points to its user, no live ID is
// tombstoned, auth has a record for exactly the users and each equals its
// user's State() with the user's keys in sessions as its sid list,
// hash_classes holds the class of every user's hash, every session decodes,
// is stored under its own user and ID, and belongs to a live user, the
// signing keys decode and form a valid set). It returns the first problem
// found, or nil.
func (s *Store) Check() error {
	return s.view(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // drain: the checker goroutine sends until done
			if first == nil {
				first = err
			}
		}
		if first != nil {
			return fmt.Errorf("bbolt check: %w", first)
		}
		users, names, deleted := tx.Bucket(bucketUsers), tx.Bucket(bucketUsernames), tx.Bucket(bucketDeleted)
		auth, classes := tx.Bucket(bucketAuth), tx.Bucket(bucketClasses)
		if auth == nil {
			return fmt.Errorf("bucket %s is missing", bucketAuth)
		}
		if classes == nil {
			return fmt.Errorf("bucket %s is missing", bucketClasses)
		}
		ks, err := decodeKeySet(tx.Bucket(bucketMeta).Get(keySigningKeys))
		if err != nil {
			return err
		}
		if err := store.CheckKeySetChange(&store.KeySet{}, ks); err != nil {
			return err
		}
		// Sessions first: the users' sid lists are compared with keys
		// known to be well formed.
		if err := checkSessions(tx); err != nil {
			return err
		}
		err = users.ForEach(func(id, data []byte) error {
			u, err := decodeUser(data)
			if err != nil {
				return fmt.Errorf("decode user %s: %w", id, err)
			}
			if u.ID != string(id) {
				return fmt.Errorf("user stored under %s has id %q", id, u.ID)
			}
			if owner := names.Get([]byte(store.NormalizeUsername(u.Username))); string(owner) != u.ID {
				return fmt.Errorf("user %s (%q) is not in the username index", id, u.Username)
			}
			if deleted.Get(id) != nil {
				return fmt.Errorf("user %s is both live and deleted", id)
			}
			rec := auth.Get(id)
			if rec == nil {
				return fmt.Errorf("user %s has no auth record", id)
			}
			st, err := decodeAuthRecord(rec)
			if err != nil {
				return fmt.Errorf("decode auth record of user %s: %w", id, err)
			}
			want := u.State()
			want.Sessions = sessionIDs(tx, u.ID)
			if !slices.Equal(st.Sessions, want.Sessions) {
				return fmt.Errorf("auth record of user %s lists sessions %q, the sessions bucket holds %q", id, st.Sessions, want.Sessions)
			}
			if !sameAuthState(st, want) {
				return fmt.Errorf("auth record of user %s is %+v, the user says %+v", id, st, want)
			}
			if c := password.Class(u.PasswordHash); c != "" && classes.Get([]byte(c)) == nil {
				return fmt.Errorf("hash class %s of user %s is not in %s", c, id, bucketClasses)
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = auth.ForEach(func(id, _ []byte) error {
			if users.Get(id) == nil {
				return fmt.Errorf("auth record %s has no user", id)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return names.ForEach(func(name, id []byte) error {
			if users.Get(id) == nil {
				return fmt.Errorf("username index for %q points to missing user %s", name, id)
			}
			return nil
		})
	})
}

// Interface guard.
var _ store.Store = (*Store)(nil)
