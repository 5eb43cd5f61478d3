package auth

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// clock is a settable clock shared by the service and its token manager.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// sessionService is testService with rotation on, a 10s grace, a refresh
// TTL of one hour and a clock the test moves; reuses counts OnReuse.
func sessionService(t *testing.T, mod func(*Config)) (*Service, *store.User, *clock, *atomic.Int64) {
	t.Helper()
	clk := &clock{now: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
	var reuses atomic.Int64
	s, alice := testService(t, func(c *Config) {
		mgr, err := token.New(token.Config{Key: []byte("test-only-hs256-key-0123456789-not-a-secret"),
			Issuer: "test", Audience: "test", RefreshTTL: time.Hour, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		c.Tokens = mgr
		c.Now = clk.Now
		c.Sessions = SessionPolicy{Rotate: true, ReuseGrace: 10 * time.Second, Max: DefaultMaxSessions}
		c.OnReuse = func() { reuses.Add(1) }
		if mod != nil {
			mod(c)
		}
	})
	return s, alice, clk, &reuses
}

func login(t *testing.T, s *Service) *Tokens {
	t.Helper()
	toks, err := s.Login(t.Context(), "alice", testPassword, nil, Client{IP: "192.0.2.1", UserAgent: "test-agent"})
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

func TestRefreshRotation(t *testing.T) {
	s, alice, clk, reuses := sessionService(t, nil)
	ctx, cl := t.Context(), Client{IP: "192.0.2.1"}
	first := login(t, s)
	if first.SessionID == "" || first.Refresh == "" {
		t.Fatalf("login = %+v", first)
	}

	clk.Add(time.Minute)
	second, err := s.Refresh(ctx, first.Refresh, nil, cl)
	if err != nil {
		t.Fatal(err)
	}
	if second.Refresh == "" || second.Refresh == first.Refresh || second.SessionID != first.SessionID {
		t.Fatalf("refresh did not rotate: %+v", second)
	}
	// The spent token within the grace: the same successor, no revocation.
	clk.Add(5 * time.Second)
	again, err := s.Refresh(ctx, first.Refresh, nil, cl)
	if err != nil || again.Refresh != second.Refresh {
		t.Fatalf("spent token within the grace = %v, same successor %v", err, err == nil && again.Refresh == second.Refresh)
	}
	third, err := s.Refresh(ctx, second.Refresh, nil, cl)
	if err != nil || third.Refresh == second.Refresh {
		t.Fatalf("successor refresh = %v", err)
	}
	if _, err := s.Authenticate(ctx, third.Access); err != nil {
		t.Fatalf("fresh access token: %v", err)
	}

	// Two generations behind: reuse. The session ends, its access tokens
	// and its current refresh token with it.
	_, err = s.Refresh(ctx, first.Refresh, nil, cl)
	if !errors.Is(err, ErrRefreshReuse) || codeOf(err) != CodeInvalidGrant {
		t.Fatalf("replayed token = %v, want reuse", err)
	}
	if reuses.Load() != 1 {
		t.Errorf("OnReuse called %d times, want 1", reuses.Load())
	}
	if _, err := s.Authenticate(ctx, third.Access); !errors.Is(err, ErrSessionEnded) || codeOf(err) != CodeInvalidToken {
		t.Errorf("access token of the revoked session: %v", err)
	}
	if _, err := s.Refresh(ctx, third.Refresh, nil, cl); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("current refresh token of the revoked session: %v", err)
	}
	if _, err := s.c.Store.GetSession(ctx, alice.ID, first.SessionID); !errors.Is(err, store.ErrSessionNotFound) {
		t.Errorf("revoked session still stored: %v", err)
	}
}

func TestRefreshReuseAfterGrace(t *testing.T) {
	s, _, clk, reuses := sessionService(t, nil)
	ctx, cl := t.Context(), Client{IP: "192.0.2.1"}
	first := login(t, s)
	second, err := s.Refresh(ctx, first.Refresh, nil, cl)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(10*time.Second + time.Millisecond)
	if _, err := s.Refresh(ctx, first.Refresh, nil, cl); !errors.Is(err, ErrRefreshReuse) {
		t.Fatalf("spent token after the grace = %v, want reuse", err)
	}
	if _, err := s.Authenticate(ctx, second.Access); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("access token after reuse: %v", err)
	}
	if reuses.Load() != 1 {
		t.Errorf("OnReuse called %d times", reuses.Load())
	}
}

// TestConcurrentRefreshNoFork: 50 refreshes with one token at once all
// succeed with the one successor, and the session moved one generation.
func TestConcurrentRefreshNoFork(t *testing.T) {
	s, alice, _, reuses := sessionService(t, nil)
	ctx := t.Context()
	first := login(t, s)
	const n = 50
	got := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			toks, err := s.Refresh(ctx, first.Refresh, nil, Client{IP: "192.0.2.1"})
			errs[i] = err
			if err == nil {
				got[i] = toks.Refresh
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("refresh %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("refresh %d got another successor: the session forked", i)
		}
	}
	sess, err := s.c.Store.GetSession(ctx, alice.ID, first.SessionID)
	if err != nil || sess.Generation != 2 {
		t.Fatalf("session after 50 refreshes: %+v, %v (want generation 2)", sess, err)
	}
	if reuses.Load() != 0 {
		t.Errorf("%d reuses detected", reuses.Load())
	}
}

func TestLogout(t *testing.T) {
	s, _, _, _ := sessionService(t, nil)
	ctx, cl := t.Context(), Client{IP: "192.0.2.1"}
	a, b := login(t, s), login(t, s)
	if err := s.Logout(ctx, a.Refresh, cl); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, a.Access); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("access token after logout: %v", err)
	}
	if _, err := s.Refresh(ctx, a.Refresh, nil, cl); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("refresh after logout: %v", err)
	}
	if err := s.Logout(ctx, a.Refresh, cl); err != nil {
		t.Errorf("second logout: %v, want idempotent", err)
	}
	if _, err := s.Authenticate(ctx, b.Access); err != nil {
		t.Errorf("the other session ended too: %v", err)
	}
	if err := s.Logout(ctx, b.Access, cl); codeOf(err) != CodeInvalidGrant {
		t.Errorf("logout with an access token: %v", err)
	}
	if err := s.Logout(ctx, "not.a.token", cl); codeOf(err) != CodeInvalidGrant {
		t.Errorf("logout with garbage: %v", err)
	}
}

