package etcd

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdtest"
	"github.com/crudauth/caddy-crudauth/internal/store/storetest"
)

// TestKeySetRecordFormat pins <prefix>keys: gateways of two versions share
// a cluster during an upgrade.
func TestKeySetRecordFormat(t *testing.T) {
	const golden = `{"v":1,"keys":[` +
		`{"id":"k1","alg":"EdDSA","private":"AAEC/w==","created_at":"2026-01-02T03:04:05.000006Z",` +
		`"sign_from":"2026-01-02T03:05:05.000006Z"},` +
		`{"id":"k2","alg":"ES256","private":"Kg==","created_at":"2026-01-01T00:00:00Z",` +
		`"sign_from":"2026-01-01T00:00:00Z","retired_at":"2026-01-03T00:00:00Z"}]}`
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ks := &store.KeySet{Keys: []store.SigningKey{
		{ID: "k1", Alg: store.AlgEdDSA, Private: []byte{0, 1, 2, 0xff}, CreatedAt: at, SignFrom: at.Add(time.Minute)},
		{ID: "k2", Alg: store.AlgES256, Private: []byte("*"), CreatedAt: day, SignFrom: day, RetiredAt: day.Add(48 * time.Hour)},
	}}
	b, err := encodeKeySet(ks)
	if err != nil || b != golden {
		t.Fatalf("encodeKeySet = %s, %v\nwant %s", b, err, golden)
	}
	got, err := decodeKeySet([]byte(golden))
	if err != nil || !got.Equal(ks) {
		t.Fatalf("decodeKeySet(golden) = %+v, %v", got, err)
	}
	if _, err := decodeKeySet([]byte(`{"v":2,"keys":[]}`)); err == nil || !strings.Contains(err.Error(), "layout 2") {
		t.Errorf("decodeKeySet of a later layout: %v", err)
	}
}

// TestKeysFollowWritesInOrder: while A adds keys one at a time, B's
// SigningKeys only ever moves forward (the watch applies the changes in
// revision order), keeps its pointer between changes, and ends with A's
// last set.
func TestKeysFollowWritesInOrder(t *testing.T) {
	endpoints := etcdtest.Start(t)
	prefix := freshPrefix()
	a, b := open(t, endpoints, prefix), open(t, endpoints, prefix)
	ctx := t.Context()
	const n = 30
	done := make(chan struct{})
	var wg sync.WaitGroup
	var problems []string
	reads := 0
	wg.Go(func() {
		var last *store.KeySet
		for {
			select {
			case <-done:
				return
			default:
			}
			ks, err := b.SigningKeys(ctx)
			if err != nil {
				problems = append(problems, err.Error())
				return
			}
			reads++
			if last != nil {
				switch {
				case ks == last:
				case len(ks.Keys) <= len(last.Keys):
					problems = append(problems, fmt.Sprintf("B's set went from %d to %d keys", len(last.Keys), len(ks.Keys)))
				case !(&store.KeySet{Keys: ks.Keys[:len(last.Keys)]}).Equal(last):
					problems = append(problems, "B's set changed a key it held")
				}
			}
			last = ks
			time.Sleep(20 * time.Microsecond)
		}
	})
	var final *store.KeySet
	for i := range n {
		k := storetest.NewSigningKey(t, store.AlgEdDSA, time.Now())
		var err error
		if final, err = a.UpdateSigningKeys(ctx, func(ks *store.KeySet) error {
			ks.Keys = append(ks.Keys, k)
			return nil
		}); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	waitFor(t, 5*time.Second, func() bool {
		ks, err := b.SigningKeys(ctx)
		return err == nil && ks.Equal(final)
	})
	close(done)
	wg.Wait()
	if len(problems) > 0 {
		t.Fatalf("%d problems in %d reads, first: %s", len(problems), reads, problems[0])
	}
	t.Logf("%d reads of B's key set while A added %d keys", reads, n)
	ks, _ := b.SigningKeys(ctx)
	if again, _ := b.SigningKeys(ctx); again != ks {
		t.Error("B's SigningKeys changed its pointer without a change")
	}
}

// TestKeysLaterLayoutNotTrusted: a key set record this gateway cannot read
// (written by a later one) fails SigningKeys and UpdateSigningKeys rather
// than serve a set without the keys it could not read, and AuthState is
// unaffected.
func TestKeysLaterLayoutNotTrusted(t *testing.T) {
	endpoints := etcdtest.Start(t)
	prefix := freshPrefix()
	s := open(t, endpoints, prefix)
	ctx := t.Context()
	u := &store.User{Username: "still"}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Put(ctx, s.keysKey(), `{"v":2,"keys":[]}`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool {
		_, err := s.SigningKeys(ctx)
		return err != nil && strings.Contains(err.Error(), "layout 2")
	})
	ran := false
	if _, err := s.UpdateSigningKeys(ctx, func(*store.KeySet) error { ran = true; return nil }); err == nil || ran {
		t.Errorf("UpdateSigningKeys over a later layout: %v (fn ran: %v)", err, ran)
	}
	if _, err := s.AuthState(ctx, u.ID); err != nil {
		t.Errorf("AuthState: %v", err)
	}
	// A handle opened now loads the same refusal.
	if _, err := open(t, endpoints, prefix).SigningKeys(ctx); err == nil {
		t.Error("a new handle serves a key set it cannot read")
	}
	// Deleting the key is the empty set again.
	if _, err := s.cli.Delete(ctx, s.keysKey()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool {
		ks, err := s.SigningKeys(ctx)
		return err == nil && len(ks.Keys) == 0
	})
}

// keyIDs names a set's keys and whether each is retired, never their
// private halves.
func keyIDs(ks *store.KeySet) string {
	if ks == nil {
		return "no set"
	}
	var b strings.Builder
	for i, k := range ks.Keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s(%s, retired %v)", k.ID, k.Alg, k.Retired())
	}
	return "[" + b.String() + "]"
}
