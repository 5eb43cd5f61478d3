package bolt

import (
	"encoding/json"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// userRecord is a user as the users bucket holds it: JSON under these
// names, the layout of every schema version so far. It is this package's
// own type so that store.User can change without changing the file;
// TestUserRecordFormat pins the bytes.
type userRecord struct {
	ID                string    `json:"id"`
	Username          string    `json:"username"`
	PasswordHash      string    `json:"password_hash"`
	Disabled          bool      `json:"disabled"`
	AllowedScopes     []string  `json:"allowed_scopes"`
	TokenVersion      uint64    `json:"token_version"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
	PasswordChangedAt time.Time `json:"password_changed_at"`
}

func encodeUser(u *store.User) ([]byte, error) {
	return json.Marshal(userRecord{
		ID: u.ID, Username: u.Username, PasswordHash: u.PasswordHash,
		Disabled: u.Disabled, AllowedScopes: u.AllowedScopes, TokenVersion: u.TokenVersion,
		CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, PasswordChangedAt: u.PasswordChangedAt,
	})
}

// decodeUser decodes a users-bucket value. Decoding copies out of data, so
// the result outlives the transaction data came from.
func decodeUser(data []byte) (*store.User, error) {
	var r userRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return &store.User{
		ID: r.ID, Username: r.Username, PasswordHash: r.PasswordHash,
		Disabled: r.Disabled, AllowedScopes: r.AllowedScopes, TokenVersion: r.TokenVersion,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, PasswordChangedAt: r.PasswordChangedAt,
	}, nil
}

// sessionRecord is a session as the sessions bucket holds it (see
// sessions.go for the key). Like userRecord it is this package's own type,
// so that store.Session can change without changing the file;
// TestSessionRecordFormat pins the bytes.
type sessionRecord struct {
	ID         string    `json:"id"`
	UserID     string    `json:"user_id"`
	Scopes     []string  `json:"scopes"`
	Generation uint64    `json:"generation"`
	RotatedAt  time.Time `json:"rotated_at"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	UserAgent  string    `json:"user_agent"`
	Address    string    `json:"address"`
}

func encodeSession(s *store.Session) ([]byte, error) {
	return json.Marshal(sessionRecord{
		ID: s.ID, UserID: s.UserID, Scopes: s.Scopes, Generation: s.Generation,
		RotatedAt: s.RotatedAt, CreatedAt: s.CreatedAt, LastUsedAt: s.LastUsedAt, ExpiresAt: s.ExpiresAt,
		UserAgent: s.UserAgent, Address: s.Address,
	})
}

// decodeSession decodes a sessions-bucket value; the result shares no
// memory with data.
func decodeSession(data []byte) (*store.Session, error) {
	var r sessionRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return &store.Session{
		ID: r.ID, UserID: r.UserID, Scopes: r.Scopes, Generation: r.Generation,
		RotatedAt: r.RotatedAt, CreatedAt: r.CreatedAt, LastUsedAt: r.LastUsedAt, ExpiresAt: r.ExpiresAt,
		UserAgent: r.UserAgent, Address: r.Address,
	}, nil
}
