package bolt

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// TestSessionRecordFormat pins the sessions bucket's JSON, as
// TestUserRecordFormat pins the users'.
func TestSessionRecordFormat(t *testing.T) {
	const golden = `{"id":"sabc","user_id":"uabc","scopes":["me:read"],"generation":3,` +
		`"rotated_at":"2024-01-02T03:04:05.000000006Z","created_at":"2024-01-01T00:00:00Z",` +
		`"last_used_at":"2024-01-03T00:00:00Z","expires_at":"2024-02-01T00:00:00Z",` +
		`"user_agent":"Mozilla/5.0","address":"192.0.2.1"}`
	s := &store.Session{
		ID: "sabc", UserID: "uabc", Scopes: []string{"me:read"}, Generation: 3,
		RotatedAt:  time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC),
		CreatedAt:  time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		LastUsedAt: time.Date(2024, 1, 3, 0, 0, 0, 0, time.UTC),
		ExpiresAt:  time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC),
		UserAgent:  "Mozilla/5.0", Address: "192.0.2.1",
	}
	b, err := encodeSession(s)
	if err != nil || string(b) != golden {
		t.Fatalf("encodeSession = %s, %v\nwant %s", b, err, golden)
	}
	got, err := decodeSession([]byte(golden))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != s.ID || got.UserID != s.UserID || !slices.Equal(got.Scopes, s.Scopes) || got.Generation != 3 ||
		!got.RotatedAt.Equal(s.RotatedAt) || !got.CreatedAt.Equal(s.CreatedAt) || !got.LastUsedAt.Equal(s.LastUsedAt) ||
		!got.ExpiresAt.Equal(s.ExpiresAt) || got.UserAgent != s.UserAgent || got.Address != s.Address {
		t.Errorf("decodeSession(golden) = %+v", got)
	}
}

// TestSessionCacheInvalidation: writes that add or remove a session drop
// the user's AuthState entry (the sid list changes); a rotation does not,
// so a refresh costs the next bearer check no store read.
func TestSessionCacheInvalidation(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, Options{})
	u := &store.User{Username: "cached"}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	sess := &store.Session{UserID: u.ID, Generation: 1, ExpiresAt: time.Now().Add(time.Hour)}
	cached := func() bool {
		_, ok := s.cache.get(u.ID)
		return ok
	}
	warm := func() {
		t.Helper()
		if _, err := s.AuthState(ctx, u.ID); err != nil || !cached() {
			t.Fatalf("AuthState did not fill the cache: %v", err)
		}
	}
	for _, tc := range []struct {
		name     string
		write    func() error
		keepsHit bool
	}{
		{"CreateSession", func() error { _, err := s.CreateSession(ctx, sess, 0); return err }, false},
		{"UpdateSession", func() error {
			_, err := s.UpdateSession(ctx, u.ID, sess.ID, func(x *store.Session) error { x.Generation++; return nil })
			return err
		}, true},
		{"UpdateSession skipped", func() error {
			_, err := s.UpdateSession(ctx, u.ID, sess.ID, func(*store.Session) error { return store.ErrSkipWrite })
			return err
		}, true},
		{"DeleteSession", func() error { return s.DeleteSession(ctx, u.ID, sess.ID) }, false},
		{"CreateSession again", func() error { sess.ID = ""; _, err := s.CreateSession(ctx, sess, 0); return err }, false},
		{"DeleteSessions", func() error { _, err := s.DeleteSessions(ctx, u.ID); return err }, false},
		{"CreateSession expired", func() error {
			sess.ID, sess.ExpiresAt = "", time.Now().Add(-time.Second)
			_, err := s.CreateSession(ctx, sess, 0)
			return err
		}, false},
		{"SweepSessions", func() error { _, err := s.SweepSessions(ctx, time.Now()); return err }, false},
	} {
		warm()
		gen := s.cache.generation()
		if err := tc.write(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := cached() && s.cache.generation() == gen; got != tc.keepsHit {
			t.Errorf("%s: cache entry kept = %v, want %v", tc.name, got, tc.keepsHit)
		}
	}
}

