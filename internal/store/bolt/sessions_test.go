package bolt

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
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

// TestSessionWritesKeepSidListInStep runs every write that adds, removes or
// rotates a session, and every user write, on users with sessions, and
// has Check compare each auth record's sid list with the sessions bucket
// after each one. The cache is off, so AuthState reads the records.
func TestSessionWritesKeepSidListInStep(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, Options{CacheSize: -1})
	a, b := &store.User{ID: "ua", Username: "a"}, &store.User{ID: "uab", Username: "b"}
	if err := s.CreateUsers(ctx, []*store.User{a, b}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sids := func(id string) []string {
		t.Helper()
		st, err := s.AuthState(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return st.Sessions
	}
	step := func(name string, err error, id string, want ...string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("Check after %s: %v", name, err)
		}
		if got := sids(id); !slices.Equal(got, want) {
			t.Fatalf("after %s: sessions of %s = %q, want %q", name, id, got, want)
		}
	}
	create := func(uid, sid string, expires time.Time, max int) error {
		x := &store.Session{ID: sid, UserID: uid, ExpiresAt: expires, LastUsedAt: now}
		_, err := s.CreateSession(ctx, x, max)
		return err
	}
	step("CreateSession", create("ua", "s2", now.Add(time.Hour), 0), "ua", "s2")
	step("CreateSession", create("ua", "s1", now.Add(time.Hour), 0), "ua", "s1", "s2")
	step("CreateSession of another user", create("uab", "s9", now.Add(time.Hour), 0), "uab", "s9")
	step("the first user's list", nil, "ua", "s1", "s2")
	step("CreateSession evicting", create("ua", "s3", now.Add(time.Hour), 2), "ua", "s2", "s3")
	step("CreateSession expired", create("ua", "s0", now.Add(-time.Second), 0), "ua", "s0", "s2", "s3")
	step("CreateSession ending an expired one", create("ua", "s4", now.Add(time.Hour), 0), "ua", "s2", "s3", "s4")
	if err := create("ua", "s4", now.Add(time.Hour), 0); err == nil {
		t.Fatal("CreateSession of an existing sid succeeded")
	}
	step("a failed CreateSession", nil, "ua", "s2", "s3", "s4")
	_, err := s.UpdateSession(ctx, "ua", "s3", func(x *store.Session) error { x.Generation++; return nil })
	step("UpdateSession", err, "ua", "s2", "s3", "s4")
	step("DeleteSession", s.DeleteSession(ctx, "ua", "s3"), "ua", "s2", "s4")
	if err := s.DeleteSession(ctx, "ua", "s3"); !errors.Is(err, store.ErrSessionNotFound) {
		t.Fatalf("second DeleteSession: %v", err)
	}
	_, err = store.Revoke(ctx, s, "ua") // ends the sessions too
	step("Revoke", err, "ua")
	step("CreateSession after Revoke", create("ua", "s5", now.Add(time.Hour), 0), "ua", "s5")
	_, err = s.UpdateUser(ctx, "ua", func(u *store.User) error { u.Username = "a2"; u.AllowedScopes = []string{"x"}; return nil })
	step("UpdateUser", err, "ua", "s5")
	_, err = s.UpdateUser(ctx, "ua", func(u *store.User) error { u.PasswordHash = "h"; return nil })
	step("an UpdateUser that leaves the auth state alone", err, "ua", "s5")
	step("CreateSession short-lived", create("ua", "s6", now.Add(50*time.Millisecond), 0), "ua", "s5", "s6")
	step("CreateSession short-lived, other user", create("uab", "s8", now.Add(50*time.Millisecond), 0), "uab", "s8", "s9")
	_, err = s.SweepSessions(ctx, now.Add(time.Minute))
	step("SweepSessions", err, "ua", "s5")
	step("SweepSessions, other user", nil, "uab", "s9")
	_, err = s.DeleteSessions(ctx, "ua")
	step("DeleteSessions", err, "ua")
	_, err = s.DeleteSessions(ctx, "ua")
	step("DeleteSessions of none", err, "ua")
	step("DeleteUser", s.DeleteUser(ctx, "uab"), "ua")

	// Import creates sessions through CreateSession.
	var dump bytes.Buffer
	step("CreateSession before export", create("ua", "s7", now.Add(time.Hour), 0), "ua", "s7")
	if err := store.Export(ctx, s, &dump); err != nil {
		t.Fatal(err)
	}
	s2 := openTemp(t, Options{CacheSize: -1})
	if _, err := store.Import(ctx, s2, &dump); err != nil {
		t.Fatal(err)
	}
	if err := s2.Check(); err != nil {
		t.Fatalf("Check after Import: %v", err)
	}
	if st, err := s2.AuthState(ctx, "ua"); err != nil || !slices.Equal(st.Sessions, []string{"s7"}) {
		t.Errorf("AuthState after Import = %+v, %v", st, err)
	}
}

