package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
	"github.com/crudauth/caddy-crudauth/internal/throttle"
	"github.com/crudauth/caddy-crudauth/internal/token"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

const testPassword = "test-password-1"

// testStore is a fresh store for one test.
func testStore(t *testing.T) store.Store {
	t.Helper()
	st := memory.Open("", memory.Options{}) // unnamed: private to this test
	t.Cleanup(func() { _ = st.Close() })
	return st
}

var (
	hasherOnce sync.Once
	hasher     *password.Hasher
	aliceHash  string
)

// testHasher returns a hasher with the default parameters and a hash of
// testPassword, computed once.
func testHasher(t *testing.T) (*password.Hasher, string) {
	t.Helper()
	hasherOnce.Do(func() {
		var err error
		if hasher, err = password.NewHasher(password.DefaultParams); err != nil {
			panic(err)
		}
		if aliceHash, err = hasher.Hash(testPassword); err != nil {
			panic(err)
		}
	})
	return hasher, aliceHash
}

// testService is a Service over a fresh store holding alice, with scopes
// read (default) and write (grantable).
func testService(t *testing.T, mod func(*Config)) (*Service, *store.User) {
	t.Helper()
	st := testStore(t)
	h, hash := testHasher(t)
	alice := &store.User{Username: "alice", PasswordHash: hash}
	if err := st.CreateUser(t.Context(), alice); err != nil {
		t.Fatal(err)
	}
	mgr, err := token.New(token.Config{Key: []byte("test-only-hs256-key-0123456789-not-a-secret"), Issuer: "test", Audience: "test"})
	if err != nil {
		t.Fatal(err)
	}
	c := Config{
		Store:     st,
		Tokens:    mgr,
		Hasher:    h,
		HashLimit: password.NewLimiter(2, time.Minute),
		Policy:    password.DefaultPolicy,
		Defaults:  scope.Set{"read"},
		Ceiling:   scope.Set{"read", "write"},
	}
	if mod != nil {
		mod(&c)
	}
	return New(c), alice
}

