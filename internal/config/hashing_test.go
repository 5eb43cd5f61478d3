package config

import (
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/password"
)

func TestRealmHashing(t *testing.T) {
	h, err := (&Realm{}).Hashing()
	if err != nil {
		t.Fatal(err)
	}
	if h.Hasher.Params() != password.DefaultParams || h.Limit.Cap() < 1 || h.Policy != (password.Policy{}) {
		t.Errorf("defaults: params %+v, cap %d, policy %+v; want the default parameters, at least one slot, the default policy",
			h.Hasher.Params(), h.Limit.Cap(), h.Policy)
	}

	h, err = (&Realm{Argon2Memory: 65536, Argon2Threads: 2, MaxConcurrentHashes: 3, HashQueueTimeout: time.Second,
		PasswordMinLength: 12, PasswordMaxLength: 128}).Hashing()
	if err != nil {
		t.Fatal(err)
	}
	want := password.DefaultParams
	want.Memory, want.Threads = 65536, 2
	if h.Hasher.Params() != want || h.Limit.Cap() != 3 || h.Policy != (password.Policy{MinLength: 12, MaxLength: 128}) {
		t.Errorf("given: params %+v, cap %d, policy %+v; want the memory and threads given over the defaults, 3 slots, 12 to 128",
			h.Hasher.Params(), h.Limit.Cap(), h.Policy)
	}

	for _, tc := range []struct {
		name string
		r    Realm
		want string
	}{
		{"argon2 memory below the floor", Realm{Argon2Memory: 8192}, "argon2: "},
		{"argon2 time below the floor", Realm{Argon2Time: 1}, "argon2: "},
		{"max length below 64", Realm{PasswordMaxLength: 32}, "password_min_length/password_max_length: "},
		{"min above max", Realm{PasswordMinLength: 100, PasswordMaxLength: 64}, "password_min_length/password_max_length: "},
	} {
		if _, err := tc.r.Hashing(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error starting %q", tc.name, err, tc.want)
		}
	}
}
