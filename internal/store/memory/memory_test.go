package memory

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/store/storetest"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

var seq atomic.Int64

// backend gives every test a state of its own, under a fresh name that
// the suite's handles share.
func backend(opts Options) storetest.Backend {
	return storetest.Backend{
		New: func(t *testing.T) func() (store.Store, error) {
			name := fmt.Sprintf("%s#%d", t.Name(), seq.Add(1))
			return func() (store.Store, error) { return Open(name, opts), nil }
		},
		Concurrent: true,
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, backend(Options{}))
}

// TestConformanceRerunUpdates runs the suite with every UpdateUser fn run
// twice, as an optimistic backend does on a conflict: the suite's fns and
// store.SetPassword and store.Revoke must give the same result.
func TestConformanceRerunUpdates(t *testing.T) {
	storetest.Run(t, backend(Options{RerunUpdates: true}))
}

func TestRerunUpdatesRunsTwice(t *testing.T) {
	s := Open("", Options{RerunUpdates: true})
	defer s.Close()
	u := &store.User{Username: "twice"}
	if err := s.CreateUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	runs := 0
	got, err := s.UpdateUser(t.Context(), u.ID, func(x *store.User) error {
		runs++
		if x.TokenVersion != 0 {
			return fmt.Errorf("run %d saw the previous run's change: %d", runs, x.TokenVersion)
		}
		x.TokenVersion++
		return nil
	})
	if err != nil || runs != 2 || got.TokenVersion != 1 {
		t.Errorf("UpdateUser: %+v, %v after %d runs", got, err, runs)
	}
}

func TestNamesShareAndPrivateDoesNot(t *testing.T) {
	ctx := t.Context()
	a, b, other, private := Open("shared", Options{}), Open("shared", Options{}), Open("other", Options{}), Open("", Options{})
	defer other.Close()
	defer private.Close()
	if err := a.CreateUser(ctx, &store.User{Username: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetUserByName(ctx, "x"); err != nil {
		t.Errorf("same name: %v", err)
	}
	for _, s := range []*Store{other, private, Open("", Options{})} {
		if _, err := s.GetUserByName(ctx, "x"); err == nil {
			t.Errorf("%s sees another state's user", s)
		}
	}
	// The state lives while a handle is open, and goes with the last one.
	a.Close()
	if _, err := b.GetUserByName(ctx, "x"); err != nil {
		t.Errorf("after closing one of two handles: %v", err)
	}
	b.Close()
	c := Open("shared", Options{})
	defer c.Close()
	if _, err := c.GetUserByName(ctx, "x"); err == nil {
		t.Error("the state outlived its last handle")
	}
}

// TestExportAcrossBackends moves a database from bolt to memory and back
// through the export format: users and secrets arrive as they were, and a
// token issued before the export verifies against the imported secret and
// still matches the user's token_version.
func TestExportAcrossBackends(t *testing.T) {
	ctx := t.Context()
	src, err := bolt.Open(filepath.Join(t.TempDir(), "src.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	u := &store.User{Username: "Alice", PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g", AllowedScopes: []string{"me:read"}}
	if err := src.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Revoke(ctx, src, u.ID); err != nil {
		t.Fatal(err)
	}
	if err := src.CreateUser(ctx, &store.User{Username: "bob", AllowedScopes: []string{}, Disabled: true}); err != nil {
		t.Fatal(err)
	}
	// A session rotated a few times: its generation comes along, so its
	// refresh token keeps working after the move.
	sess := &store.Session{UserID: u.ID, Scopes: []string{"me:read"}, Generation: 1, ExpiresAt: time.Now().Add(time.Hour),
		UserAgent: "Mozilla/5.0", Address: "192.0.2.7"}
	if _, err := src.CreateSession(ctx, sess, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := src.UpdateSession(ctx, u.ID, sess.ID, func(x *store.Session) error { x.Generation += 3; return nil }); err != nil {
		t.Fatal(err)
	}
	key, err := src.Secret(ctx, "hs256", func() ([]byte, error) { return bytes.Repeat([]byte{0xa5, 0x00, 0x7f}, 11), nil })
	if err != nil {
		t.Fatal(err)
	}
	issuer := func(key []byte) *token.Manager {
		m, err := token.New(token.Config{Key: key, Issuer: "iss", Audience: "aud"})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	st, err := src.AuthState(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := issuer(key).IssueAccess(token.Subject{UserID: u.ID, TokenVersion: st.TokenVersion})
	if err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	if err := store.Export(ctx, src, &buf); err != nil {
		t.Fatal(err)
	}
	mem := Open("", Options{})
	defer mem.Close()
	if _, err := store.Import(ctx, mem, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	storetest.SameContent(t, src, mem)
	if got, err := mem.GetSession(ctx, u.ID, sess.ID); err != nil || got.Generation != 4 {
		t.Errorf("imported session = %+v, %v; want generation 4", got, err)
	}

	key2, err := mem.Secret(ctx, "hs256", nil)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := issuer(key2).VerifyAccess(tok)
	if err != nil {
		t.Fatalf("a token issued before the export does not verify with the imported secret: %v", err)
	}
	st2, err := mem.AuthState(ctx, claims.UserID)
	if err != nil || st2.TokenVersion != claims.TokenVersion {
		t.Errorf("imported AuthState %+v, %v; the token carries version %d", st2, err, claims.TokenVersion)
	}

	// And back into a new bolt file.
	buf.Reset()
	if err := store.Export(ctx, mem, &buf); err != nil {
		t.Fatal(err)
	}
	dst, err := bolt.Open(filepath.Join(t.TempDir(), "dst.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := store.Import(ctx, dst, &buf); err != nil {
		t.Fatal(err)
	}
	storetest.SameContent(t, src, dst)
	if err := dst.Check(); err != nil {
		t.Errorf("imported bolt file: %v", err)
	}
}
