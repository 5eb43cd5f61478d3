package users

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/keys"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// TestKeyOperations runs list, rotate and retire as a running gateway's
// realm sees them ("online": EdDSA, a 10m publish delay, tokens of 2h), as
// the CLI sees a store it opened itself ("offline": nothing known), and on
// an HS256 realm, one step after another on one store, with a clock.
func TestKeyOperations(t *testing.T) {
	ctx := context.Background()
	st := newTestStore(t)
	t0 := time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	svcs := map[string]*Service{
		"online":  New(st, Settings{Hasher: testHasher(), Keys: KeySettings{Alg: store.AlgEdDSA, PublishDelay: 10 * time.Minute, TokenLifetime: 2 * time.Hour}}),
		"offline": New(st, Settings{Hasher: testHasher()}),
		"hs256":   New(st, Settings{Hasher: testHasher(), Keys: KeySettings{Alg: "HS256", PublishDelay: time.Hour, TokenLifetime: time.Hour}}),
	}
	for _, s := range svcs {
		s.now = clock
	}
	first, err := keys.Ensure(ctx, st, store.AlgEdDSA, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{"A": first.Keys[0].ID} // the keys by the letter the steps give them
	expand := func(s string) string {
		for k, v := range ids {
			s = strings.ReplaceAll(s, "{"+k+"}", v)
		}
		return s
	}
	// states renders a list as "A:signing B:pending", each key by its
	// letter (or its alg when it has none).
	letter := func(id string) string {
		for k, v := range ids {
			if v == id {
				return k
			}
		}
		return "?"
	}
	states := func(l KeyList) string {
		var out []string
		for _, k := range l.Keys {
			out = append(out, letter(k.ID)+":"+k.State)
		}
		return strings.Join(out, " ")
	}
	var answers []any // every answer, checked for private key material at the end

	for _, tc := range []struct {
		at       time.Duration // the clock, after t0
		svc, op  string        // op: list, rotate, retire
		alg, arg string        // list: alg and token lifetime; rotate: alg and delay; retire: the key's letter or a kid
		name     string        // rotate: the letter the new key gets; retire: the replacement's
		kind     Kind
		err      []string // the error holds each; nil: success
		want     string   // list: states; rotate: "previous>new state"; retire: "state already? replacement signer"
		note     string   // held by the answer's note ("" : no note)
		check    func(t *testing.T, v any)
	}{
		{svc: "offline", op: "list", want: "A:signing", check: func(t *testing.T, v any) {
			l := v.(KeyList)
			if l.TokenLifetime != "720h0m0s" || l.TokenLifetimeFrom != LifetimeDefault || l.SigningAlg != "" {
				t.Errorf("offline list: lifetime %s from %s, alg %q", l.TokenLifetime, l.TokenLifetimeFrom, l.SigningAlg)
			}
			k := l.Keys[0]
			if k.Alg != "EdDSA" || !k.CreatedAt.Equal(t0) || !k.SignFrom.Equal(t0) || !k.SignedUntil.IsZero() || !k.VerifyUntil.IsZero() {
				t.Errorf("key %+v", k)
			}
		}},
		{svc: "offline", op: "list", arg: "90m", want: "A:signing", check: func(t *testing.T, v any) {
			if l := v.(KeyList); l.TokenLifetime != "1h30m0s" || l.TokenLifetimeFrom != LifetimeRequest {
				t.Errorf("lifetime %s from %s", l.TokenLifetime, l.TokenLifetimeFrom)
			}
		}},
		{svc: "online", op: "list", want: "A:signing", check: func(t *testing.T, v any) {
			if l := v.(KeyList); l.TokenLifetime != "2h0m0s" || l.TokenLifetimeFrom != LifetimeRealm || l.SigningAlg != "EdDSA" {
				t.Errorf("online list: lifetime %s from %s, alg %q", l.TokenLifetime, l.TokenLifetimeFrom, l.SigningAlg)
			}
		}},
		{svc: "offline", op: "list", arg: "-1h", kind: Invalid, err: []string{`token lifetime "-1h" is not a positive duration`}},
		{svc: "offline", op: "list", arg: "soon", kind: Invalid, err: []string{`token lifetime "soon"`}},
		{svc: "offline", op: "list", alg: "RS256", kind: Invalid, err: []string{`unknown signing algorithm "RS256": want EdDSA or ES256`}},
		{svc: "offline", op: "list", alg: "HS256", want: "", note: "signing_alg HS256 signs with one secret"},
		{svc: "hs256", op: "list", want: "", note: "there is no key set"},
		{svc: "hs256", op: "rotate", kind: Invalid, err: []string{"nothing to rotate: signing_alg HS256"}},
		{svc: "hs256", op: "retire", arg: "A", kind: Invalid, err: []string{"nothing to retire: signing_alg HS256"}},
		{svc: "offline", op: "rotate", alg: "HS256", kind: Invalid, err: []string{"nothing to rotate"}},
		{svc: "online", op: "rotate", alg: "ES256", kind: Invalid, err: []string{"the realm signs with EdDSA: a new ES256 key would never sign there"}},
		{svc: "offline", op: "rotate", arg: "-1s", kind: Invalid, err: []string{`publish delay "-1s"`}},
		{svc: "offline", op: "rotate", alg: "ES256", kind: Invalid, err: []string{"no ES256 key signs in the store"}},

		// Online: the realm's delay. (Keys are created a moment apart: the
		// creation order decides which key is newest.)
		{at: time.Minute, svc: "online", op: "rotate", name: "B", want: "A>pending", check: func(t *testing.T, v any) {
			if k := v.(KeyRotateResult).Key; !k.SignFrom.Equal(t0.Add(11*time.Minute)) || !k.CreatedAt.Equal(t0.Add(time.Minute)) || k.Alg != "EdDSA" {
				t.Errorf("new key %+v", k)
			}
		}},
		{at: 2 * time.Minute, svc: "online", op: "rotate", kind: Conflict, err: []string{"a rotation is already pending: key {B} signs from 2030-01-02T03:11:00Z", "rotate again once it signs"}},
		{at: 2 * time.Minute, svc: "offline", op: "rotate", kind: Conflict, err: []string{"already pending"}},
		{at: 2 * time.Minute, svc: "online", op: "list", want: "A:signing B:pending", check: func(t *testing.T, v any) {
			a := v.(KeyList).Keys[0]
			if !a.SignedUntil.Equal(t0.Add(11*time.Minute)) || !a.VerifyUntil.Equal(t0.Add(2*time.Hour+11*time.Minute)) {
				t.Errorf("old key %+v: want signed until 03:11, verified until 05:11", a)
			}
		}},
		// Past the delay, a shorter one than the realm's is noted.
		{at: 12 * time.Minute, svc: "online", op: "rotate", arg: "1m", name: "C", want: "B>pending", note: "shorter than the realm's key_publish_delay 10m0s"},
		{at: 12 * time.Minute, svc: "online", op: "list", want: "A:verifying B:signing C:pending"},
		{at: 12 * time.Minute, svc: "offline", op: "list", arg: "1m", want: "A:expired B:signing C:pending"},

		{at: 12*time.Minute + 30*time.Second, svc: "online", op: "retire", arg: "", kind: Invalid, err: []string{"key id is empty"}},
		{at: 12*time.Minute + 30*time.Second, svc: "online", op: "retire", arg: "nokey", kind: NotFound, err: []string{`no signing key "nokey"`}},
		// The signing key, with the next one still pending: a replacement
		// signs at once.
		{at: 12*time.Minute + 30*time.Second, svc: "online", op: "retire", arg: "B", name: "R", want: "retired new R R", check: func(t *testing.T, v any) {
			r := v.(KeyRetireResult)
			at := t0.Add(12*time.Minute + 30*time.Second)
			if !r.Key.RetiredAt.Equal(at) || r.Replacement.State != "signing" || !r.Replacement.SignFrom.Equal(at) {
				t.Errorf("retire: %+v, replacement %+v", r.Key, r.Replacement)
			}
		}},
		{at: 13 * time.Minute, svc: "offline", op: "retire", arg: "B", want: "retired already - R", check: func(t *testing.T, v any) {
			if r := v.(KeyRetireResult); !r.Key.RetiredAt.Equal(t0.Add(12*time.Minute + 30*time.Second)) {
				t.Errorf("a second retirement changed the time to %s", r.Key.RetiredAt)
			}
		}},
		{at: 13 * time.Minute, svc: "offline", op: "retire", arg: "A", want: "retired new - R"},
		// C, pending, was overtaken by R before its time came: it never
		// signed, so it is not published (expired at once).
		{at: 13 * time.Minute, svc: "online", op: "list", want: "A:retired B:retired C:expired R:signing"},

		// A second algorithm in the store: offline, rotate needs one named
		// and list shows both; online, the realm's only, with a note.
		{at: 14 * time.Minute, svc: "offline", op: "ensure-es256"},
		{at: 14 * time.Minute, svc: "offline", op: "rotate", kind: Invalid, err: []string{"the store holds keys of ES256 and EdDSA: name the algorithm to rotate"}},
		{at: 14 * time.Minute, svc: "offline", op: "list", want: "E:signing A:retired B:retired C:expired R:signing"},
		{at: 14 * time.Minute, svc: "online", op: "list", want: "A:retired B:retired C:expired R:signing", note: "the store also holds keys of ES256"},
		{at: 14 * time.Minute, svc: "offline", op: "list", alg: "ES256", want: "E:signing", note: "also holds keys of EdDSA"},

		// Offline never prunes; online prunes what the realm's lifetime
		// says is spent.
		{at: 5 * time.Hour, svc: "offline", op: "rotate", alg: "EdDSA", arg: "0s", name: "D", want: "R>signing"},
		{at: 5 * time.Hour, svc: "offline", op: "list", alg: "EdDSA", arg: "2h", want: "A:retired B:retired C:expired R:verifying D:signing", note: "also holds keys of ES256"},
		{at: 5 * time.Hour, svc: "online", op: "rotate", name: "F", want: "D>pending"},
		{at: 5 * time.Hour, svc: "offline", op: "list", want: "E:signing R:verifying D:signing F:pending"},
	} {
		name := tc.svc + " " + tc.op + " " + tc.alg + " " + tc.arg
		t.Run(name, func(t *testing.T) {
			now = t0.Add(tc.at)
			svc := svcs[tc.svc]
			var v any
			var err error
			var note, got string
			switch tc.op {
			case "ensure-es256":
				ks, err := keys.Ensure(ctx, st, store.AlgES256, now, 0)
				if err != nil {
					t.Fatal(err)
				}
				ids["E"] = ks.Keys[len(ks.Keys)-1].ID
				return
			case "list":
				var l KeyList
				l, err = svc.ListKeys(ctx, KeyListRequest{Alg: tc.alg, TokenLifetime: tc.arg})
				v, note, got = l, l.Note, states(l)
			case "rotate":
				var r KeyRotateResult
				r, err = svc.RotateKey(ctx, KeyRotateRequest{Alg: tc.alg, Delay: tc.arg})
				if err == nil {
					ids[tc.name] = r.Key.ID
				}
				v, note, got = r, r.Note, letter(r.Previous)+">"+r.Key.State
			case "retire":
				kid := tc.arg
				if id, ok := ids[kid]; ok {
					kid = id
				}
				var r KeyRetireResult
				r, err = svc.RetireKey(ctx, kid)
				repl := "-"
				if r.Replacement != nil {
					ids[tc.name] = r.Replacement.ID
					repl = letter(r.Replacement.ID)
				}
				already := "new"
				if r.AlreadyRetired {
					already = "already"
				}
				v, got = r, r.Key.State+" "+already+" "+repl+" "+letter(r.Signer)
			}
			if tc.err != nil {
				var msgs []string
				for _, m := range tc.err {
					msgs = append(msgs, expand(m))
				}
				wantErr(t, err, tc.kind, msgs...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			answers = append(answers, v)
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if (tc.note == "") != (note == "") || !strings.Contains(note, tc.note) {
				t.Errorf("note %q, want one holding %q", note, tc.note)
			}
			if tc.check != nil {
				tc.check(t, v)
			}
		})
	}

	// No answer carries a private key, in any encoding JSON would give it.
	b, err := json.Marshal(answers)
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := st.SigningKeys(ctx)
	for _, k := range ks.Keys {
		for _, enc := range privateEncodings(k.Private) {
			if strings.Contains(string(b), enc) {
				t.Errorf("an answer holds the private key of %s", k.ID)
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
