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
