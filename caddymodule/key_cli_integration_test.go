package caddymodule

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/users"
)

// TestIntegrationKeyCLI: `caddy crudauth key list|rotate|retire` through
// the admin API of a running EdDSA gateway. A rotation publishes the new
// key at once and the old key's tokens keep working; once the new key
// signs, retiring the old one refuses its token on the very next request,
// before the backend sees it. No output holds a private key.
func TestIntegrationKeyCLI(t *testing.T) {
	g := newGateway(t)
	g.load(t, gwConfig{auth: `
		refresh body
		refresh_ttl 3h
		signing_alg EdDSA
		key_publish_delay 2s`})
	g.addUser(t, "alice", nil)
	kidOf := func(tok string) string { return decodeSegment(t, strings.Split(tok, ".")[0])["kid"].(string) }
	before := g.mustLogin(t, "alice", "")
	oldKid := kidOf(before.access)
	var outputs strings.Builder
	run := func(args ...string) cliResult {
		t.Helper()
		c := runCLIAgainst(t, g.db, "", append([]string{"key"}, args...)...)
		outputs.WriteString(c.out + c.errOut)
		if c.err != nil {
			outputs.WriteString(c.err.Error())
		}
		return c
	}
	rotateOK := `crudauth_admin_operations_total{operation="key_rotate",outcome="success"}`
	rotateErr := `crudauth_admin_operations_total{operation="key_rotate",outcome="error"}`
	retireOK := `crudauth_admin_operations_total{operation="key_retire",outcome="success"}`
	metricsBefore := map[string]float64{}
	for _, s := range []string{rotateOK, rotateErr, retireOK} {
		metricsBefore[s] = metricValue(t, s)
	}

	c := run("list").must(t, "key list")
	const ts = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`
	if !regexp.MustCompile(`^KID +ALG +STATE +CREATED +SIGNS_FROM +SIGNED_UNTIL +VERIFY_UNTIL +RETIRED\n` +
		regexp.QuoteMeta(oldKid) + ` +EdDSA +signing +` + ts + ` +` + ts + ` +- +- +-\n` +
		`verify-until is judged with a token lifetime of 3h0m0s, the longest refresh_ttl of the realm's handlers\n$`).MatchString(c.out) {
		t.Errorf("key list:\n%s", c.out)
	}

	// Rotate: the new key is in the JWKS at once, beside the old one.
	c = run("rotate").must(t, "key rotate")
	m := regexp.MustCompile(`^rotated EdDSA: new key ([\w-]{22}) is published now and signs from (` + ts + `) \(in 2s\)\n` +
		`key ` + regexp.QuoteMeta(oldKid) + ` signs until then; its tokens verify until they expire\n$`).FindStringSubmatch(c.out)
	if m == nil {
		t.Fatalf("key rotate:\n%s", c.out)
	}
	newKid := m[1]
	if jwks := g.jwksOf(t); len(jwks) != 2 || jwks[oldKid] == nil || jwks[newKid] == nil {
		t.Fatalf("after the rotation the JWKS holds %v, want %s and %s", jwks, oldKid, newKid)
	}
	c = run("rotate", "--delay", "0s")
	if c.err == nil || !strings.Contains(c.err.Error(), "a rotation is already pending: key "+newKid) {
		t.Errorf("a second rotation: %v", c.err)
	}
	wantStatus(t, g.get(t, "/api", before.access), http.StatusOK)
	g.backend.wantOne(t)

	// Once the new key signs, the old one only verifies.
	time.Sleep(2100 * time.Millisecond)
	after := g.mustLogin(t, "alice", "")
	if kidOf(after.access) != newKid {
		t.Fatalf("after the delay a login was signed by %s, want %s", kidOf(after.access), newKid)
	}
	c = run("list", "--json").must(t, "key list --json")
	var list users.KeyList
	if err := json.Unmarshal([]byte(c.out), &list); err != nil {
		t.Fatalf("key list --json %q: %v", c.out, err)
	}
	if len(list.Keys) != 2 || list.Keys[0].State != "verifying" || list.Keys[1].State != "signing" ||
		!list.Keys[0].VerifyUntil.Equal(list.Keys[0].SignedUntil.Add(3*time.Hour)) || list.TokenLifetimeFrom != users.LifetimeRealm {
		t.Errorf("key list --json: %s", c.out)
	}

	// Retire the old key: its token is refused from the next request on,
	// the backend untouched; the new key's token goes on.
	c = run("retire", oldKid).must(t, "key retire")
	if want := "key " + oldKid + " (EdDSA) retired: every token it signed is refused from the next request on\n" +
		"no replacement needed: key " + newKid + " signs\n"; c.out != want {
		t.Errorf("key retire:\n%s\nwant\n%s", c.out, want)
	}
	wantDenied(t, g.get(t, "/api", before.access), http.StatusUnauthorized, challenge("invalid_token"))
	wantOAuthError(t, g.refreshJSON(t, before.refresh), http.StatusBadRequest, "invalid_grant")
	g.backend.wantNone(t)
	wantStatus(t, g.get(t, "/api", after.access), http.StatusOK)
	g.backend.wantOne(t)
	if jwks := g.jwksOf(t); len(jwks) != 1 || jwks[newKid] == nil {
		t.Errorf("after the retirement the JWKS holds %v, want %s alone", jwks, newKid)
	}

	c = run("retire", oldKid).must(t, "key retire again")
	if !strings.HasPrefix(c.out, "key "+oldKid+" (EdDSA) was already retired at ") {
		t.Errorf("a second retirement: %q", c.out)
	}
	c = run("retire", "nokey")
	if c.err == nil || c.err.Error() != `no signing key "nokey"; 'caddy crudauth key list' shows the keys` {
		t.Errorf("retire of an unknown kid: %v", c.err)
	}

	for s, want := range map[string]float64{rotateOK: 1, rotateErr: 1, retireOK: 2} {
		if got := metricValue(t, s) - metricsBefore[s]; got != want {
			t.Errorf("%s went up by %v, want %v", s, got, want)
		}
	}

	ks, err := g.st.SigningKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks.Keys {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if strings.Contains(outputs.String(), enc.EncodeToString(k.Private)) {
				t.Errorf("a command's output holds the private key of %s", k.ID)
			}
		}
	}
}

// TestIntegrationKeyCLIHS256: on an HS256 gateway the key commands say that
// there is no key set, and refuse to rotate.
func TestIntegrationKeyCLIHS256(t *testing.T) {
	g := newGateway(t)
	g.load(t, gwConfig{auth: "refresh body"})
	c := runCLIAgainst(t, g.db, "", "key", "list").must(t, "key list")
	if want := "note: signing_alg HS256 signs with one secret, never published and never rotated: there is no key set " +
		"(signing_alg EdDSA or ES256 keep published, rotatable keys)\n"; c.out != want {
		t.Errorf("key list on HS256: %q, want %q", c.out, want)
	}
	c = runCLIAgainst(t, g.db, "", "key", "rotate")
	if c.err == nil || !strings.HasPrefix(c.err.Error(), "nothing to rotate: signing_alg HS256") {
		t.Errorf("key rotate on HS256: %v", c.err)
	}
}
