package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// sessionIDs returns the IDs of the user's sessions, sorted; nil when
// there are none.
func (st *state) sessionIDs(userID string) []string {
	m := st.sessions[userID]
	if len(m) == 0 {
		return nil
	}
	ids := make([]string, 0, len(m))
	for sid := range m {
		ids = append(ids, sid)
	}
	slices.Sort(ids)
	return ids
}

// CreateSession implements store.Store. s is updated only on success.
func (s *Store) CreateSession(ctx context.Context, sess *store.Session, max int) ([]string, error) {
	now := time.Now().UTC()
	ns, err := store.PrepareSession(sess, now)
	if err != nil {
		return nil, err
	}
	var removed []string
	err = s.write(ctx, func(st *state) error {
		if _, ok := st.users[ns.UserID]; !ok {
			return store.ErrNotFound
		}
		m := st.sessions[ns.UserID]
		if ns.ID == "" {
			for ns.ID == "" {
				// 128 random bits: a clash is astronomically unlikely,
				// and checked anyway.
				if id := store.NewSessionID(); m[id] == nil {
					ns.ID = id
				}
			}
		} else if m[ns.ID] != nil {
			return fmt.Errorf("session %s of user %s exists", ns.ID, ns.UserID)
		}
		if m == nil {
			m = map[string]*store.Session{}
			st.sessions[ns.UserID] = m
		}
		others := make([]*store.Session, 0, len(m))
		for _, o := range m {
			others = append(others, o)
		}
		removed = store.SessionsToEnd(others, ns.CreatedAt, max)
		for _, sid := range removed {
			delete(m, sid)
		}
		m[ns.ID] = ns.Clone()
		return nil
	})
	if err != nil {
		return nil, err
	}
	*sess = *ns
	return removed, nil
}

// session returns the stored session, or ErrSessionNotFound.
func (st *state) session(userID, sid string) (*store.Session, error) {
	if o := st.sessions[userID][sid]; o != nil {
		return o, nil
	}
	return nil, store.ErrSessionNotFound
}

// GetSession implements store.Store.
func (s *Store) GetSession(ctx context.Context, userID, sid string) (*store.Session, error) {
	var out *store.Session
	err := s.read(ctx, func(st *state) error {
		o, err := st.session(userID, sid)
		if err != nil {
			return err
		}
		out = o.Clone()
		return nil
	})
	return out, err
}

// UpdateSession implements store.Store. fn runs under the state's write
// lock and must not call back into the store.
func (s *Store) UpdateSession(ctx context.Context, userID, sid string, fn func(s *store.Session) error) (*store.Session, error) {
	var out *store.Session
	err := s.write(ctx, func(st *state) error {
		old, err := st.session(userID, sid)
		if err != nil {
			return err
		}
		runs := 1
		if s.opts.RerunUpdates {
			runs = 2
		}
		var ns *store.Session
		skip := false
		for range runs {
			ns = old.Clone()
			skip = false
			if err := fn(ns); errors.Is(err, store.ErrSkipWrite) {
				skip = true
			} else if err != nil {
				return err
			}
		}
		out = ns
		if skip {
			return nil
		}
		if ns.ID != sid || ns.UserID != userID {
			return errSessionIDChanged
		}
		st.sessions[userID][sid] = ns.Clone()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

var errSessionIDChanged = errors.New("session id and user id cannot be changed")

// DeleteSession implements store.Store.
func (s *Store) DeleteSession(ctx context.Context, userID, sid string) error {
	return s.write(ctx, func(st *state) error {
		if _, err := st.session(userID, sid); err != nil {
			return err
		}
		m := st.sessions[userID]
		delete(m, sid)
		if len(m) == 0 {
			delete(st.sessions, userID)
		}
		return nil
	})
}

// DeleteSessions implements store.Store.
func (s *Store) DeleteSessions(ctx context.Context, userID string) (int, error) {
	n := 0
	err := s.write(ctx, func(st *state) error {
		if _, ok := st.users[userID]; !ok {
			return store.ErrNotFound
		}
		n = len(st.sessions[userID])
		delete(st.sessions, userID)
		return nil
	})
	return n, err
}

// ListSessions implements store.Store.
func (s *Store) ListSessions(ctx context.Context, userID string, now time.Time) ([]*store.Session, error) {
	var all []*store.Session
	err := s.read(ctx, func(st *state) error {
		if _, ok := st.users[userID]; !ok {
			return store.ErrNotFound
		}
		for _, o := range st.sessions[userID] {
			all = append(all, o.Clone())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return store.LiveSessions(all, now), nil
}

// SweepSessions implements store.Store.
func (s *Store) SweepSessions(ctx context.Context, now time.Time) (int, error) {
	n := 0
	err := s.write(ctx, func(st *state) error {
		for uid, m := range st.sessions {
			for sid, o := range m {
				if store.SessionExpired(o, now) {
					delete(m, sid)
					n++
				}
			}
			if len(m) == 0 {
				delete(st.sessions, uid)
			}
		}
		return nil
	})
	return n, err
}
