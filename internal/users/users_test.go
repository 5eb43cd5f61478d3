package users

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

func TestAdd(t *testing.T) {
	long := strings.Repeat("x", MaxUsernameLen+1)
	for name, tc := range map[string]struct {
		req      AddRequest
		policy   password.Policy
		wantKind Kind // checked when wantMsg is set
		wantMsg  []string
		wantIs   error
		check    func(t *testing.T, v View)
	}{
		"plain": {
			req: AddRequest{Username: "bob", Password: "bob-password"},
			check: func(t *testing.T, v View) {
				if v.Username != "bob" || v.ID == "" || v.AllowedScopes != nil || v.Disabled || v.TokenVersion != 0 || v.HashAlgorithm != password.AlgArgon2id {
					t.Errorf("view %+v", v)
				}
			},
		},
		"scopes normalized": {
			req: AddRequest{Username: "carol", Password: "carol-password", AllowedScopes: []string{"reports:read", "me:read", "me:read", ""}},
			check: func(t *testing.T, v View) {
				if strings.Join(v.AllowedScopes, " ") != "me:read reports:read" {
					t.Errorf("scopes %q", v.AllowedScopes)
				}
			},
		},
		"no scope at all": {
			req: AddRequest{Username: "dave", Password: "dave-password", AllowedScopes: []string{}},
			check: func(t *testing.T, v View) {
				if v.AllowedScopes == nil || len(v.AllowedScopes) != 0 {
					t.Errorf("scopes %#v, want non-nil empty", v.AllowedScopes)
				}
			},
		},
		"disabled": {
			req:   AddRequest{Username: "erin", Password: "erin-password", Disabled: true},
			check: func(t *testing.T, v View) { assertTrue(t, v.Disabled, "disabled") },
		},
		"empty username":   {req: AddRequest{Password: "long-enough"}, wantKind: Invalid, wantMsg: []string{"username is empty"}},
		"control username": {req: AddRequest{Username: "a\x00b", Password: "long-enough"}, wantKind: Invalid, wantMsg: []string{`invalid username "a\x00b": username holds a control character`}},
		"invalid utf-8":    {req: AddRequest{Username: "a\xffb", Password: "long-enough"}, wantKind: Invalid, wantMsg: []string{"not valid UTF-8"}},
		"long username": {
			req: AddRequest{Username: long, Password: "long-enough"}, wantKind: Invalid,
			wantMsg: []string{fmt.Sprintf(`invalid username %q: username longer than 256 bytes`, long[:64]+"...")},
		},
		"bad scope": {
			req: AddRequest{Username: "frank", Password: "long-enough", AllowedScopes: []string{"a b"}}, wantKind: Invalid,
			wantMsg: []string{"allowed_scopes: "}, wantIs: scope.ErrInvalid,
		},
		"taken, other case": {
			req: AddRequest{Username: "ALICE", Password: "long-enough"}, wantKind: Exists,
			wantMsg: []string{`user "ALICE" already exists`}, wantIs: store.ErrExists,
		},
		// Existence is reported whatever the password.
		"taken, bad password": {
			req: AddRequest{Username: "alice", Password: "x"}, wantKind: Exists,
			wantMsg: []string{`user "alice" already exists`},
		},
		"short password": {
			req: AddRequest{Username: "gina", Password: "short"}, wantKind: Invalid,
			wantMsg: []string{"password refused: ", "at least 8"}, wantIs: password.ErrTooShort,
		},
		"empty password": {
			req: AddRequest{Username: "gina", Password: ""}, wantKind: Invalid,
			wantMsg: []string{"password refused: password is empty"}, wantIs: password.ErrEmpty,
		},
		"configured policy": {
			req: AddRequest{Username: "gina", Password: "eleven-char"}, policy: password.Policy{MinLength: 12}, wantKind: Invalid,
			wantMsg: []string{"password refused: ", "at least 12"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			st := newTestStore(t)
			svc := New(st, Settings{Hasher: testHasher(), Policy: tc.policy})
			ctx := context.Background()
			mustAdd(t, svc, "alice")
			v, err := svc.Add(ctx, tc.req)
			if tc.wantMsg != nil {
				wantErr(t, err, tc.wantKind, tc.wantMsg...)
				if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
					t.Errorf("errors.Is(%v, %v) is false", err, tc.wantIs)
				}
				if v.ID != "" {
					t.Errorf("a view with the error: %+v", v)
				}
				if n := countUsers(t, st); n != 1 {
					t.Errorf("%d users after a refused add", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, v)
			u := readUser(t, st, tc.req.Username)
			if ok, _, err := testHasher().Verify(u.PasswordHash, tc.req.Password); !ok || err != nil {
				t.Errorf("stored hash does not verify the password: %v", err)
			}
			if ViewOf(u).ID != v.ID || strings.Join(u.AllowedScopes, " ") != strings.Join(v.AllowedScopes, " ") {
				t.Errorf("stored %+v, returned %+v", u, v)
			}
		})
	}
}

func assertTrue(t *testing.T, ok bool, what string) {
	t.Helper()
	if !ok {
		t.Errorf("%s is false", what)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func countUsers(t *testing.T, st store.Store) int {
	t.Helper()
	n := 0
	if err := st.ListUsers(context.Background(), func(*store.User) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBusy: with every hashing slot taken, adding a user or setting a
// password fails as Busy, changing nothing; a password the policy refuses
// is refused first, without waiting for a slot.
func TestBusy(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	lim := password.NewLimiter(1, 0)
	svc := New(st, Settings{Hasher: testHasher(), Limiter: lim})
	alice := mustAdd(t, svc, "alice")
	release, err := lim.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	_, err = svc.Add(ctx, AddRequest{Username: "bob", Password: "bob-password"})
	wantErr(t, err, Busy, "password hashing is busy, retry shortly")
	if !errors.Is(err, password.ErrBusy) {
		t.Errorf("errors.Is(%v, password.ErrBusy) is false", err)
	}
	_, err = svc.SetPassword(ctx, "alice", "new-alice-password")
	wantErr(t, err, Busy, "password hashing is busy, retry shortly")
	if u := readUser(t, st, "alice"); u.TokenVersion != alice.TokenVersion || countUsers(t, st) != 1 {
		t.Errorf("a busy refusal changed the store: %+v", u)
	}
	_, err = svc.Add(ctx, AddRequest{Username: "bob", Password: "short"})
	wantErr(t, err, Invalid, "password refused")

}

// TestUnknownUser: every operation on a user that does not exist is
// NotFound with the same message, and still errors.Is store.ErrNotFound.
func TestUnknownUser(t *testing.T) {
	svc, _ := newTestService(t)
	ctx := context.Background()
	mustAdd(t, svc, "alice")
	for name, op := range map[string]func() (View, error){
		"get":      func() (View, error) { return svc.Get(ctx, "nobody") },
		"passwd":   func() (View, error) { return svc.SetPassword(ctx, "nobody", "long-enough-password") },
		"revoke":   func() (View, error) { return svc.Revoke(ctx, "nobody") },
		"disable":  func() (View, error) { return svc.Disable(ctx, "nobody") },
		"enable":   func() (View, error) { return svc.Enable(ctx, "nobody") },
		"scopes":   func() (View, error) { return svc.SetScopes(ctx, "nobody", []string{"a"}) },
		"delete":   func() (View, error) { return svc.Delete(ctx, "nobody") },
		"pw short": func() (View, error) { return svc.SetPassword(ctx, "nobody", "x") }, // lookup before policy
	} {
		t.Run(name, func(t *testing.T) {
			_, err := op()
			wantErr(t, err, NotFound, `no user "nobody"`)
			if err.Error() != `no user "nobody"` {
				t.Errorf("message %q", err)
			}
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("errors.Is(%v, store.ErrNotFound) is false", err)
			}
		})
	}
}

// TestChanges pins what each change does to the stored user, above all to
// the token epoch.
func TestChanges(t *testing.T) {
	type want struct {
		epoch    uint64
		disabled bool
		scopes   string // "<nil>" for no per-user limit
	}
	scopesOf := func(s []string) string {
		if s == nil {
			return "<nil>"
		}
		return "[" + strings.Join(s, " ") + "]"
	}
	ctx := context.Background()
	for name, tc := range map[string]struct {
		ops  []func(svc *Service) (View, error)
		want want
	}{
		"revoke": {
			ops:  []func(*Service) (View, error){func(s *Service) (View, error) { return s.Revoke(ctx, "Alice") }},
			want: want{1, false, "<nil>"},
		},
		"revoke twice": {
			ops: []func(*Service) (View, error){
				func(s *Service) (View, error) { return s.Revoke(ctx, "alice") },
				func(s *Service) (View, error) { return s.Revoke(ctx, "alice") },
			},
			want: want{2, false, "<nil>"},
		},
		"disable": {
			ops:  []func(*Service) (View, error){func(s *Service) (View, error) { return s.Disable(ctx, "alice") }},
			want: want{1, true, "<nil>"},
		},
		// Enabling again must not revive the tokens issued before the
		// user was disabled.
		"disable then enable": {
			ops: []func(*Service) (View, error){
				func(s *Service) (View, error) { return s.Disable(ctx, "alice") },
				func(s *Service) (View, error) { return s.Enable(ctx, "alice") },
			},
			want: want{1, false, "<nil>"},
		},
		"enable an enabled user": {
			ops:  []func(*Service) (View, error){func(s *Service) (View, error) { return s.Enable(ctx, "alice") }},
			want: want{0, false, "<nil>"},
		},
		"scopes": {
			ops:  []func(*Service) (View, error){func(s *Service) (View, error) { return s.SetScopes(ctx, "alice", []string{"b", "a", "b"}) }},
			want: want{0, false, "[a b]"},
		},
		"scopes none": {
			ops:  []func(*Service) (View, error){func(s *Service) (View, error) { return s.SetScopes(ctx, "alice", []string{}) }},
			want: want{0, false, "[]"},
		},
		"scopes unrestricted again": {
			ops: []func(*Service) (View, error){
				func(s *Service) (View, error) { return s.SetScopes(ctx, "alice", []string{"a"}) },
				func(s *Service) (View, error) { return s.SetScopes(ctx, "alice", nil) },
			},
			want: want{0, false, "<nil>"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			svc, st := newTestService(t)
			before := readUser(t, st, mustAdd(t, svc, "alice").Username)
			var v View
			for _, op := range tc.ops {
				var err error
				if v, err = op(svc); err != nil {
					t.Fatal(err)
				}
			}
			u := readUser(t, st, "alice")
			got := want{u.TokenVersion, u.Disabled, scopesOf(u.AllowedScopes)}
			if got != tc.want {
				t.Errorf("stored %+v, want %+v", got, tc.want)
			}
			if a, b := jsonOf(t, v), jsonOf(t, ViewOf(u)); a != b {
				t.Errorf("returned %s, stored %s", a, b)
			}
			if u.PasswordHash != before.PasswordHash {
				t.Error("the change touched the password hash")
			}
		})
	}
}

func TestSetScopesInvalid(t *testing.T) {
	svc, st := newTestService(t)
	mustAdd(t, svc, "alice")
	_, err := svc.SetScopes(context.Background(), "alice", []string{"ok", "not ok"})
	wantErr(t, err, Invalid, "allowed_scopes: ")
	if u := readUser(t, st, "alice"); u.AllowedScopes != nil {
		t.Errorf("scopes changed to %q", u.AllowedScopes)
	}
	// Scopes are checked before the user is looked up.
	_, err = svc.SetScopes(context.Background(), "nobody", []string{"not ok"})
	wantErr(t, err, Invalid, "allowed_scopes: ")
}

// TestSetPassword: a new hash, a bumped epoch and the change time, in one
// write; the policy applies.
func TestSetPassword(t *testing.T) {
	svc, st := newTestService(t)
	ctx := context.Background()
	mustAdd(t, svc, "alice")
	before := readUser(t, st, "alice")
	v, err := svc.SetPassword(ctx, "ALICE", "a-new-password")
	if err != nil {
		t.Fatal(err)
	}
	u := readUser(t, st, "alice")
	if ok, _, _ := testHasher().Verify(u.PasswordHash, "a-new-password"); !ok {
		t.Error("the new password does not verify")
	}
	if u.TokenVersion != before.TokenVersion+1 || v.TokenVersion != u.TokenVersion {
		t.Errorf("token_version %d (view %d), want %d", u.TokenVersion, v.TokenVersion, before.TokenVersion+1)
	}
	if !u.PasswordChangedAt.After(before.PasswordChangedAt) || time.Since(u.PasswordChangedAt) > time.Minute {
		t.Errorf("password_changed_at %v", u.PasswordChangedAt)
	}
	_, err = svc.SetPassword(ctx, "alice", "short")
	wantErr(t, err, Invalid, "password refused")
	if readUser(t, st, "alice").TokenVersion != u.TokenVersion {
		t.Error("a refused password bumped the epoch")
	}
}

func TestDeleteGetList(t *testing.T) {
	svc, _ := newTestService(t)
	ctx := context.Background()
	views, err := svc.List(ctx)
	if err != nil || views == nil || len(views) != 0 {
		t.Fatalf("empty list: %#v %v", views, err)
	}
	for _, n := range []string{"carol", "Alice", "bob"} {
		mustAdd(t, svc, n)
	}
	views, err = svc.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range views {
		names = append(names, v.Username)
	}
	if strings.Join(names, " ") != "Alice bob carol" {
		t.Errorf("list order %q", names)
	}
	b, _ := json.Marshal(views)
	if strings.Contains(string(b), "$argon2id$") || strings.Contains(string(b), "password_hash") {
		t.Errorf("the list shows hashes: %s", b)
	}
	got, err := svc.Get(ctx, "BOB")
	if err != nil || got.Username != "bob" || got.HashAlgorithm != password.AlgArgon2id {
		t.Fatalf("get: %+v %v", got, err)
	}
	del, err := svc.Delete(ctx, "bob")
	if err != nil || del.ID != got.ID {
		t.Fatalf("delete: %+v %v", del, err)
	}
	_, err = svc.Get(ctx, "bob")
	wantErr(t, err, NotFound, `no user "bob"`)
	_, err = svc.Delete(ctx, "bob")
	wantErr(t, err, NotFound, `no user "bob"`)
}

// vanishingStore deletes the user just before every write, as a
// concurrent delete between the service's lookup and its write would.
type vanishingStore struct{ store.Store }

func (s vanishingStore) UpdateUser(ctx context.Context, id string, fn func(*store.User) error) (*store.User, error) {
	_ = s.Store.DeleteUser(ctx, id)
	return s.Store.UpdateUser(ctx, id, fn)
}

func (s vanishingStore) DeleteUser(ctx context.Context, id string) error {
	_ = s.Store.DeleteUser(ctx, id)
	return s.Store.DeleteUser(ctx, id)
}

// TestDeletedBetweenLookupAndWrite: a user deleted between the lookup and
// the write is reported as not found, not as an internal error.
func TestDeletedBetweenLookupAndWrite(t *testing.T) {
	ctx := context.Background()
	for name, op := range map[string]func(*Service) (View, error){
		"passwd":  func(s *Service) (View, error) { return s.SetPassword(ctx, "alice", "long-enough-password") },
		"revoke":  func(s *Service) (View, error) { return s.Revoke(ctx, "alice") },
		"disable": func(s *Service) (View, error) { return s.Disable(ctx, "alice") },
		"enable":  func(s *Service) (View, error) { return s.Enable(ctx, "alice") },
		"scopes":  func(s *Service) (View, error) { return s.SetScopes(ctx, "alice", nil) },
		"delete":  func(s *Service) (View, error) { return s.Delete(ctx, "alice") },
	} {
		t.Run(name, func(t *testing.T) {
			svc, st := newTestService(t)
			mustAdd(t, svc, "alice")
			_, err := op(New(vanishingStore{st}, Settings{Hasher: testHasher()}))
			wantErr(t, err, NotFound, `no user "alice"`)
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("errors.Is(%v, store.ErrNotFound) is false", err)
			}
		})
	}
}

var errBoom = errors.New("disk on fire")

// brokenStore fails every call.
type brokenStore struct{ store.Store }

func (brokenStore) GetUserByName(context.Context, string) (*store.User, error) { return nil, errBoom }
func (brokenStore) ListUsers(context.Context, func(*store.User) error) error   { return errBoom }

// TestInternal: a store failure is Internal and keeps its text and its
// identity for errors.Is.
func TestInternal(t *testing.T) {
	ctx := context.Background()
	svc := New(brokenStore{newTestStore(t)}, Settings{Hasher: testHasher()})
	hash, _ := testHasher().Hash("some-password")
	for name, op := range map[string]func() error{
		"get":    func() error { _, err := svc.Get(ctx, "alice"); return err },
		"list":   func() error { _, err := svc.List(ctx); return err },
		"add":    func() error { _, err := svc.Add(ctx, AddRequest{Username: "a", Password: "long-enough"}); return err },
		"revoke": func() error { _, err := svc.Revoke(ctx, "alice"); return err },
		"import": func() error {
			_, err := svc.Import(ctx, []Record{{Line: 1, Username: "a", PasswordHash: hash}})
			return err
		},
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

// TestKindOf: the kind survives wrapping; any other error is Internal.
func TestKindOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Kind
	}{
		{errors.New("x"), Internal},
		{&Error{Kind: Busy, Msg: "b"}, Busy},
		{fmt.Errorf("ctx: %w", &Error{Kind: NotFound, Msg: "n"}), NotFound},
		{&Error{Msg: "zero kind"}, Internal},
	} {
		if got := KindOf(tc.err); got != tc.want {
			t.Errorf("KindOf(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
	names := map[string]bool{}
	for _, k := range []Kind{Internal, Invalid, NotFound, Exists, Busy} {
		names[k.String()] = true
	}
	if len(names) != 5 || !names["not_found"] {
		t.Errorf("kind names %v", names)
	}
	if s := (&Error{Kind: Exists}).Error(); s != "exists" {
		t.Errorf("empty error text %q", s)
	}
}

// TestChangesEndSessions: revoking, setting a password and disabling end
// every session of the user; enabling and changing scopes end none.
func TestChangesEndSessions(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		op    func(svc *Service) (View, error)
		ended bool
	}{
		"revoke":   {func(s *Service) (View, error) { return s.Revoke(ctx, "alice") }, true},
		"password": {func(s *Service) (View, error) { return s.SetPassword(ctx, "alice", "another-password-9") }, true},
		"disable":  {func(s *Service) (View, error) { return s.Disable(ctx, "alice") }, true},
		"enable":   {func(s *Service) (View, error) { return s.Enable(ctx, "alice") }, false},
		"scopes":   {func(s *Service) (View, error) { return s.SetScopes(ctx, "alice", []string{"a"}) }, false},
	} {
		t.Run(name, func(t *testing.T) {
			svc, st := newTestService(t)
			v := mustAdd(t, svc, "alice")
			for range 2 {
				s := &store.Session{UserID: v.ID, Generation: 1, ExpiresAt: time.Now().Add(time.Hour)}
				if _, err := st.CreateSession(ctx, s, 0); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := tc.op(svc); err != nil {
				t.Fatal(err)
			}
			left, err := st.ListSessions(ctx, v.ID, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if ended := len(left) == 0; ended != tc.ended || !tc.ended && len(left) != 2 {
				t.Errorf("%d sessions left, want ended=%v", len(left), tc.ended)
			}
		})
	}
}
