package etcd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// userAndSessions reads, at one revision, whether the user exists (its
// CreateRevision, 0 when it does not) and its sessions with their
// ModRevisions.
func (s *Store) userAndSessions(ctx context.Context, userID string) (createRev, rev int64, sess []*store.Session, modRevs map[string]int64, err error) {
	resp, err := s.txn(ctx, nil, []clientv3.Op{
		clientv3.OpGet(s.userKey(userID), clientv3.WithKeysOnly()),
		clientv3.OpGet(s.sessionsOf(userID), clientv3.WithPrefix()),
	}, nil)
	if err != nil {
		return 0, 0, nil, nil, err
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		createRev = kvs[0].CreateRevision
	}
	modRevs = map[string]int64{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		x, err := decodeSession(kv.Value)
		if err != nil {
			return 0, 0, nil, nil, err
		}
		sess = append(sess, x)
		modRevs[x.ID] = kv.ModRevision
	}
	return createRev, resp.Header.Revision, sess, modRevs, nil
}

// CreateSession implements store.Store. The transaction compares that the
// user still exists and that none of its sessions changed or appeared
// since they were read (a ModRevision compare over the user's range), so
// that the expired and least recently used sessions it removes are the
// ones SessionsToEnd chose from the state it commits on; otherwise it
// reads again and chooses again.
func (s *Store) CreateSession(ctx context.Context, sess *store.Session, max int) ([]string, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	ns, err := store.PrepareSession(sess, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	explicit := ns.ID != ""
	for range maxAttempts {
		createRev, rev, others, _, err := s.userAndSessions(ctx, ns.UserID)
		if err != nil {
			return nil, err
		}
		if createRev == 0 {
			return nil, store.ErrNotFound
		}
		taken := func(id string) bool {
			return slices.ContainsFunc(others, func(o *store.Session) bool { return o.ID == id })
		}
		if !explicit {
			ns.ID = ""
			for ns.ID == "" {
				// 128 random bits: a clash is astronomically unlikely,
				// and checked anyway.
				if id := store.NewSessionID(); !taken(id) {
					ns.ID = id
				}
			}
		} else if taken(ns.ID) {
			return nil, fmt.Errorf("session %s of user %s exists", ns.ID, ns.UserID)
		}
		removed := store.SessionsToEnd(others, ns.CreatedAt, max)
		rec, err := encodeSession(ns)
		if err != nil {
			return nil, err
		}
		ops := []clientv3.Op{clientv3.OpPut(s.sessionKey(ns.UserID, ns.ID), rec)}
		for _, sid := range removed {
			ops = append(ops, clientv3.OpDelete(s.sessionKey(ns.UserID, sid)))
		}
		resp, err := s.write(ctx, []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(s.userKey(ns.UserID)), "=", createRev),
			clientv3.Compare(clientv3.ModRevision(s.sessionsOf(ns.UserID)), "<", rev+1).WithPrefix(),
		}, ops, nil)
		if err != nil {
			return nil, err
		}
		if resp.Succeeded {
			*sess = *ns
			return removed, nil
		}
	}
	return nil, errContended
}

// getSession reads one session and its ModRevision.
func (s *Store) getSession(ctx context.Context, userID, sid string) (*store.Session, int64, error) {
	var resp *clientv3.GetResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.sessionKey(userID, sid))
		return err
	}); err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) == 0 || sid == "" {
		return nil, 0, store.ErrSessionNotFound
	}
	x, err := decodeSession(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	return x, resp.Kvs[0].ModRevision, nil
}

// GetSession implements store.Store.
func (s *Store) GetSession(ctx context.Context, userID, sid string) (*store.Session, error) {
	x, _, err := s.getSession(ctx, userID, sid)
	return x, err
}

var errSessionIDChanged = errors.New("session id and user id cannot be changed")