// TestCheckSessions damages the sessions bucket behind the store's back.
func TestCheckSessions(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name   string
		damage func(b *bolt.Bucket, u, sid string) error
		want   string
	}{
		{"orphan", func(b *bolt.Bucket, _, _ string) error {
			data, _ := encodeSession(&store.Session{ID: "sx", UserID: "unobody"})
			return b.Put(sessionKey("unobody", "sx"), data)
		}, "belongs to missing user unobody"},
		{"moved", func(b *bolt.Bucket, u, sid string) error {
			data := b.Get(sessionKey(u, sid))
			return b.Put(sessionKey(u, "sother"), append([]byte(nil), data...))
		}, "says"},
		{"garbage", func(b *bolt.Bucket, u, sid string) error { return b.Put(sessionKey(u, sid), []byte("{")) }, "decode session"},
		{"bad key", func(b *bolt.Bucket, _, _ string) error { return b.Put([]byte("nokey"), []byte("{}")) }, "is not user id 0x00 session id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTemp(t, Options{})
			u := &store.User{Username: "victim"}
			if err := s.CreateUser(ctx, u); err != nil {
				t.Fatal(err)
			}
			sess := &store.Session{UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}
			if _, err := s.CreateSession(ctx, sess, 0); err != nil {
				t.Fatal(err)
			}
			if err := s.Check(); err != nil {
				t.Fatalf("Check before damage: %v", err)
			}
			if err := s.db.Update(func(tx *bolt.Tx) error {
				return tc.damage(tx.Bucket(bucketSessions), u.ID, sess.ID)
			}); err != nil {
				t.Fatal(err)
			}
			if err := s.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestDeleteUserLeavesNoSessions: DeleteUser removes the user's sessions
// from the file (Check finds no orphan), and only theirs, even for a user
// whose ID is a prefix of another's.
func TestDeleteUserLeavesNoSessions(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, Options{})
	short, long := &store.User{ID: "uab", Username: "short"}, &store.User{ID: "uabc", Username: "long"}
	if err := s.CreateUsers(ctx, []*store.User{short, long}); err != nil {
		t.Fatal(err)
	}
	var keep string
	for _, id := range []string{"uab", "uab", "uabc"} {
		x := &store.Session{UserID: id, ExpiresAt: time.Now().Add(time.Hour)}
		if _, err := s.CreateSession(ctx, x, 0); err != nil {
			t.Fatal(err)
		}
		keep = x.ID
	}
	if err := s.DeleteUser(ctx, "uab"); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check after DeleteUser: %v", err)
	}
	n := 0
	_ = s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketSessions).Stats().KeyN; return nil })
	if n != 1 {
		t.Errorf("%d sessions left in the file, want 1", n)
	}
	if st, err := s.AuthState(ctx, "uabc"); err != nil || !slices.Equal(st.Sessions, []string{keep}) {
		t.Errorf("the other user's AuthState = %+v, %v", st, err)
	}
	if _, err := s.CreateSession(ctx, &store.Session{UserID: "uabc", ID: "s\x00x", ExpiresAt: time.Now().Add(time.Hour)}, 0); err == nil {
		t.Errorf("CreateSession accepted a sid with a 0x00 byte")
	}
	if _, err := s.GetSession(ctx, "uabc\x00"+keep[:1], keep[1:]); !errors.Is(err, store.ErrSessionNotFound) {
		t.Errorf("GetSession with the separator in the user id: %v", err)
	}
}

// BenchmarkUpdateSessionParallel measures refreshes under load: each
// goroutine rotates its own session, so the writes do not conflict and
// only the group commit (Batch, waiting up to BatchDelay) decides how many
// share a disk sync. "nowait" commits each batch as soon as it is formed.
// Run with -cpu 1,2,8 to see the grouping grow with the load.
func BenchmarkUpdateSessionParallel(b *testing.B) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{
		{"nowait", -1},
		{"default", 0},
		{"2ms", 2 * time.Millisecond},
		{"10ms", 10 * time.Millisecond},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := openTemp(b, Options{BatchDelay: tc.delay})
			ctx := b.Context()
			u := &store.User{Username: "bench"}
			if err := s.CreateUser(ctx, u); err != nil {
				b.Fatal(err)
			}
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(8) // 8 goroutines per -cpu: many clients per core, as a gateway has
			b.RunParallel(func(pb *testing.PB) {
				sess := &store.Session{
					UserID: u.ID, Generation: 1, ExpiresAt: time.Now().Add(time.Hour),
					Scopes: []string{"me:read"}, UserAgent: strings.Repeat("x", 120), Address: "192.0.2.1",
					ID: fmt.Sprintf("s%06d", seq.Add(1)),
				}
				if _, err := s.CreateSession(ctx, sess, 0); err != nil {
					b.Error(err)
					return
				}
				for pb.Next() {
					if _, err := s.UpdateSession(ctx, u.ID, sess.ID, func(x *store.Session) error {
						x.Generation++
						x.RotatedAt = time.Now()
						x.LastUsedAt = x.RotatedAt
						return nil
					}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkUpdateSessionSerial is one refresh at a time: the latency of a
// lone refresh, BatchDelay included.
func BenchmarkUpdateSessionSerial(b *testing.B) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{{"nowait", -1}, {"default", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			s := openTemp(b, Options{BatchDelay: tc.delay})
			ctx := b.Context()
			u := &store.User{Username: "bench"}
			if err := s.CreateUser(ctx, u); err != nil {
				b.Fatal(err)
			}
			sess := &store.Session{UserID: u.ID, Generation: 1, ExpiresAt: time.Now().Add(time.Hour)}
			if _, err := s.CreateSession(ctx, sess, 0); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.UpdateSession(ctx, u.ID, sess.ID, func(x *store.Session) error { x.Generation++; return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