func codeOf(err error) string {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

func TestLoginRefreshAuthenticate(t *testing.T) {
	s, alice := testService(t, nil)
	ctx := t.Context()
	cl := Client{IP: "192.0.2.1"}

	for _, tc := range []struct {
		name, user, pw string
		code           string
		cause          error
	}{
		{"unknown user", "bob", testPassword, CodeInvalidGrant, ErrUnknownUser},
		{"wrong password", "alice", "wrong", CodeInvalidGrant, ErrWrongPassword},
		{"empty password", "alice", "", CodeInvalidRequest, nil},
		{"control character", "al\x00ice", testPassword, CodeInvalidRequest, nil},
		{"name too long", string(make([]byte, users.MaxUsernameLen+1)), testPassword, CodeInvalidRequest, nil},
	} {
		_, err := s.Login(ctx, tc.user, tc.pw, nil, cl)
		if codeOf(err) != tc.code || tc.cause != nil && !errors.Is(err, tc.cause) {
			t.Errorf("%s: Login = %v, want %s (%v)", tc.name, err, tc.code, tc.cause)
		}
	}

	toks, err := s.Login(ctx, "ALICE", testPassword, scope.Set{"write", "admin"}, cl)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(toks.Scopes, scope.Set{"write"}) || toks.Refresh == "" || toks.UserID != alice.ID || toks.Username != "alice" {
		t.Fatalf("Login = %+v", toks)
	}
	p, err := s.Authenticate(ctx, toks.Access)
	if err != nil || p.UserID != alice.ID || p.ScopeString != "write" {
		t.Fatalf("Authenticate = %+v, %v", p, err)
	}
	if err := Authorize(p, scope.Set{"read"}); codeOf(err) != CodeInsufficientScope || !errors.Is(err, ErrInsufficientScope) {
		t.Errorf("Authorize(read) = %v", err)
	}
	if err := Authorize(p, scope.Set{"write"}); err != nil {
		t.Errorf("Authorize(write) = %v", err)
	}
	if _, err := s.Authenticate(ctx, toks.Refresh); codeOf(err) != CodeInvalidToken {
		t.Errorf("refresh token as access token: %v", err)
	}
	re, err := s.Refresh(ctx, toks.Refresh, nil, cl)
	if err != nil || re.Refresh != "" || !slices.Equal(re.Scopes, scope.Set{"write"}) {
		t.Fatalf("Refresh = %+v, %v", re, err)
	}
	if _, err := s.Refresh(ctx, toks.Access, nil, cl); codeOf(err) != CodeInvalidGrant {
		t.Errorf("access token as refresh token: %v", err)
	}

	// A revocation refuses both tokens at once.
	if _, err := store.Revoke(ctx, s.c.Store, alice.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, toks.Access); !errors.Is(err, ErrRevoked) || codeOf(err) != CodeInvalidToken {
		t.Errorf("revoked access token: %v", err)
	}
	if _, err := s.Refresh(ctx, toks.Refresh, nil, cl); !errors.Is(err, ErrRevoked) || codeOf(err) != CodeInvalidGrant {
		t.Errorf("revoked refresh token: %v", err)
	}
}

// TestUnderCeiling: a lowered ceiling cuts a token's scopes at once; a
// token wholly under it keeps its set and string.
func TestUnderCeiling(t *testing.T) {
	s, str := UnderCeiling(scope.Set{"read", "write"}, scope.Set{"read"}, "read")
	if !slices.Equal(s, scope.Set{"read"}) || str != "read" {
		t.Errorf("under: %v %q", s, str)
	}
	s, str = UnderCeiling(scope.Set{"read"}, scope.Set{"read", "write"}, "read write")
	if !slices.Equal(s, scope.Set{"read"}) || str != "read" {
		t.Errorf("above: %v %q", s, str)
	}
}

func TestChangePassword(t *testing.T) {
	s, _ := testService(t, nil)
	ctx := t.Context()
	cl := Client{IP: "192.0.2.1"}
	toks, err := s.Login(ctx, "alice", testPassword, nil, cl)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Authenticate(ctx, toks.Access)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ChangePassword(ctx, p, "wrong", "a-new-password-1", cl); codeOf(err) != CodeInvalidGrant {
		t.Errorf("wrong current password: %v", err)
	}
	if _, err := s.ChangePassword(ctx, p, testPassword, "short", cl); codeOf(err) != CodeInvalidRequest {
		t.Errorf("new password under the policy: %v", err)
	}
	fresh, err := s.ChangePassword(ctx, p, testPassword, "a-new-password-1", cl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, toks.Access); !errors.Is(err, ErrRevoked) {
		t.Errorf("the old token still works: %v", err)
	}
	if _, err := s.Authenticate(ctx, fresh.Access); err != nil {
		t.Errorf("the new token: %v", err)
	}
	// The principal of the old token cannot change the password again.
	if _, err := s.ChangePassword(ctx, p, "a-new-password-1", "another-password-2", cl); !errors.Is(err, ErrRevoked) {
		t.Errorf("second change with the old token: %v", err)
	}
}

// failWatcher is a login throttle that notes, at every recorded failure,
// how many logins' hashes were in flight (OnHash counts a hash from the
// moment its login passed the in-slot throttle check until it releases the
// slot).
type failWatcher struct {
	throttle.Limiter
	inFlight *atomic.Int64
	mu       sync.Mutex
	seen     []int64
}

func (f *failWatcher) Fail(ctx context.Context, ip, username string) (time.Duration, error) {
	f.mu.Lock()
	f.seen = append(f.seen, f.inFlight.Load())
	f.mu.Unlock()
	return f.Limiter.Fail(ctx, ip, username)
}

// TestLoginFailureRecordedBeforeSlotRelease: guesses sent at once for one
// username all pass the first throttle check and queue for the hashing
// slot; each checks again once it holds the slot. A failure must be
// recorded before its slot is released, or the next guess in the queue can
// check before it is counted and be verified past the limit.
//
// With one slot and a limit of 2, four guesses (the most one slot lets
// wait) are queued behind a slot the test holds, then let go: exactly two
// are verified and answered invalid_grant, two are locked out. Each failure
// must be recorded while its login still holds the slot. Were it recorded
// after the release, then at the second failure either the third guess
// already got the slot and passed its check (three invalid_grant answers),
// or no login was in flight when the failure was recorded: either way the
// test fails, whatever the scheduling.
func TestLoginFailureRecordedBeforeSlotRelease(t *testing.T) {
	const limit, guesses = 2, 4
	var inFlight atomic.Int64
	watch := &failWatcher{
		Limiter:  throttle.NewMemory(throttle.Config{MaxFailures: limit, UserMaxFailures: -1, IPMaxFailures: -1}),
		inFlight: &inFlight,
	}
	s, _ := testService(t, func(c *Config) {
		c.HashLimit = password.NewLimiter(1, time.Minute)
		c.Throttle = watch
		c.OnHash = func() func() {
			inFlight.Add(1)
			return func() { inFlight.Add(-1) }
		}
	})
	ctx := t.Context()
	codes := guessBehindSlot(t, s, guesses, func(i int) error {
		_, err := s.Login(ctx, "alice", fmt.Sprintf("wrong-password-%d", i), nil, Client{IP: "192.0.2.1"})
		return err
	})
	want := []string{CodeInvalidGrant, CodeInvalidGrant, "throttled", "throttled"}
	if !slices.Equal(codes, want) {
		t.Errorf("answers %v, want %d invalid_grant and the rest throttled: %v", codes, limit, want)
	}
	for i, n := range watch.seen {
		if n < 1 {
			t.Errorf("failure %d was recorded after its login released the hashing slot", i+1)
		}
	}
	if len(watch.seen) != limit {
		t.Errorf("%d failures recorded, want %d", len(watch.seen), limit)
	}
}

// TestChangePasswordGuessesThrottled: guesses of the current password sent
// at once with one stolen access token queue for the hashing slot; with a
// limit of 2, only two are verified, the rest are throttled once the slot
// is theirs.
func TestChangePasswordGuessesThrottled(t *testing.T) {
	const limit, guesses = 2, 4
	s, _ := testService(t, func(c *Config) {
		c.HashLimit = password.NewLimiter(1, time.Minute)
		c.Throttle = throttle.NewMemory(throttle.Config{MaxFailures: limit, UserMaxFailures: -1, IPMaxFailures: -1})
	})
	ctx := t.Context()
	toks, err := s.Login(ctx, "alice", testPassword, nil, Client{IP: "192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Authenticate(ctx, toks.Access)
	if err != nil {
		t.Fatal(err)
	}
	codes := guessBehindSlot(t, s, guesses, func(i int) error {
		_, err := s.ChangePassword(ctx, p, fmt.Sprintf("wrong-password-%d", i), "a-new-password-1", Client{IP: "192.0.2.1"})
		return err
	})
	if want := []string{CodeInvalidGrant, CodeInvalidGrant, "throttled", "throttled"}; !slices.Equal(codes, want) {
		t.Errorf("answers %v, want %v", codes, want)
	}
}

// guessBehindSlot runs guess n times at once while the test holds the
// service's only hashing slot, lets the slot go once every guess waits for
// it (each has passed the throttle's first check by then), and returns the
// outcomes sorted: an error code, or "throttled".
func guessBehindSlot(t *testing.T, s *Service, n int, guess func(i int) error) []string {
	t.Helper()
	hold, err := s.c.HashLimit.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	codes := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := guess(i)
			var ae *Error
			if errors.As(err, &ae) && ae.Throttled {
				codes[i] = "throttled"
			} else {
				codes[i] = codeOf(err)
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); s.c.HashLimit.Waiting() < n; {
		if time.Now().After(deadline) {
			hold()
			t.Fatalf("only %d of %d guesses queued for the slot", s.c.HashLimit.Waiting(), n)
		}
		time.Sleep(time.Millisecond)
	}
	hold()
	wg.Wait()
	slices.Sort(codes)
	return codes
}
