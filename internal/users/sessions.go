package users

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// SessionView is what the service returns of a session: when it began, was
// last refreshed and ends, and the client it began on. The refresh state
// (generation, rotation time) stays in the store. The JSON names are those
// of the signed-in user's own session list, so one client reads both.
type SessionView struct {
	ID         string    `json:"id"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	// UserAgent and Address are the client's at login: client-supplied
	// text, which a caller prints only escaped.
	UserAgent string `json:"user_agent"`
	Address   string `json:"address"`
}

// SessionViewOf returns the view of s, its times in UTC. A byte of the
// user agent or address that is not UTF-8 becomes U+FFFD here, as JSON
// would carry it, so that a view read from a file and one read through the
// admin API are the same.
func SessionViewOf(s *store.Session) SessionView {
	return SessionView{
		ID: s.ID, CreatedAt: s.CreatedAt.UTC(), LastUsedAt: s.LastUsedAt.UTC(), ExpiresAt: s.ExpiresAt.UTC(),
		UserAgent: strings.ToValidUTF8(s.UserAgent, "\ufffd"), Address: strings.ToValidUTF8(s.Address, "\ufffd"),
	}
}

// ListSessions returns the user's live sessions, oldest first; never nil.
// A session past its expiry is left out even before it is swept: its
// tokens are refused already.
func (s *Service) ListSessions(ctx context.Context, username string) ([]SessionView, error) {
	u, err := s.lookup(ctx, username)
	if err != nil {
		return nil, err
	}
	list, err := s.st.ListSessions(ctx, u.ID, time.Now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound(username, err)
	}
	if err != nil {
		return nil, internal(err)
	}
	views := make([]SessionView, 0, len(list))
	for _, sess := range list {
		views = append(views, SessionViewOf(sess))
	}
	return views, nil
}

// RevokeSession ends one session of the user: its refresh token and every
// access token carrying its sid are refused from the next request on. The
// sid is looked up under that user only, so naming another user's session
// ends nothing and is reported as not found. It returns the user's view.
func (s *Service) RevokeSession(ctx context.Context, username, sid string) (View, error) {
	if sid == "" {
		return View{}, errorf(Invalid, nil, "session id is empty")
	}
	u, err := s.lookup(ctx, username)
	if err != nil {
		return View{}, err
	}
	err = s.st.DeleteSession(ctx, u.ID, sid)
	if errors.Is(err, store.ErrSessionNotFound) {
		return View{}, errorf(NotFound, err, "user %q has no session %q", u.Username, truncate(sid))
	}
	if err != nil {
		return View{}, internal(err)
	}
	return ViewOf(u), nil
}