// UpdateSession implements store.Store: a rotation is one transaction that
// compares the session's ModRevision with the one fn's copy was read at,
// and fn runs again on the session the failed transaction read back.
func (s *Store) UpdateSession(ctx context.Context, userID, sid string, fn func(s *store.Session) error) (*store.Session, error) {
	old, rev, err := s.getSession(ctx, userID, sid)
	if err != nil {
		return nil, err
	}
	key := s.sessionKey(userID, sid)
	for range maxAttempts {
		ns := old.Clone()
		if err := fn(ns); errors.Is(err, store.ErrSkipWrite) {
			return ns, nil
		} else if err != nil {
			return nil, err
		}
		if ns.ID != sid || ns.UserID != userID {
			return nil, errSessionIDChanged
		}
		rec, err := encodeSession(ns)
		if err != nil {
			return nil, err
		}
		resp, err := s.write(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", rev)},
			[]clientv3.Op{clientv3.OpPut(key, rec)}, []clientv3.Op{clientv3.OpGet(key)})
		if err != nil {
			return nil, err
		}
		if resp.Succeeded {
			return ns, nil
		}
		cur := resp.Responses[0].GetResponseRange().Kvs
		if len(cur) == 0 {
			return nil, store.ErrSessionNotFound
		}
		if old, err = decodeSession(cur[0].Value); err != nil {
			return nil, err
		}
		rev = cur[0].ModRevision
	}
	return nil, errContended
}

// DeleteSession implements store.Store.
func (s *Store) DeleteSession(ctx context.Context, userID, sid string) error {
	if sid == "" {
		if s.closed.Load() {
			return store.ErrClosed
		}
		return store.ErrSessionNotFound
	}
	var resp *clientv3.DeleteResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Delete(ctx, s.sessionKey(userID, sid))
		return err
	}); err != nil {
		return err
	}
	if resp.Deleted == 0 {
		return store.ErrSessionNotFound
	}
	s.committed(ctx, resp.Header.Revision)
	return nil
}

// DeleteSessions implements store.Store.
func (s *Store) DeleteSessions(ctx context.Context, userID string) (int, error) {
	// txn, not write: a user without sessions deletes nothing, and a
	// transaction that wrote nothing has no revision to wait for.
	resp, err := s.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.userKey(userID)), ">", 0)},
		[]clientv3.Op{clientv3.OpDelete(s.sessionsOf(userID), clientv3.WithPrefix())}, nil)
	if err != nil {
		return 0, err
	}
	if !resp.Succeeded {
		return 0, store.ErrNotFound
	}
	n := int(resp.Responses[0].GetResponseDeleteRange().Deleted)
	if n > 0 {
		s.committed(ctx, resp.Header.Revision)
	}
	return n, nil
}

// ListSessions implements store.Store.
func (s *Store) ListSessions(ctx context.Context, userID string, now time.Time) ([]*store.Session, error) {
	createRev, _, all, _, err := s.userAndSessions(ctx, userID)
	if err != nil {
		return nil, err
	}
	if createRev == 0 {
		return nil, store.ErrNotFound
	}
	return store.LiveSessions(all, now), nil
}

// sweepPerTxn is how many expired sessions one sweep transaction deletes
// (one compare and one delete each, under --max-txn-ops).
const sweepPerTxn = 100

// SweepSessions implements store.Store. Each expired session is deleted
// only while it is unchanged since it was read (ModRevision), so a
// session another gateway extended meanwhile is kept.
func (s *Store) SweepSessions(ctx context.Context, now time.Time) (int, error) {
	type victim struct {
		key string
		rev int64
	}
	var expired []victim
	if _, err := s.rangeAt(ctx, s.ns("sessions"), 0, false, func(k, v []byte, modRev int64) error {
		x, err := decodeSession(v)
		if err != nil {
			return err
		}
		if store.SessionExpired(x, now) {
			expired = append(expired, victim{string(k), modRev})
		}
		return nil
	}); err != nil {
		return 0, err
	}
	n := 0
	del := func(vs []victim) (bool, error) {
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, v := range vs {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(v.key), "=", v.rev))
			ops = append(ops, clientv3.OpDelete(v.key))
		}
		resp, err := s.write(ctx, cmps, ops, nil)
		if err != nil {
			return false, err
		}
		if resp.Succeeded {
			n += len(vs)
		}
		return resp.Succeeded, nil
	}
	for chunk := range slices.Chunk(expired, sweepPerTxn) {
		ok, err := del(chunk)
		if err != nil {
			return n, err
		}
		if ok {
			continue
		}
		// One of them changed or went: one by one, so the rest still go.
		for _, v := range chunk {
			if _, err := del([]victim{v}); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}
