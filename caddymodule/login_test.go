package caddymodule

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/throttle"
)

// failWatcher is a login throttle that notes, at every recorded failure,
// whether a login's hash was still in flight (loginHashes counts a hash
// from the moment its login passed the in-slot throttle check until it
// releases the slot).
type failWatcher struct {
	throttle.Limiter
	mu       sync.Mutex
	inFlight []int64
}

func (f *failWatcher) Fail(ctx context.Context, ip, username string) (time.Duration, error) {
	f.mu.Lock()
	f.inFlight = append(f.inFlight, loginHashes.inFlight.Load())
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
	ctx := t.Context()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "crudauth.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.CreateUser(ctx, &store.User{Username: "alice", PasswordHash: hashFor(t, testPassword)}); err != nil {
		t.Fatal(err)
	}
	const limit, guesses = 2, 4
	watch := &failWatcher{Limiter: throttle.NewMemory(throttle.Config{MaxFailures: limit, UserMaxFailures: -1, IPMaxFailures: -1})}
	h := &Handler{
		Refresh:   RefreshModeBody,
		logger:    zap.NewNop(),
		store:     st,
		hasher:    testHasher, // set by hashFor
		hashLimit: password.NewLimiter(1, time.Minute),
		throttle:  watch,
	}

	hold, err := h.hashLimit.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	statuses := make([]int, guesses)
	var wg sync.WaitGroup
	for i := range guesses {
		wg.Go(func() {
			body := formBody("grant_type", "password", "username", "alice", "password", fmt.Sprintf("wrong-password-%d", i))
			r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.RemoteAddr = "192.0.2.1"
			w := httptest.NewRecorder()
			if err := h.serveToken(w, r); err != nil {
				t.Error(err)
			}
			statuses[i] = w.Code
		})
	}
	// Every guess has passed the first check once it waits for the slot.
	for deadline := time.Now().Add(10 * time.Second); h.hashLimit.Waiting() < guesses; {
		if time.Now().After(deadline) {
			hold()
			t.Fatalf("only %d of %d guesses queued for the slot", h.hashLimit.Waiting(), guesses)
		}
		time.Sleep(time.Millisecond)
	}
	hold()
	wg.Wait()

	slices.Sort(statuses)
	want := []int{http.StatusBadRequest, http.StatusBadRequest, http.StatusTooManyRequests, http.StatusTooManyRequests}
	if !slices.Equal(statuses, want) {
		t.Errorf("answers %v, want %d invalid_grant (400) and the rest locked (429): %v", statuses, limit, want)
	}
	for i, n := range watch.inFlight {
		if n < 1 {
			t.Errorf("failure %d was recorded after its login released the hashing slot", i+1)
		}
	}
	if len(watch.inFlight) != limit {
		t.Errorf("%d failures recorded, want %d", len(watch.inFlight), limit)
	}
}

// TestAttackTimingImportedHash: a user imported through the admin API with
// a bcrypt hash of cost 11 (several times the work of the argon2id dummy an
// unknown name costs; Caddy's hash-password makes cost 14) is no slower to
// fail than an unknown name, and neither is a user with a hash of the
// gateway's own parameters. The import comes after the gateway started:
// the login path learns the class from the store. Compared as ratios of
// medians like TestAttackTimingEnumeration; without the padding the
// imported user failed five to six times slower than an unknown name.
func TestAttackTimingImportedHash(t *testing.T) {
	g := startAttackGateway(t, "throttle off", gwConfig{})
	g.addUser(t, "alice", nil)
	bc, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), 11)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, adminDo(t, http.MethodPost, "/crudauth/import?db="+g.db, map[string]any{
		"users": []map[string]any{{"username": "imported", "password_hash": string(bc)}},
	}), http.StatusOK)

	measure := func(user string) time.Duration {
		start := time.Now()
		r := g.login(t, user, "wrong-password", "")
		d := time.Since(start)
		wantOAuthError(t, r, http.StatusBadRequest, "invalid_grant")
		return d
	}
	measure("imported") // warm up
	var imported, own, unknown []time.Duration
	for i := 0; i < 7; i++ {
		imported = append(imported, measure("imported"))
		own = append(own, measure("alice"))
		unknown = append(unknown, measure(fmt.Sprintf("nobody%d", i)))
	}
	median := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	mi, mo, mu := median(imported), median(own), median(unknown)
	t.Logf("median wrong password: imported bcrypt %v, own argon2id %v; unknown user %v", mi, mo, mu)
	for name, m := range map[string]time.Duration{"imported bcrypt user": mi, "argon2id user": mo} {
		if ratio := float64(m) / float64(mu); ratio > 2 || ratio < 0.5 {
			t.Errorf("login time tells users apart: %s %v vs unknown user %v (ratio %.2f)", name, m, mu, ratio)
		}
	}
}
