package bolt

import (
	"slices"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// TestUserRecordFormat pins the users bucket's JSON: files written by every
// earlier build hold exactly this, and store.User has no say in it.
func TestUserRecordFormat(t *testing.T) {
	const golden = `{"id":"uabc","username":"Alice","password_hash":"$argon2id$x","disabled":true,` +
		`"allowed_scopes":["read"],"token_version":7,"created_at":"2024-01-02T03:04:05.000000006Z",` +
		`"updated_at":"2024-02-02T00:00:00Z","password_changed_at":"2024-03-02T00:00:00Z"}`
	u := &store.User{
		ID: "uabc", Username: "Alice", PasswordHash: "$argon2id$x", Disabled: true,
		AllowedScopes: []string{"read"}, TokenVersion: 7,
		CreatedAt:         time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC),
		UpdatedAt:         time.Date(2024, 2, 2, 0, 0, 0, 0, time.UTC),
		PasswordChangedAt: time.Date(2024, 3, 2, 0, 0, 0, 0, time.UTC),
	}
	b, err := encodeUser(u)
	if err != nil || string(b) != golden {
		t.Fatalf("encodeUser = %s, %v\nwant %s", b, err, golden)
	}
	got, err := decodeUser([]byte(golden))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != u.ID || got.Username != u.Username || got.PasswordHash != u.PasswordHash || !got.Disabled ||
		!slices.Equal(got.AllowedScopes, u.AllowedScopes) || got.TokenVersion != 7 ||
		!got.CreatedAt.Equal(u.CreatedAt) || !got.UpdatedAt.Equal(u.UpdatedAt) || !got.PasswordChangedAt.Equal(u.PasswordChangedAt) {
		t.Errorf("decodeUser(golden) = %+v", got)
	}
	// null and [] stay apart: no per-user limit, and no scope at all.
	for in, wantNil := range map[string]bool{`{"allowed_scopes":null}`: true, `{"allowed_scopes":[]}`: false, `{}`: true} {
		got, err := decodeUser([]byte(in))
		if err != nil || (got.AllowedScopes == nil) != wantNil {
			t.Errorf("decodeUser(%s).AllowedScopes = %#v, %v", in, got.AllowedScopes, err)
		}
	}
}
