package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/crudauth/caddy-crudauth/internal/keys"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// TestKeyEndpoints: the signing keys are listed, rotated and retired
// through the API with the realm's settings; refusals carry their kind
// and status, changes are logged with the kid and the client's address,
// and no answer or log line carries a private key.
func TestKeyEndpoints(t *testing.T) {
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const name = "admin-keys-test"
	keep := memory.Open(name, memory.Options{}) // the state outlives each request's handle
	defer keep.Close()
	ks, err := keys.Ensure(ctx, keep, store.AlgEdDSA, time.Now().Add(-time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{"old": ks.Keys[0].ID}

	core, logs := observer.New(zapcore.InfoLevel)
	type obs struct{ op, outcome string }
	var seen []obs
	observe := func(op string, err error) {
		outcome := "success"
		if err != nil {
			outcome = "error"
		}
		seen = append(seen, obs{op, outcome})
	}
	realm := users.KeySettings{Alg: store.AlgEdDSA, PublishDelay: 10 * time.Minute, TokenLifetime: 2 * time.Hour}
	eddsa := &Handler{Resolver: namedResolver{name, users.Settings{Hasher: hasher, Keys: realm}}, Logger: zap.New(core), Observe: observe}
	hs256 := &Handler{Resolver: namedResolver{name, users.Settings{Hasher: hasher, Keys: users.KeySettings{Alg: "HS256"}}},
		Logger: zap.New(core), Observe: observe}
	var bodies strings.Builder
	// Each step runs on the state the steps before it left.
	for _, tc := range []struct {
		h            *Handler
		method, path string // {old} and {new} stand for key IDs
		body         string
		status       int
		want         string // contained in the answer
		op, outcome  string // "" : not observed (refused before the operation)
	}{
		{eddsa, "GET", "/crudauth/keys", "", 200, `"signing_alg":"EdDSA","token_lifetime":"2h0m0s","token_lifetime_from":"realm","keys":[{"kid":"{old}","alg":"EdDSA","state":"signing"`, "key_list", "success"},
		{eddsa, "GET", "/crudauth/keys?token_lifetime=1h", "", 200, `"token_lifetime":"1h0m0s","token_lifetime_from":"request"`, "key_list", "success"},
		{eddsa, "GET", "/crudauth/keys?alg=RS256", "", 400, `{"error":"unknown signing algorithm \"RS256\": want EdDSA or ES256","kind":"invalid"}`, "key_list", "error"},
		{eddsa, "POST", "/crudauth/keys/rotate", `{"alg":"ES256"}`, 400, `a new ES256 key would never sign there","kind":"invalid"`, "key_rotate", "error"},
		{eddsa, "POST", "/crudauth/keys/rotate", `{"delay":"soon"}`, 400, `publish delay \"soon\"`, "key_rotate", "error"},
		{eddsa, "POST", "/crudauth/keys/rotate", `{"delay":`, 400, `the body is not the expected JSON`, "", ""},
		{eddsa, "POST", "/crudauth/keys/rotate", ``, 200, `"state":"pending"`, "key_rotate", "success"},
		{eddsa, "POST", "/crudauth/keys/rotate", `{}`, 409, `a rotation is already pending: key {new} signs from`, "key_rotate", "error"},
		{eddsa, "GET", "/crudauth/keys", "", 200, `{"kid":"{new}","alg":"EdDSA","state":"pending"`, "key_list", "success"},
		{eddsa, "GET", "/crudauth/keys/rotate", "", 405, `method not allowed; use POST`, "", ""},
		{eddsa, "GET", "/crudauth/keys/{old}/retire", "", 405, `method not allowed; use POST`, "", ""},
		{eddsa, "POST", "/crudauth/keys/{old}/destroy", "", 404, `unknown action \"destroy\"`, "", ""},
		{eddsa, "DELETE", "/crudauth/keys/{old}", "", 404, `unknown endpoint`, "", ""},
		{eddsa, "POST", "/crudauth/keys/nokey/retire", "", 404, `{"error":"no signing key \"nokey\"","kind":"not_found"}`, "key_retire", "error"},
		{hs256, "GET", "/crudauth/keys", "", 200, `"signing_alg":"HS256","token_lifetime":"720h0m0s","token_lifetime_from":"default","note":"signing_alg HS256 signs with one secret`, "key_list", "success"},
		{hs256, "POST", "/crudauth/keys/rotate", "", 400, `nothing to rotate: signing_alg HS256`, "key_rotate", "error"},
		{hs256, "POST", "/crudauth/keys/{old}/retire", "", 400, `nothing to retire`, "key_retire", "error"},
		// The old key signs (the new one is pending): retiring it adds a
		// replacement that signs at once.
		{eddsa, "POST", "/crudauth/keys/{old}/retire", "", 200, `"replacement":{"kid":"`, "key_retire", "success"},
		{eddsa, "POST", "/crudauth/keys/{old}/retire", "", 200, `"already_retired":true`, "key_retire", "success"},
		{eddsa, "GET", "/crudauth/keys", "", 200, `{"kid":"{old}","alg":"EdDSA","state":"retired"`, "key_list", "success"},
	} {
		expand := func(s string) string {
			for k, v := range ids {
				s = strings.ReplaceAll(s, "{"+k+"}", v)
			}
			return s
		}
		t.Run(tc.method+" "+tc.path+" "+tc.body, func(t *testing.T) {
			seen = nil
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tc.method, expand(tc.path), strings.NewReader(tc.body))
			tc.h.ServeHTTP(rec, req)
			bodies.WriteString(rec.Body.String())
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), expand(tc.want)) {
				t.Fatalf("%d %s; want %d with %s", rec.Code, rec.Body, tc.status, expand(tc.want))
			}
			if tc.op == "" && len(seen) != 0 || tc.op != "" && (len(seen) != 1 || seen[0] != (obs{tc.op, tc.outcome})) {
				t.Errorf("observed %v; want %q %q", seen, tc.op, tc.outcome)
			}
			if tc.method == "POST" && tc.path == "/crudauth/keys/rotate" && rec.Code == 200 {
				var res users.KeyRotateResult
				if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
					t.Fatal(err)
				}
				ids["new"] = res.Key.ID
				if res.Previous != ids["old"] || !res.Key.SignFrom.Equal(res.Key.CreatedAt.Add(10*time.Minute)) {
					t.Errorf("rotation %+v: want the realm's 10m delay after %s", res, ids["old"])
				}
			}
		})
	}

	rotated := logs.FilterMessage("signing key rotated").All()
	retired := logs.FilterMessage("signing key retired").All()
	again := logs.FilterMessage("signing key already retired").All()
	if len(rotated) != 1 || len(retired) != 1 || len(again) != 1 {
		t.Fatalf("log: %d rotated, %d retired, %d already retired: %v", len(rotated), len(retired), len(again), logs.All())
	}
	if f := rotated[0].ContextMap(); rotated[0].Level != zapcore.InfoLevel || f["kid"] != ids["new"] || f["previous_kid"] != ids["old"] ||
		f["client_ip"] != "192.0.2.1" || f["db"] != "memory:"+name {
		t.Errorf("rotation logged at %s with %v", rotated[0].Level, f)
	}
	if f := retired[0].ContextMap(); retired[0].Level != zapcore.WarnLevel || f["kid"] != ids["old"] || f["replacement_kid"] == "" ||
		f["signer_kid"] != f["replacement_kid"] || f["client_ip"] != "192.0.2.1" {
		t.Errorf("retirement logged at %s with %v", retired[0].Level, f)
	}

	// A refused key operation is logged with the key it named, not as a
	// user's.
	for _, e := range logs.FilterMessage("admin operation failed").All() {
		f := e.ContextMap()
		if _, ok := f["username"]; ok || f["operation"] == "key_retire" && f["kid"] != "nokey" && f["kid"] != ids["old"] {
			t.Errorf("refusal logged with %v", f)
		}
	}
	if n := logs.FilterMessage("admin operation failed").FilterField(zap.String("kid", "nokey")).Len(); n != 1 {
		t.Errorf("%d refusals logged with kid nokey, want 1", n)
	}

	// No answer and no log line holds a private key.
	var logText strings.Builder
	for _, e := range logs.All() {
		b, _ := json.Marshal(e.ContextMap())
		logText.WriteString(e.Message)
		logText.Write(b)
	}
	final, err := keep.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(final.Keys) != 3 {
		t.Fatalf("%d keys in the store, want the old, the new and the replacement", len(final.Keys))
	}
	for _, k := range final.Keys {
		for _, enc := range privateEncodings(k.Private) {
			if strings.Contains(bodies.String(), enc) || strings.Contains(logText.String(), enc) {
				t.Errorf("the private key of %s appears in an answer or a log line", k.ID)
			}
		}
	}
}

// privateEncodings are the forms a private key could take in an answer:
// its DER bytes in each base64 alphabet, padded or not.
func privateEncodings(der []byte) []string {
	return []string{base64.StdEncoding.EncodeToString(der), base64.RawStdEncoding.EncodeToString(der),
		base64.URLEncoding.EncodeToString(der), base64.RawURLEncoding.EncodeToString(der), string(der)}
}
