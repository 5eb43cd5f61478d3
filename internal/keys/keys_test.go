package keys

import (
	"context"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const life = 24 * time.Hour

func key(id string, created, signFrom time.Time) store.SigningKey {
	return store.SigningKey{ID: id, Alg: store.AlgEdDSA, Private: []byte("x"), CreatedAt: created, SignFrom: signFrom}
}

func TestDescribe(t *testing.T) {
	h := time.Hour
	a := key("a", t0, t0)
	b := key("b", t0.Add(10*h), t0.Add(11*h))   // rotation with a 1h delay
	retired := key("r", t0.Add(h), t0.Add(5*h)) // retired before it signed
	retired.RetiredAt = t0.Add(2 * h)
	es := key("es", t0, t0)
	es.Alg = store.AlgES256
	set := &store.KeySet{Keys: []store.SigningKey{b, retired, a, es}}
	cases := []struct {
		at   time.Time
		want map[string]State
	}{
		{t0, map[string]State{"a": Signing, "r": Pending, "b": Pending}},
		{t0.Add(3 * h), map[string]State{"a": Signing, "r": Retired, "b": Pending}},
		{t0.Add(10*h + 30*time.Minute), map[string]State{"a": Signing, "r": Retired, "b": Pending}},
		{t0.Add(11 * h), map[string]State{"a": Verifying, "r": Retired, "b": Signing}},
		{t0.Add(11*h + life - time.Second), map[string]State{"a": Verifying, "r": Retired, "b": Signing}},
		{t0.Add(11*h + life), map[string]State{"a": Expired, "r": Retired, "b": Signing}},
	}
	for _, c := range cases {
		sts := Describe(set, store.AlgEdDSA, c.at, life)
		if len(sts) != 3 {
			t.Fatalf("at %v: %d keys, want the 3 EdDSA ones", c.at, len(sts))
		}
		for _, s := range sts {
			if c.at.Equal(t0) && s.ID == "r" {
				// r is retired whatever the time: RetiredAt is set.
				if s.State != Retired {
					t.Fatalf("at %v: r is %s", c.at, s.State)
				}
				continue
			}
			if s.State != c.want[s.ID] {
				t.Errorf("at %v: %s is %s, want %s", c.at.Sub(t0), s.ID, s.State, c.want[s.ID])
			}
		}
	}
	// a's window: signed until b signs, verified for life after.
	sts := Describe(set, store.AlgEdDSA, t0.Add(12*h), life)
	if s := sts[0]; s.ID != "a" || !s.SignedUntil.Equal(t0.Add(11*h)) || !s.VerifyUntil.Equal(t0.Add(11*h+life)) {
		t.Fatalf("a = %+v", s)
	}

	// A key retired after it started signing did take over: its
	// predecessor never signs again, and nothing signs until a new key
	// is added (Retire adds one in the same write).
	took := key("t", t0.Add(h), t0.Add(h))
	took.RetiredAt = t0.Add(2 * h)
	sts = Describe(&store.KeySet{Keys: []store.SigningKey{a, took}}, store.AlgEdDSA, t0.Add(3*h), life)
	if sts[0].State != Verifying || !sts[0].SignedUntil.Equal(t0.Add(h)) || sts[1].State != Retired || signer(sts) != nil {
		t.Fatalf("after the signer was retired: %+v", sts)
	}
}

// TestDescribeNewestWins: a replacement added by a retirement signs at
// once, even within the same second as the key it replaces, and even
// while an older rotation is still pending (that key then never signs).
func TestDescribeNewestWins(t *testing.T) {
	ms := time.Millisecond
	a := key("z-old", t0, t0)
	a.RetiredAt = t0.Add(ms)
	pending := key("p", t0, t0.Add(time.Hour)) // created with a, after it by ID order only
	pending.CreatedAt = t0.Add(ms / 2)
	repl := key("a-repl", t0.Add(2*ms), t0.Add(2*ms)) // sorts first by ID, last by creation
	sts := Describe(&store.KeySet{Keys: []store.SigningKey{repl, pending, a}}, store.AlgEdDSA, t0.Add(3*ms), life)
	got := map[string]State{}
	for _, s := range sts {
		got[s.ID] = s.State
	}
	// p never signed: overtaken before its time, it is not published.
	want := map[string]State{"z-old": Retired, "p": Expired, "a-repl": Signing}
	for id, st := range want {
		if got[id] != st {
			t.Errorf("%s is %s, want %s", id, got[id], st)
		}
	}
	// Two hours on, the pending key's time came, but it was overtaken.
	if s := signer(Describe(&store.KeySet{Keys: []store.SigningKey{repl, pending, a}}, store.AlgEdDSA, t0.Add(2*time.Hour), life)); s == nil || s.ID != "a-repl" {
		t.Fatalf("signer later: %+v", s)
	}
}

func TestEnsureCreatesOnce(t *testing.T) {
	st := memory.Open("", memory.Options{RerunUpdates: true})
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := Ensure(ctx, st, store.AlgEdDSA, t0, life); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	ks, _ := st.SigningKeys(ctx)
	if len(ks.Keys) != 1 || ks.Keys[0].Alg != store.AlgEdDSA || !ks.Keys[0].SignFrom.Equal(t0) {
		t.Fatalf("keys after 10 concurrent Ensure: %+v", ks.Keys)
	}
	// Another algorithm gets its own key; the first stays.
	if _, err := Ensure(ctx, st, store.AlgES256, t0, life); err != nil {
		t.Fatal(err)
	}
	ks2, _ := st.SigningKeys(ctx)
	if len(ks2.Keys) != 2 {
		t.Fatalf("keys: %d, want 2", len(ks2.Keys))
	}
	// Nothing to do: no write, the same set.
	ks3, err := Ensure(ctx, st, store.AlgES256, t0.Add(time.Hour), life)
	if err != nil || ks3 != ks2 {
		t.Fatalf("Ensure with a signer wrote: %v", err)
	}
	if _, err := Ensure(ctx, st, token.AlgHS256, t0, life); err == nil {
		t.Fatal("Ensure(HS256) accepted")
	}
}

func TestRotateAndRetire(t *testing.T) {
	st := memory.Open("", memory.Options{})
	ctx := context.Background()
	ks, err := Ensure(ctx, st, store.AlgEdDSA, t0, life)
	if err != nil {
		t.Fatal(err)
	}
	first := ks.Keys[0].ID
	const delay = 10 * time.Minute
	k2, err := Rotate(ctx, st, store.AlgEdDSA, t0.Add(time.Hour), delay, life)
	if err != nil {
		t.Fatal(err)
	}
	if !k2.SignFrom.Equal(t0.Add(time.Hour + delay)) {
		t.Fatalf("new key signs from %v", k2.SignFrom)
	}
	if _, err := Rotate(ctx, st, store.AlgEdDSA, t0.Add(time.Hour+time.Minute), delay, life); !errors.Is(err, ErrRotationPending) {
		t.Fatalf("second rotation while pending: %v", err)
	}
	// Once the old key's window is over, the next rotation prunes it.
	later := t0.Add(time.Hour + delay + life + time.Minute)
	k3, err := Rotate(ctx, st, store.AlgEdDSA, later, delay, life)
	if err != nil {
		t.Fatal(err)
	}
	ks, _ = st.SigningKeys(ctx)
	if ks.Key(first) != nil || ks.Key(k2.ID) == nil || ks.Key(k3.ID) == nil {
		t.Fatalf("after pruning: %+v", ks.Keys)
	}
	// Retiring the signer (k2; k3 is still pending) adds a replacement
	// that signs at once.
	retired, repl, err := Retire(ctx, st, k2.ID, later.Add(time.Minute))
	if err != nil || repl == nil || !retired.Retired() || len(retired.Private) != 0 {
		t.Fatalf("Retire = %+v, %+v, %v", retired, repl, err)
	}
	sts := Describe(mustKeys(t, st), store.AlgEdDSA, later.Add(time.Minute), life)
	if s := signer(sts); s == nil || s.ID != repl.ID {
		t.Fatalf("signer after retiring: %+v", s)
	}
	// Retiring a key that does not sign needs no replacement; again is a no-op.
	if _, repl, err := Retire(ctx, st, k3.ID, later.Add(2*time.Minute)); err != nil || repl != nil {
		t.Fatalf("retiring a pending key: %+v, %v", repl, err)
	}
	before := mustKeys(t, st)
	if _, _, err := Retire(ctx, st, k3.ID, later.Add(3*time.Minute)); err != nil || mustKeys(t, st) != before {
		t.Fatalf("retiring again: %v (wrote: %v)", err, mustKeys(t, st) != before)
	}
	if _, _, err := Retire(ctx, st, "nope", later); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("retiring an unknown key: %v", err)
	}
}