func TestLogoutAllAndSelfService(t *testing.T) {
	s, alice, _, _ := sessionService(t, nil)
	ctx, cl := t.Context(), Client{IP: "192.0.2.1"}
	a, b := login(t, s), login(t, s)
	pa, err := s.Authenticate(ctx, a.Access)
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.Sessions(ctx, pa)
	if err != nil || len(list) != 2 {
		t.Fatalf("Sessions = %v, %v", list, err)
	}
	for _, ss := range list {
		if ss.ID != a.SessionID && ss.ID != b.SessionID || ss.UserAgent != "test-agent" || ss.Address != "192.0.2.1" {
			t.Errorf("listed session %+v", *ss)
		}
	}

	// Another user's session cannot be named.
	bob := &store.User{Username: "bob", PasswordHash: alice.PasswordHash}
	if err := s.c.Store.CreateUser(ctx, bob); err != nil {
		t.Fatal(err)
	}
	bobToks, err := s.Login(ctx, "bob", testPassword, nil, cl)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EndSession(ctx, pa, bobToks.SessionID, cl); !errors.Is(err, ErrNoSuchSession) {
		t.Errorf("ending bob's session as alice: %v", err)
	}
	if _, err := s.Authenticate(ctx, bobToks.Access); err != nil {
		t.Errorf("bob's session ended by alice: %v", err)
	}

	if err := s.EndSession(ctx, pa, b.SessionID, cl); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, b.Access); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("ended session's token: %v", err)
	}
	c := login(t, s)
	n, err := s.LogoutAll(ctx, pa, cl)
	if err != nil || n != 2 {
		t.Fatalf("LogoutAll = %d, %v", n, err)
	}
	for _, tok := range []string{a.Access, c.Access} {
		if _, err := s.Authenticate(ctx, tok); !errors.Is(err, ErrSessionEnded) {
			t.Errorf("token after logout of all: %v", err)
		}
	}
	if _, err := s.Authenticate(ctx, bobToks.Access); err != nil {
		t.Errorf("bob logged out by alice's logout of all: %v", err)
	}
}

func TestMaxSessions(t *testing.T) {
	s, _, clk, _ := sessionService(t, func(c *Config) { c.Sessions.Max = 2 })
	a := login(t, s)
	clk.Add(time.Second)
	b := login(t, s)
	clk.Add(time.Second)
	// a is used after b: b is now the least recently used.
	if _, err := s.Refresh(t.Context(), a.Refresh, nil, Client{}); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	c := login(t, s)
	if _, err := s.Authenticate(t.Context(), b.Access); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("least recently used session kept: %v", err)
	}
	for _, tok := range []string{c.Access} {
		if _, err := s.Authenticate(t.Context(), tok); err != nil {
			t.Errorf("newest session: %v", err)
		}
	}
}

