package caddymodule

import (
	"strings"
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// TestParseImportCSVBadQuote: a malformed CSV line is an error that names
// its line, not a panic.
func TestParseImportCSVBadQuote(t *testing.T) {
	data := "username,password_hash\n" + `al"ice,$2b$10$x` + "\n"
	_, err := parseImport([]byte(data), formatCSV)
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "nothing imported") {
		t.Fatalf("bad quote: %v", err)
	}
}

// TestDisableBumpsEpoch: enabling a user again must not revive the tokens
// issued before the user was disabled.
func TestDisableBumpsEpoch(t *testing.T) {
	u := testUserForActions()
	if err := userActions["disable"](u); err != nil {
		t.Fatal(err)
	}
	if err := userActions["enable"](u); err != nil {
		t.Fatal(err)
	}
	if u.Disabled || u.TokenVersion != 1 {
		t.Fatalf("after disable+enable: disabled=%v token_version=%d, want false and 1", u.Disabled, u.TokenVersion)
	}
}

func testUserForActions() *store.User { return &store.User{ID: "u1", Username: "alice"} }