func mustKeys(t *testing.T, st store.KeyStore) *store.KeySet {
	t.Helper()
	ks, err := st.SigningKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// TestRingFollowsRotation runs a rotation through a Ring and its Manager:
// the new key is published before it signs, the old one verifies until its
// last token expired and then leaves the JWKS by itself, and a retired key
// is refused on the next call.
func TestRingFollowsRotation(t *testing.T) {
	for _, alg := range []string{store.AlgEdDSA, store.AlgES256} {
		t.Run(alg, func(t *testing.T) {
			ctx := context.Background()
			st := memory.Open("", memory.Options{})
			clk := &clock{t: t0}
			const ttl = time.Hour
			m, err := token.New(token.Config{Alg: alg, Issuer: "i", Audience: "a", AccessTTL: ttl, RefreshTTL: ttl, Now: clk.now})
			if err != nil {
				t.Fatal(err)
			}
			r := NewRing(st, m, ttl, clk.now)
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			first := m.KeyID()
			if first == "" || kids(t, r) != first {
				t.Fatalf("after the first Sync: signer %q, JWKS %q", first, kids(t, r))
			}
			old, _, _ := m.IssueAccess(token.Subject{UserID: "u"})

			clk.advance(time.Minute)
			k2, err := Rotate(ctx, st, alg, clk.now(), 5*time.Minute, ttl)
			if err != nil {
				t.Fatal(err)
			}
			mustSync(t, r)
			if m.KeyID() != first || kids(t, r) != first+","+k2.ID {
				t.Fatalf("pending: signer %q, JWKS %q", m.KeyID(), kids(t, r))
			}
			clk.advance(5 * time.Minute) // k2 signs now: no store change, only time
			mustSync(t, r)
			if m.KeyID() != k2.ID {
				t.Fatalf("after the delay the signer is %q, want %q", m.KeyID(), k2.ID)
			}
			if _, err := m.VerifyAccess(old); err != nil {
				t.Fatalf("the old key's token during the overlap: %v", err)
			}
			clk.advance(ttl) // the old key's last token expired with it
			mustSync(t, r)
			if kids(t, r) != k2.ID {
				t.Fatalf("after the overlap the JWKS holds %q", kids(t, r))
			}
			fresh, _, _ := m.IssueAccess(token.Subject{UserID: "u"})
			if _, err := m.VerifyAccess(fresh); err != nil {
				t.Fatal(err)
			}
			if _, repl, err := Retire(ctx, st, k2.ID, clk.now()); err != nil || repl == nil {
				t.Fatalf("Retire: %v, %v", repl, err)
			}
			mustSync(t, r)
			if _, err := m.VerifyAccess(fresh); !errors.Is(err, token.ErrSignature) {
				t.Fatalf("a retired key's token: %v", err)
			}
			if m.KeyID() == k2.ID || kids(t, r) != m.KeyID() {
				t.Fatalf("after retiring: signer %q, JWKS %q", m.KeyID(), kids(t, r))
			}
		})
	}
}

func mustSync(t *testing.T, r *Ring) {
	t.Helper()
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// kids parses the ring's JWKS, checks every key against its private half,
// and returns the kids, comma separated.
func kids(t *testing.T, r *Ring) string {
	t.Helper()
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(r.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	out := ""
	for i, k := range set.Keys {
		if i > 0 {
			out += ","
		}
		out += k["kid"]
		if k["use"] != "sig" || k["d"] != "" {
			t.Fatalf("JWK %v: want use sig and no private member", k)
		}
		checkJWK(t, k)
	}
	return out
}

func checkJWK(t *testing.T, k map[string]string) {
	t.Helper()
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("JWK member %q: %v", s, err)
		}
		return b
	}
	switch k["alg"] {
	case store.AlgEdDSA:
		if k["kty"] != "OKP" || k["crv"] != "Ed25519" || len(dec(k["x"])) != ed25519.PublicKeySize {
			t.Fatalf("EdDSA JWK %v", k)
		}
	case store.AlgES256:
		x, y := dec(k["x"]), dec(k["y"])
		if k["kty"] != "EC" || k["crv"] != "P-256" || len(x) != 32 || len(y) != 32 {
			t.Fatalf("ES256 JWK %v", k)
		}
		if !elliptic.P256().IsOnCurve(new(big.Int).SetBytes(x), new(big.Int).SetBytes(y)) { //nolint:staticcheck // a test's check of a public point
			t.Fatalf("ES256 JWK point not on P-256")
		}
	default:
		t.Fatalf("JWK alg %q", k["alg"])
	}
}
