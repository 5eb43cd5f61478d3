package etcd

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// recordVersion is the layout of the records below. A handle refuses a
// record of a later layout instead of misreading it: gateways of two
// versions may share a cluster during an upgrade.
const recordVersion = 1

// userRecord is a user as users/<id> holds it. It is this package's own
// type so that store.User can change without changing what the cluster
// holds; TestRecordFormat pins the bytes.
type userRecord struct {
	V                 int       `json:"v"`
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

func encodeUser(u *store.User) (string, error) {
	b, err := json.Marshal(userRecord{
		V: recordVersion, ID: u.ID, Username: u.Username, PasswordHash: u.PasswordHash,
		Disabled: u.Disabled, AllowedScopes: u.AllowedScopes, TokenVersion: u.TokenVersion,
		CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, PasswordChangedAt: u.PasswordChangedAt,
	})
	return string(b), err
}

func decodeUser(data []byte) (*store.User, error) {
	var r userRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode user record: %w", err)
	}
	if r.V != recordVersion {
		return nil, fmt.Errorf("user record of layout %d, this gateway reads %d", r.V, recordVersion)
	}
	return &store.User{
		ID: r.ID, Username: r.Username, PasswordHash: r.PasswordHash,
		Disabled: r.Disabled, AllowedScopes: r.AllowedScopes, TokenVersion: r.TokenVersion,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, PasswordChangedAt: r.PasswordChangedAt,
	}, nil
}

// sessionRecord is a session as sessions/<userID>/<sid> holds it.
type sessionRecord struct {
	V          int       `json:"v"`
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

func encodeSession(s *store.Session) (string, error) {
	b, err := json.Marshal(sessionRecord{
		V: recordVersion, ID: s.ID, UserID: s.UserID, Scopes: s.Scopes, Generation: s.Generation,
		RotatedAt: s.RotatedAt, CreatedAt: s.CreatedAt, LastUsedAt: s.LastUsedAt, ExpiresAt: s.ExpiresAt,
		UserAgent: s.UserAgent, Address: s.Address,
	})
	return string(b), err
}

func decodeSession(data []byte) (*store.Session, error) {
	var r sessionRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode session record: %w", err)
	}
	if r.V != recordVersion {
		return nil, fmt.Errorf("session record of layout %d, this gateway reads %d", r.V, recordVersion)
	}
	return &store.Session{
		ID: r.ID, UserID: r.UserID, Scopes: r.Scopes, Generation: r.Generation,
		RotatedAt: r.RotatedAt, CreatedAt: r.CreatedAt, LastUsedAt: r.LastUsedAt, ExpiresAt: r.ExpiresAt,
		UserAgent: r.UserAgent, Address: r.Address,
	}, nil
}

// tombstoneRecord marks a deleted user's ID as used for good.
type tombstoneRecord struct {
	V         int       `json:"v"`
	DeletedAt time.Time `json:"deleted_at"`
}

func encodeTombstone(at time.Time) string {
	b, _ := json.Marshal(tombstoneRecord{V: recordVersion, DeletedAt: at})
	return string(b)
}
