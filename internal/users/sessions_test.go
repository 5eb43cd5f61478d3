package users

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// addSession stores a session of the user that began at created and ends
// at expires, and returns its ID.
func addSession(t *testing.T, st store.Store, userID string, created, expires time.Time, ua string) string {
	t.Helper()
	s := &store.Session{UserID: userID, Generation: 1, CreatedAt: created, LastUsedAt: created.Add(time.Minute),
		RotatedAt: created, ExpiresAt: expires, UserAgent: ua, Address: "192.0.2.7"}
	if _, err := st.CreateSession(context.Background(), s, 0); err != nil {
		t.Fatal(err)
	}
	return s.ID
}

// TestListSessions: the user's live sessions, oldest first, times in UTC;
// expired ones (not yet swept) and other users' are left out.
func TestListSessions(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	paris := time.FixedZone("CET", 3600)
	for name, tc := range map[string]struct {
		user     string // the name asked for
		setup    func(t *testing.T, st store.Store, alice, bob string) []string
		wantKind Kind
		wantMsg  string
	}{
		"none": {user: "alice", setup: func(*testing.T, store.Store, string, string) []string { return nil }},
		"two, oldest first, other case": {user: "ALICE", setup: func(t *testing.T, st store.Store, alice, bob string) []string {
			newer := addSession(t, st, alice, now.Add(-time.Hour), now.Add(time.Hour), "newer")
			older := addSession(t, st, alice, now.Add(-2*time.Hour).In(paris), now.Add(time.Hour), "Mozilla/5.0 (X11) older")
			addSession(t, st, bob, now.Add(-3*time.Hour), now.Add(time.Hour), "bob's")
			return []string{older, newer}
		}},
		"expired left out": {user: "alice", setup: func(t *testing.T, st store.Store, alice, bob string) []string {
			addSession(t, st, alice, now.Add(-2*time.Hour), now.Add(-time.Hour), "expired")
			return []string{addSession(t, st, alice, now.Add(-time.Hour), now.Add(time.Hour), "live")}
		}},
		"unknown user": {user: "nobody", wantKind: NotFound, wantMsg: `no user "nobody"`,
			setup: func(*testing.T, store.Store, string, string) []string { return nil }},
	} {
		t.Run(name, func(t *testing.T) {
			svc, st := newTestService(t)
			alice, bob := mustAdd(t, svc, "alice"), mustAdd(t, svc, "bob")
			want := tc.setup(t, st, alice.ID, bob.ID)
			got, err := svc.ListSessions(ctx, tc.user)
			if tc.wantMsg != "" {
				wantErr(t, err, tc.wantKind, tc.wantMsg)
				if got != nil {
					t.Errorf("sessions %+v with the error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got == nil {
				t.Fatal("nil list; want an empty one")
			}
			var ids []string
			for _, v := range got {
				ids = append(ids, v.ID)
				for _, tm := range []time.Time{v.CreatedAt, v.LastUsedAt, v.ExpiresAt} {
					if tm.Location() != time.UTC {
						t.Errorf("session %s: time %v not in UTC", v.ID, tm)
					}
				}
				if v.Address != "192.0.2.7" || v.UserAgent == "" || !v.LastUsedAt.Equal(v.CreatedAt.Add(time.Minute)) {
					t.Errorf("view %+v", v)
				}
			}
			if strings.Join(ids, " ") != strings.Join(want, " ") {
				t.Errorf("sessions %q, want %q", ids, want)
			}
		})
	}
}

// TestRevokeSession: one session ends, the others stay; a sid that is not
// one of the named user's sessions (another user's among them) ends
// nothing and is not found.
func TestRevokeSession(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	for name, tc := range map[string]struct {
		user, sid string // "alice1", "bob1" stand for those sessions' IDs
		wantKind  Kind
		wantMsg   string
		wantIs    error
		wantLeft  []string // sessions that remain, of both users
	}{
		"one of two":       {user: "alice", sid: "alice1", wantLeft: []string{"alice2", "bob1"}},
		"other case":       {user: "Alice", sid: "alice2", wantLeft: []string{"alice1", "bob1"}},
		"another's sid":    {user: "alice", sid: "bob1", wantKind: NotFound, wantMsg: `user "alice" has no session "bob1`, wantIs: store.ErrSessionNotFound, wantLeft: []string{"alice1", "alice2", "bob1"}},
		"unknown sid":      {user: "alice", sid: "sdoesnotexist", wantKind: NotFound, wantMsg: `user "alice" has no session "sdoesnotexist"`, wantIs: store.ErrSessionNotFound, wantLeft: []string{"alice1", "alice2", "bob1"}},
		"unknown user":     {user: "nobody", sid: "alice1", wantKind: NotFound, wantMsg: `no user "nobody"`, wantIs: store.ErrNotFound, wantLeft: []string{"alice1", "alice2", "bob1"}},
		"empty sid":        {user: "alice", sid: "", wantKind: Invalid, wantMsg: "session id is empty", wantLeft: []string{"alice1", "alice2", "bob1"}},
		"control char sid": {user: "alice", sid: "s\x1b[2J", wantKind: NotFound, wantMsg: `no session "s\x1b[2J"`, wantLeft: []string{"alice1", "alice2", "bob1"}},
	} {
		t.Run(name, func(t *testing.T) {
			svc, st := newTestService(t)
			alice, bob := mustAdd(t, svc, "alice"), mustAdd(t, svc, "bob")
			ids := map[string]string{
				"alice1": addSession(t, st, alice.ID, now.Add(-2*time.Hour), now.Add(time.Hour), "a1"),
				"alice2": addSession(t, st, alice.ID, now.Add(-time.Hour), now.Add(time.Hour), "a2"),
				"bob1":   addSession(t, st, bob.ID, now.Add(-time.Hour), now.Add(time.Hour), "b1"),
			}
			sid := tc.sid
			if id, ok := ids[sid]; ok {
				sid = id
				tc.wantMsg = strings.ReplaceAll(tc.wantMsg, tc.sid, id)
			}
			v, err := svc.RevokeSession(ctx, tc.user, sid)
			if tc.wantMsg != "" {
				wantErr(t, err, tc.wantKind, tc.wantMsg)
				if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
					t.Errorf("errors.Is(%v, %v) is false", err, tc.wantIs)
				}
			} else if err != nil || v.ID != alice.ID || v.Username != "alice" {
				t.Fatalf("revoke: %+v, %v", v, err)
			}
			var left []string
			for _, name := range []string{"alice1", "alice2", "bob1"} {
				uid := alice.ID
				if name == "bob1" {
					uid = bob.ID
				}
				if _, err := st.GetSession(ctx, uid, ids[name]); err == nil {
					left = append(left, name)
				} else if !errors.Is(err, store.ErrSessionNotFound) {
					t.Fatal(err)
				}
			}
			if strings.Join(left, " ") != strings.Join(tc.wantLeft, " ") {
				t.Errorf("sessions left %q, want %q", left, tc.wantLeft)
			}
		})
	}
}

// sessionsBrokenStore fails the session calls.
type sessionsBrokenStore struct{ store.Store }

func (sessionsBrokenStore) ListSessions(context.Context, string, time.Time) ([]*store.Session, error) {
	return nil, errBoom
}
func (sessionsBrokenStore) DeleteSession(context.Context, string, string) error { return errBoom }

// TestSessionsInternal: a store failure is Internal and keeps its text.
func TestSessionsInternal(t *testing.T) {
	ctx := context.Background()
	svc, st := newTestService(t)
	mustAdd(t, svc, "alice")
	svc = New(sessionsBrokenStore{st}, Settings{Hasher: testHasher()})
	for name, op := range map[string]func() error{
		"list":   func() error { _, err := svc.ListSessions(ctx, "alice"); return err },
		"revoke": func() error { _, err := svc.RevokeSession(ctx, "alice", "s1"); return err },
	} {
		t.Run(name, func(t *testing.T) {
			err := op()
			wantErr(t, err, Internal)
			if err.Error() != errBoom.Error() || !errors.Is(err, errBoom) {
				t.Errorf("got %q, want the store's error as it came", err)
			}
		})
	}
}
