package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// Sessions live in their own bucket under userID 0x00 sid, so that a
// user's sessions are one prefix scan (ListSessions, the removals of
// CreateSession, DeleteSessions and DeleteUser) and one session is one Get.
// Neither IDs nor sids may hold a 0x00 byte, so keys of different users
// never mix.
//
// AuthState lists a user's sids, and a cache miss reads them from the
// user's auth record, not from this bucket: a prefix scan here reads the
// leaf pages that hold the sessions' JSON, hundreds of bytes each, and
// with many distinct users each miss would page in a different one. So
// every write that adds or removes a session rewrites the auth record's
// sid list from the user's keys here (syncAuthSessions) in its
// transaction, and invalidates the user's cache entry after its commit, as
// user writes do. UpdateSession (a refresh) changes no sid, so it touches
// neither the auth record nor the cache; it goes through bbolt's Batch, so
// that concurrent refreshes share a commit and its disk sync.

// errSessionIDChanged is returned by UpdateSession when fn changed the
// session's ID or user.
var errSessionIDChanged = errors.New("session id and user id cannot be changed")

// sessionPrefix returns userID 0x00: the start of every key of the user's
// sessions.
func sessionPrefix(userID string) []byte {
	return append([]byte(userID), 0)
}

// sessionKey returns the key of the user's session sid, or nil when either
// cannot name a session (empty, or holding the separator).
func sessionKey(userID, sid string) []byte {
	if userID == "" || sid == "" || strings.IndexByte(userID, 0) >= 0 || strings.IndexByte(sid, 0) >= 0 {
		return nil
	}
	return append(sessionPrefix(userID), sid...)
}