func TestSessionExpiry(t *testing.T) {
	for _, sliding := range []bool{false, true} {
		s, _, clk, _ := sessionService(t, func(c *Config) { c.Sessions.Sliding = sliding })
		ctx := t.Context()
		toks := login(t, s)
		if want := clk.Now().Add(time.Hour); !toks.RefreshExpires.Equal(want) {
			t.Errorf("sliding=%v: refresh expires %v, want %v", sliding, toks.RefreshExpires, want)
		}
		// 50 minutes in, an access token does not outlive the session.
		clk.Add(50 * time.Minute)
		re, err := s.Refresh(ctx, toks.Refresh, nil, Client{})
		if err != nil {
			t.Fatal(err)
		}
		if !sliding && re.AccessExpires.After(toks.RefreshExpires) {
			t.Errorf("access token expires %v, after its session %v", re.AccessExpires, toks.RefreshExpires)
		}
		clk.Add(15 * time.Minute) // 65 minutes after the login
		_, err = s.Refresh(ctx, re.Refresh, nil, Client{})
		if sliding && err != nil {
			t.Errorf("sliding session refused 15 minutes after its last refresh: %v", err)
		}
		if !sliding && codeOf(err) != CodeInvalidGrant {
			t.Errorf("fixed session refreshed past its expiry: %v", err)
		}
	}
}

func TestRefreshRefusals(t *testing.T) {
	s, alice, _, _ := sessionService(t, nil)
	ctx, cl := t.Context(), Client{}
	toks := login(t, s)
	// A token without a session (as issued before sessions) is refused,
	// access and refresh alike.
	noSid := token.Subject{UserID: alice.ID, Scopes: scope.Set{"read"}, TokenVersion: alice.TokenVersion}
	at, _, err := s.c.Tokens.IssueAccess(noSid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, at); !errors.Is(err, ErrNoSession) {
		t.Errorf("access token without sid: %v", err)
	}
	rt, _, err := s.c.Tokens.IssueRefresh(noSid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Refresh(ctx, rt, nil, cl); !errors.Is(err, ErrNoSession) {
		t.Errorf("refresh token without sid: %v", err)
	}
	// A sid that is not one of the user's.
	forged := token.Subject{UserID: alice.ID, Scopes: scope.Set{"read"}, TokenVersion: alice.TokenVersion,
		SessionID: store.NewSessionID(), Generation: 1}
	if at, _, err = s.c.Tokens.IssueAccess(forged); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, at); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("access token with a sid not the user's: %v", err)
	}
	// A disabled user cannot refresh.
	if _, err := s.c.Store.UpdateUser(ctx, alice.ID, func(u *store.User) error { u.Disabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Refresh(ctx, toks.Refresh, nil, cl); !errors.Is(err, ErrDisabledUser) {
		t.Errorf("refresh of a disabled user: %v", err)
	}
}

func TestRefreshWithoutRotation(t *testing.T) {
	s, _, _, _ := sessionService(t, func(c *Config) { c.Sessions.Rotate = false })
	toks := login(t, s)
	for i := range 3 {
		re, err := s.Refresh(t.Context(), toks.Refresh, nil, Client{})
		if err != nil || re.Refresh != "" {
			t.Fatalf("refresh %d without rotation = %+v, %v", i, re, err)
		}
	}
}

// unavailableStore answers every call with store.ErrUnavailable, as a
// distributed store without quorum does.
type unavailableStore struct{ store.Store }

func (unavailableStore) AuthState(context.Context, string) (store.AuthState, error) {
	return store.AuthState{}, store.ErrUnavailable
}

func (unavailableStore) GetUserByName(context.Context, string) (*store.User, error) {
	return nil, store.ErrUnavailable
}

func (unavailableStore) HashClasses(context.Context) ([]string, error) {
	return nil, store.ErrUnavailable
}

// TestStoreUnavailable: a store that cannot answer gives
// temporarily_unavailable with a Retry-After, for a bearer check, a refresh
// and a login alike: never a decision on state it could not read.
func TestStoreUnavailable(t *testing.T) {
	s, _, _, _ := sessionService(t, nil)
	toks := login(t, s)
	s.c.Store = unavailableStore{s.c.Store}
	ctx := t.Context()
	for name, call := range map[string]func() error{
		"authenticate": func() error { _, err := s.Authenticate(ctx, toks.Access); return err },
		"refresh":      func() error { _, err := s.Refresh(ctx, toks.Refresh, nil, Client{}); return err },
		"login":        func() error { _, err := s.Login(ctx, "alice", testPassword, nil, Client{}); return err },
	} {
		err := call()
		var ae *Error
		if !errors.As(err, &ae) || ae.Code != CodeTemporarilyUnavailable || ae.RetryAfter <= 0 || !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with the store unavailable: %v", name, err)
		}
	}
}
