package caddymodule

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

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

	measure := func(user string) time.Duration { return g.timeFailedLogin(t, user) }
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
