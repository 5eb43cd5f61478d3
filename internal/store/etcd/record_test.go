package etcd

import (
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// TestRecordFormat pins the bytes of the records the cluster holds:
// gateways of two versions share a cluster during an upgrade, so a change
// here is a change of layout (recordVersion), never an accident of
// store.User or store.Session changing.
func TestRecordFormat(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 1, 2, 3, 4, s, 0, time.UTC) }
	u := &store.User{
		ID: "u1", Username: "Alice", PasswordHash: "$argon2id$x", Disabled: true,
		AllowedScopes: []string{"read", "write"}, TokenVersion: 7,
		CreatedAt: at(1), UpdatedAt: at(2), PasswordChangedAt: at(3),
	}
	const wantUser = `{"v":1,"id":"u1","username":"Alice","password_hash":"$argon2id$x","disabled":true,` +
		`"allowed_scopes":["read","write"],"token_version":7,"created_at":"2026-01-02T03:04:01Z",` +
		`"updated_at":"2026-01-02T03:04:02Z","password_changed_at":"2026-01-02T03:04:03Z"}`
	got, err := encodeUser(u)
	if err != nil {
		t.Fatal(err)
	}
	if got != wantUser {
		t.Errorf("user record:\n got %s\nwant %s", got, wantUser)
	}
	back, err := decodeUser([]byte(wantUser))
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := encodeUser(back); again != wantUser {
		t.Errorf("user record after a round trip:\n got %s\nwant %s", again, wantUser)
	}

	s := &store.Session{
		ID: "s1", UserID: "u1", Scopes: []string{"read"}, Generation: 3,
		RotatedAt: at(4), CreatedAt: at(5), LastUsedAt: at(6), ExpiresAt: at(7),
		UserAgent: "curl/8", Address: "192.0.2.1",
	}
	const wantSession = `{"v":1,"id":"s1","user_id":"u1","scopes":["read"],"generation":3,` +
		`"rotated_at":"2026-01-02T03:04:04Z","created_at":"2026-01-02T03:04:05Z",` +
		`"last_used_at":"2026-01-02T03:04:06Z","expires_at":"2026-01-02T03:04:07Z",` +
		`"user_agent":"curl/8","address":"192.0.2.1"}`
	got, err = encodeSession(s)
	if err != nil {
		t.Fatal(err)
	}
	if got != wantSession {
		t.Errorf("session record:\n got %s\nwant %s", got, wantSession)
	}
	sback, err := decodeSession([]byte(wantSession))
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := encodeSession(sback); again != wantSession {
		t.Errorf("session record after a round trip:\n got %s\nwant %s", again, wantSession)
	}

	// A record of a later layout is refused, not misread.
	if _, err := decodeUser([]byte(`{"v":2,"id":"u1"}`)); err == nil {
		t.Error("user record of layout 2 decoded; want an error")
	}
	if _, err := decodeSession([]byte(`{"v":2,"id":"s1"}`)); err == nil {
		t.Error("session record of layout 2 decoded; want an error")
	}
}