// TestAuthStateMissReadsOnlyAuthRecord: a miss takes the sid list from the
// auth record and does not look at the sessions bucket. The two are made
// to disagree behind the store's back (which Check reports): AuthState
// follows the record.
func TestAuthStateMissReadsOnlyAuthRecord(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, Options{CacheSize: -1})
	u := &store.User{Username: "u"}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	sess := &store.Session{UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}
	if _, err := s.CreateSession(ctx, sess, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		if err := b.Delete(sessionKey(u.ID, sess.ID)); err != nil {
			return err
		}
		return b.Put(sessionKey(u.ID, "sunlisted"), []byte("{}"))
	}); err != nil {
		t.Fatal(err)
	}
	st, err := s.AuthState(ctx, u.ID)
	if err != nil || !slices.Equal(st.Sessions, []string{sess.ID}) {
		t.Errorf("AuthState = %+v, %v; want the record's list [%s]", st, err, sess.ID)
	}
	if err := s.Check(); err == nil {
		t.Error("Check found nothing wrong")
	}
}

// BenchmarkAuthStateMissSessions is BenchmarkAuthStateMissSpread on users
// with a session each, whose record carries a browser's user agent, against
// the same users without sessions: a miss reads the auth record only, so
// both cost about the same. "scan" is the miss as it was when the sid
// list came from a scan of the user's keys in the sessions bucket, for
// comparison. The file's sessions pages are many times the auth pages,
// and a scan reads one of them per miss.
func BenchmarkAuthStateMissSessions(b *testing.B) {
	const n = 20000
	ua := "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) " +
		"Chrome/126.0.0.0 Safari/537.36 " + strings.Repeat("x", 200)
	fill := func(b *testing.B, withSessions bool) (*Store, []string) {
		s := openTemp(b, Options{CacheSize: -1, BatchDelay: -1})
		ctx := b.Context()
		ids := make([]string, n)
		for i := range ids {
			ids[i] = store.NewID()
		}
		slices.Sort(ids)
		us := make([]*store.User, n)
		for i := range us {
			us[i] = &store.User{ID: ids[i], Username: fmt.Sprintf("spread%05d", i), PasswordHash: benchHash}
		}
		if err := s.CreateUsers(ctx, us); err != nil {
			b.Fatal(err)
		}
		if withSessions {
			// One transaction, as n CreateSession calls would leave it.
			now := time.Now()
			if err := s.db.Update(func(tx *bolt.Tx) error {
				for _, id := range ids {
					x := &store.Session{
						ID: store.NewSessionID(), UserID: id, Generation: 1, Scopes: []string{"me:read"},
						CreatedAt: now, LastUsedAt: now, RotatedAt: now, ExpiresAt: now.Add(time.Hour),
						UserAgent: ua, Address: "192.0.2.1",
					}
					data, err := encodeSession(x)
					if err != nil {
						return err
					}
					if err := tx.Bucket(bucketSessions).Put(sessionKey(id, x.ID), data); err != nil {
						return err
					}
					if err := syncAuthSessions(tx, id); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
		_ = s.db.View(func(tx *bolt.Tx) error {
			as, ss := tx.Bucket(bucketAuth).Stats(), tx.Bucket(bucketSessions).Stats()
			b.Logf("sessions %v: auth bucket %d leaf pages, sessions bucket %d leaf pages", withSessions, as.LeafPageN, ss.LeafPageN)
			return nil
		})
		rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		return s, ids
	}
	run := func(b *testing.B, s *Store, ids []string, get func(string) (store.AuthState, error), sessions int) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			st, err := get(ids[i%n])
			if err != nil || len(st.Sessions) != sessions {
				b.Fatalf("AuthState = %+v, %v", st, err)
			}
			i++
		}
	}
	b.Run("no_sessions", func(b *testing.B) {
		s, ids := fill(b, false)
		run(b, s, ids, func(id string) (store.AuthState, error) { return s.AuthState(b.Context(), id) }, 0)
	})
	b.Run("one_session", func(b *testing.B) {
		s, ids := fill(b, true)
		run(b, s, ids, func(id string) (store.AuthState, error) { return s.AuthState(b.Context(), id) }, 1)
	})
	b.Run("one_session_scan", func(b *testing.B) {
		s, ids := fill(b, true)
		run(b, s, ids, func(id string) (store.AuthState, error) { return authStateScan(s, id) }, 1)
	})
}

// authStateScan is the AuthState miss as it was before the auth record
// held the sid list, for comparison in benchmarks only: the record, then a
// scan of the user's keys in the sessions bucket.
func authStateScan(s *Store, id string) (store.AuthState, error) {
	var st store.AuthState
	err := s.view(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucketAuth).Get([]byte(id))
		if data == nil {
			return store.ErrNotFound
		}
		var err error
		if st, err = decodeAuthRecord(data); err != nil {
			return err
		}
		st.Sessions = sessionIDs(tx, id)
		return nil
	})
	return st, err
}