// forSessions calls fn with the key and value of each of the user's
// sessions, in sid order. The slices point into the mmap (or a write
// transaction's pages): valid only inside tx, and not across a change of
// the bucket.
func forSessions(tx *bolt.Tx, userID string, fn func(k, v []byte) error) error {
	prefix := sessionPrefix(userID)
	c := tx.Bucket(bucketSessions).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// sessionIDs returns the user's sids, sorted (the key order); nil when
// there are none.
func sessionIDs(tx *bolt.Tx, userID string) []string {
	var ids []string
	n := len(userID) + 1
	_ = forSessions(tx, userID, func(k, _ []byte) error {
		ids = append(ids, string(k[n:]))
		return nil
	})
	return ids
}

// userSessions decodes every session of the user.
func userSessions(tx *bolt.Tx, userID string) ([]*store.Session, error) {
	var out []*store.Session
	err := forSessions(tx, userID, func(k, v []byte) error {
		s, err := decodeSession(v)
		if err != nil {
			return fmt.Errorf("decode session %q: %w", k, err)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// deleteSessions removes every session of the user and returns how many.
func deleteSessions(tx *bolt.Tx, userID string) (int, error) {
	var keys [][]byte
	if err := forSessions(tx, userID, func(k, _ []byte) error {
		keys = append(keys, bytes.Clone(k))
		return nil
	}); err != nil {
		return 0, err
	}
	b := tx.Bucket(bucketSessions)
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// syncAuthSessions sets the sid list of the user's auth record to the
// user's keys in the sessions bucket, in the write transaction that added
// or removed some. A user without an auth record is left alone (Check
// reports any session of theirs). The record is rewritten only when the
// list changed.
func syncAuthSessions(tx *bolt.Tx, userID string) error {
	auth := tx.Bucket(bucketAuth)
	old := auth.Get([]byte(userID))
	if old == nil {
		return nil
	}
	st, err := decodeAuthRecord(old)
	if err != nil {
		return fmt.Errorf("decode auth record of user %s: %w", userID, err)
	}
	st.Sessions = sessionIDs(tx, userID)
	rec := appendAuthRecord(nil, st)
	if bytes.Equal(rec, old) {
		return nil
	}
	return auth.Put([]byte(userID), rec)
}

// fillAuthSessions is the upgrade from schema version 4, whose auth records
// list no sessions: it sets the sid list of every user with sessions. The
// sessions bucket's keys come grouped by user, each user's in sid order,
// and the users in the auth bucket's order (the separator 0x00 sorts
// before every byte of an ID), so the records are rewritten in key order
// and their pages can be packed.
func fillAuthSessions(tx *bolt.Tx) error {
	auth := tx.Bucket(bucketAuth)
	auth.FillPercent = bulkFillPercent
	var (
		user string
		sids []string
		buf  []byte
	)
	flush := func() error {
		if sids == nil {
			return nil
		}
		old := auth.Get([]byte(user))
		if old == nil {
			return fmt.Errorf("session %s belongs to missing user %s", sids[0], user)
		}
		st, err := decodeAuthRecord(old)
		if err != nil {
			return fmt.Errorf("decode auth record of user %s: %w", user, err)
		}
		if st.Sessions != nil {
			return fmt.Errorf("auth record of user %s already lists sessions", user)
		}
		st.Sessions = sids
		var rec []byte
		buf, rec = appendRecord(buf, st)
		sids = nil
		return auth.Put([]byte(user), rec)
	}
	c := tx.Bucket(bucketSessions).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		i := bytes.IndexByte(k, 0)
		if i <= 0 || i == len(k)-1 || bytes.IndexByte(k[i+1:], 0) >= 0 {
			return fmt.Errorf("session key %q is not user id 0x00 session id", k)
		}
		if uid := string(k[:i]); uid != user {
			if err := flush(); err != nil {
				return err
			}
			user = uid
		}
		sids = append(sids, string(k[i+1:]))
	}
	return flush()
}

// userExists reports whether the user has an auth record: the cheapest
// sign of a live user.
func userExists(tx *bolt.Tx, userID string) bool {
	return userID != "" && tx.Bucket(bucketAuth).Get([]byte(userID)) != nil
}

// CreateSession implements store.Store. sess is updated only on success.
func (s *Store) CreateSession(ctx context.Context, sess *store.Session, max int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	ns, err := store.PrepareSession(sess, now)
	if err != nil {
		return nil, err
	}
	if strings.IndexByte(ns.UserID, 0) >= 0 || strings.IndexByte(ns.ID, 0) >= 0 {
		return nil, errors.New("session id or user id holds a 0x00 byte")
	}
	var removed []string
	err = s.update(func(tx *bolt.Tx) error {
		removed = nil
		if !userExists(tx, ns.UserID) {
			return store.ErrNotFound
		}
		b := tx.Bucket(bucketSessions)
		if ns.ID == "" {
			for try := 0; ; try++ {
				if try == maxIDTries {
					return errors.New("could not generate an unused session id")
				}
				if id := store.NewSessionID(); b.Get(sessionKey(ns.UserID, id)) == nil {
					ns.ID = id
					break
				}
			}
		} else if b.Get(sessionKey(ns.UserID, ns.ID)) != nil {
			return fmt.Errorf("session %s of user %s exists", ns.ID, ns.UserID)
		}
		others, err := userSessions(tx, ns.UserID)
		if err != nil {
			return err
		}
		removed = store.SessionsToEnd(others, ns.CreatedAt, max)
		for _, sid := range removed {
			if err := b.Delete(sessionKey(ns.UserID, sid)); err != nil {
				return err
			}
		}
		data, err := encodeSession(ns)
		if err != nil {
			return fmt.Errorf("encode session: %w", err)
		}
		if err := b.Put(sessionKey(ns.UserID, ns.ID), data); err != nil {
			return err
		}
		return syncAuthSessions(tx, ns.UserID)
	})
	// After the commit and before returning: from here on AuthState lists
	// the new session (and not the removed ones).
	s.cache.invalidate(ns.UserID)
	if err != nil {
		return nil, err
	}
	*sess = *ns
	return removed, nil
}

// GetSession implements store.Store.
func (s *Store) GetSession(ctx context.Context, userID, sid string) (*store.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out *store.Session
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		out, err = getSession(tx, userID, sid)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func getSession(tx *bolt.Tx, userID, sid string) (*store.Session, error) {
	key := sessionKey(userID, sid)
	if key == nil {
		return nil, store.ErrSessionNotFound
	}
	data := tx.Bucket(bucketSessions).Get(key)
	if data == nil {
		return nil, store.ErrSessionNotFound
	}
	out, err := decodeSession(data)
	if err != nil {
		return nil, fmt.Errorf("decode session %s of user %s: %w", sid, userID, err)
	}
	return out, nil
}

// UpdateSession implements store.Store. It runs in bbolt's Batch: the
// writes of concurrent callers are committed in one transaction, after
// waiting up to Options.BatchDelay for company. fn runs inside that
// transaction and must not call back into the store; it sees the writes
// of the calls batched before it, so a compare-and-increment of
// Generation has exactly one winner. Errors of the call (fn's, not
// found) are kept out of the batch, so that they do not make bbolt rerun
// the others' functions; bbolt still reruns fn when the commit itself
// fails, which the contract allows. The AuthState cache is left alone: no
// sid comes or goes.
func (s *Store) UpdateSession(ctx context.Context, userID, sid string, fn func(s *store.Session) error) (*store.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	var (
		out    *store.Session
		result error
	)
	// fn runs first in a read transaction: when it wants no write (a
	// refresh without rotation, a spent token within its grace, a
	// refusal) no write transaction is opened, and so no commit and disk
	// sync are spent on it. Only a wanted write goes to the batch, where
	// fn runs again on the then current session (the contract allows it).
	err := mapErr(s.db.View(func(tx *bolt.Tx) error {
		cur, err := getSession(tx, userID, sid)
		if err != nil {
			result = err
			if errors.Is(err, store.ErrSessionNotFound) {
				return nil
			}
			return err
		}
		if err := fn(cur); errors.Is(err, store.ErrSkipWrite) {
			out = cur
		} else if err != nil {
			result = err
		}
		return nil
	}))
	if err != nil {
		return nil, err
	}
	if result != nil || out != nil {
		return out, result
	}
	err = mapErr(s.db.Batch(func(tx *bolt.Tx) error {
		out, result = nil, nil
		cur, err := getSession(tx, userID, sid)
		if err != nil {
			result = err
			if errors.Is(err, store.ErrSessionNotFound) {
				return nil
			}
			return err // a record that does not decode: fail like a read
		}
		if err := fn(cur); errors.Is(err, store.ErrSkipWrite) {
			out = cur
			return nil
		} else if err != nil {
			result = err
			return nil
		}
		if cur.ID != sid || cur.UserID != userID {
			result = errSessionIDChanged
			return nil
		}
		data, err := encodeSession(cur)
		if err != nil {
			result = fmt.Errorf("encode session: %w", err)
			return nil
		}
		if err := tx.Bucket(bucketSessions).Put(sessionKey(userID, sid), data); err != nil {
			return err
		}
		out = cur
		return nil
	}))
	if err == nil {
		err = result
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteSession implements store.Store.
func (s *Store) DeleteSession(ctx context.Context, userID, sid string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key := sessionKey(userID, sid)
	if key == nil {
		return store.ErrSessionNotFound
	}
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		if b.Get(key) == nil {
			return store.ErrSessionNotFound
		}
		if err := b.Delete(key); err != nil {
			return err
		}
		return syncAuthSessions(tx, userID)
	})
	s.cache.invalidate(userID)
	return err
}

// DeleteSessions implements store.Store.
func (s *Store) DeleteSessions(ctx context.Context, userID string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		if !userExists(tx, userID) {
			return store.ErrNotFound
		}
		var err error
		if n, err = deleteSessions(tx, userID); err != nil || n == 0 {
			return err
		}
		return syncAuthSessions(tx, userID)
	})
	s.cache.invalidate(userID)
	if err != nil {
		return 0, err
	}
	return n, nil
}

// ListSessions implements store.Store.
func (s *Store) ListSessions(ctx context.Context, userID string, now time.Time) ([]*store.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var all []*store.Session
	err := s.view(func(tx *bolt.Tx) error {
		if !userExists(tx, userID) {
			return store.ErrNotFound
		}
		var err error
		all, err = userSessions(tx, userID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return store.LiveSessions(all, now), nil
}

// SweepSessions implements store.Store. It decodes every session in one
// write transaction: it is meant to run now and then, not per request.
func (s *Store) SweepSessions(ctx context.Context, now time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var users []string
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		users, n = nil, 0
		b := tx.Bucket(bucketSessions)
		var expired [][]byte
		err := b.ForEach(func(k, v []byte) error {
			x, err := decodeSession(v)
			if err != nil {
				return fmt.Errorf("decode session %q: %w", k, err)
			}
			if store.SessionExpired(x, now) {
				expired = append(expired, bytes.Clone(k))
				// Keys come grouped by user: a user differs from the
				// previous one or is new.
				if uid := string(k[:bytes.IndexByte(k, 0)]); len(users) == 0 || users[len(users)-1] != uid {
					users = append(users, uid)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Deleting while a cursor walks the bucket would skip keys.
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		for _, id := range users {
			if err := syncAuthSessions(tx, id); err != nil {
				return err
			}
		}
		n = len(expired)
		return nil
	})
	for _, id := range users {
		s.cache.invalidate(id)
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// checkSessions is Check's part for the sessions bucket.
func checkSessions(tx *bolt.Tx) error {
	b := tx.Bucket(bucketSessions)
	if b == nil {
		return fmt.Errorf("bucket %s is missing", bucketSessions)
	}
	return b.ForEach(func(k, v []byte) error {
		i := bytes.IndexByte(k, 0)
		if i <= 0 || i == len(k)-1 {
			return fmt.Errorf("session key %q is not user id 0x00 session id", k)
		}
		uid, sid := string(k[:i]), string(k[i+1:])
		x, err := decodeSession(v)
		if err != nil {
			return fmt.Errorf("decode session %s of user %s: %w", sid, uid, err)
		}
		if x.ID != sid || x.UserID != uid {
			return fmt.Errorf("session stored as %s of user %s says %s of user %s", sid, uid, x.ID, x.UserID)
		}
		if !userExists(tx, uid) {
			return fmt.Errorf("session %s belongs to missing user %s", sid, uid)
		}
		return nil
	})
}
