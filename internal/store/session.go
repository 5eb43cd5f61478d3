package store

import (
	"errors"
	"slices"
	"strings"
	"time"
)

// Helpers every backend's session methods share, so that they agree on
// what a valid new session is, when a session has expired, and which
// sessions CreateSession ends.

// SessionExpired reports whether s has expired at now: a session ends at
// its ExpiresAt, as a token ends at its exp.
func SessionExpired(s *Session, now time.Time) bool {
	return !now.Before(s.ExpiresAt)
}

// PrepareSession checks a session given to CreateSession and returns the
// copy to store, its zero times set to now. The ID is left to the backend:
// only it can check that a generated one is unused.
func PrepareSession(s *Session, now time.Time) (*Session, error) {
	switch {
	case s == nil:
		return nil, errors.New("session is nil")
	case s.UserID == "":
		return nil, errors.New("session has no user id")
	case s.ExpiresAt.IsZero():
		return nil, errors.New("session has no expiry")
	}
	ns := s.Clone()
	for _, t := range []*time.Time{&ns.CreatedAt, &ns.LastUsedAt, &ns.RotatedAt} {
		if t.IsZero() {
			*t = now
		}
	}
	return ns, nil
}

// SessionsToEnd returns the IDs of the sessions among others (the user's
// sessions before a new one is added) that CreateSession removes at now:
// every expired one (by ID), then, while the user would hold more than max
// (max > 0) with the new one, the least recently used of the rest
// (LastUsedAt, then ID, oldest first). The new session is not among others,
// so it is never removed.
func SessionsToEnd(others []*Session, now time.Time, max int) []string {
	var removed []string
	live := make([]*Session, 0, len(others))
	for _, o := range others {
		if SessionExpired(o, now) {
			removed = append(removed, o.ID)
		} else {
			live = append(live, o)
		}
	}
	slices.Sort(removed)
	if max > 0 && len(live)+1 > max {
		slices.SortFunc(live, func(a, b *Session) int {
			if c := a.LastUsedAt.Compare(b.LastUsedAt); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		for _, o := range live[:len(live)+1-max] {
			removed = append(removed, o.ID)
		}
	}
	return removed
}

// LiveSessions returns the sessions of all that have not expired at now,
// in the order ListSessions promises: oldest first (CreatedAt, then ID).
func LiveSessions(all []*Session, now time.Time) []*Session {
	out := make([]*Session, 0, len(all))
	for _, x := range all {
		if !SessionExpired(x, now) {
			out = append(out, x)
		}
	}
	slices.SortFunc(out, func(a, b *Session) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}
