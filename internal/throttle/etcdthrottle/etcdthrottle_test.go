package etcdthrottle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdtest"
	"github.com/crudauth/caddy-crudauth/internal/throttle"
	"github.com/crudauth/caddy-crudauth/internal/throttle/throttletest"
)

var ctx = context.Background()

// client is a fresh client of its own: each one stands for a gateway.
func client(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// gateways returns n Limiters on one prefix, each with its own client, all
// on one fake clock.
func gateways(t *testing.T, endpoints []string, n int, cfg throttle.Config) ([]*Limiter, *throttletest.Clock) {
	t.Helper()
	clk := throttletest.NewClock()
	cfg.Now = clk.Now
	gs := make([]*Limiter, n)
	for i := range gs {
		gs[i] = New(client(t, endpoints), "/crudauth/", cfg, 5*time.Second)
	}
	return gs, clk
}

func wantWait(t *testing.T, what string, got time.Duration, err error, want time.Duration) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != want {
		t.Fatalf("%s: wait %v, want %v", what, got, want)
	}
}

// TestScenarios runs the policy scenarios Memory passes against the etcd
// limiter, each on a prefix of its own on one member.
func TestScenarios(t *testing.T) {
	endpoints := etcdtest.Start(t)
	cli := client(t, endpoints)
	var n atomic.Int64
	throttletest.Run(t, func(_ *testing.T, cfg throttle.Config) throttle.Limiter {
		return New(cli, fmt.Sprintf("/scenario%d/", n.Add(1)), cfg, 5*time.Second)
	})
}

// TestThreeGateways: five wrong passwords spread over three gateways lock
// the pair on all three; ten from ten addresses lock the username on all
// three; the next round doubles everywhere; a success on one clears the
// pair on all.
func TestThreeGateways(t *testing.T) {
	endpoints := etcdtest.Start(t)
	gs, clk := gateways(t, endpoints, 3, throttle.Config{})
	const ip, u = "192.0.2.1", "alice"

	t.Run("pair", func(t *testing.T) {
		for i := range throttle.DefaultMaxFailures {
			want := time.Duration(0)
			if i == throttle.DefaultMaxFailures-1 {
				want = throttle.DefaultBaseLockout
			}
			d, err := gs[i%3].Fail(ctx, ip, u)
			wantWait(t, fmt.Sprintf("failure %d on gateway %d", i+1, i%3), d, err, want)
		}
		for i, g := range gs {
			d, err := g.Check(ctx, ip, u)
			wantWait(t, fmt.Sprintf("check on gateway %d", i), d, err, time.Minute)
			d, err = g.Check(ctx, "192.0.2.2", u)
			wantWait(t, fmt.Sprintf("another address on gateway %d", i), d, err, 0)
		}
	})

	t.Run("escalation", func(t *testing.T) {
		clk.Advance(time.Minute)
		for i := range throttle.DefaultMaxFailures {
			want := time.Duration(0)
			if i == throttle.DefaultMaxFailures-1 {
				want = 2 * time.Minute
			}
			d, err := gs[(i+1)%3].Fail(ctx, ip, u)
			wantWait(t, fmt.Sprintf("second round, failure %d", i+1), d, err, want)
		}
		for i, g := range gs {
			d, err := g.Check(ctx, ip, u)
			wantWait(t, fmt.Sprintf("check on gateway %d", i), d, err, 2*time.Minute)
		}
	})

	t.Run("success clears the pair", func(t *testing.T) {
		clk.Advance(2 * time.Minute)
		if err := gs[2].Succeed(ctx, ip, u); err != nil {
			t.Fatal(err)
		}
		// Escalation forgotten: the next round locks for the base time
		// again, counted on every gateway.
		for i := range throttle.DefaultMaxFailures {
			want := time.Duration(0)
			if i == throttle.DefaultMaxFailures-1 {
				want = time.Minute
			}
			d, err := gs[i%3].Fail(ctx, ip, u)
			wantWait(t, fmt.Sprintf("after the success, failure %d", i+1), d, err, want)
		}
	})

	t.Run("username across addresses", func(t *testing.T) {
		const v = "victim"
		for i := range throttle.DefaultUserMaxFailures {
			want := time.Duration(0)
			if i == throttle.DefaultUserMaxFailures-1 {
				want = time.Minute
			}
			d, err := gs[i%3].Fail(ctx, fmt.Sprint("198.51.100.", i), v)
			wantWait(t, fmt.Sprintf("failure %d", i+1), d, err, want)
		}
		for i, g := range gs {
			d, err := g.Check(ctx, "203.0.113.7", v)
			wantWait(t, fmt.Sprintf("fresh address on gateway %d", i), d, err, time.Minute)
		}
	})
}

// TestConcurrentFailuresAllCount: failures recorded at once through three
// gateways all count, none lost to a write that raced another: the
// compare-and-swap retries on conflict.
func TestConcurrentFailuresAllCount(t *testing.T) {
	endpoints := etcdtest.Start(t)
	const n = 60
	gs, _ := gateways(t, endpoints, 3, throttle.Config{MaxFailures: 1000, UserMaxFailures: 1000, IPMaxFailures: -1})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if _, err := gs[i%3].Fail(ctx, fmt.Sprint("192.0.2.", i), "alice"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	resp, err := gs[0].cli.Get(ctx, gs[0].Key(throttle.KindUser, "", "alice"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading the username key: %v, %d keys", err, len(resp.Kvs))
	}
	st, err := decode(resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if st.Count != n {
		t.Fatalf("the username key counts %d failures of %d", st.Count, n)
	}
}

// TestKeysEscaped: no username or address can name another key, or a key
// outside the throttle's prefix: every key is the prefix, a kind and
// base64url parts, and different inputs give different keys.
func TestKeysEscaped(t *testing.T) {
	l := New(nil, "/crudauth/", throttle.Config{}, 0)
	shape := regexp.MustCompile(`^/crudauth/throttle/(p/[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*|[ui]/[A-Za-z0-9_-]*)$`)
	inputs := []string{"", "a", "a.b", "b", "a/b", "../u/YWxpY2U", "u/YWxpY2U", "\x00", "a\x00b", ".", "/", "%2f", "alice", "YWxpY2U"}
	seen := map[string]string{}
	for _, ip := range inputs {
		for _, u := range inputs {
			for _, k := range kinds {
				key := l.Key(k, ip, u)
				if !shape.MatchString(key) {
					t.Fatalf("key %q for (%q, %q) is not of the escaped shape", key, ip, u)
				}
				id := fmt.Sprintf("%c %q %q", k, ip, u)
				switch k {
				case throttle.KindUser:
					id = fmt.Sprintf("u %q", u)
				case throttle.KindIP:
					id = fmt.Sprintf("i %q", ip)
				}
				if prev, ok := seen[key]; ok && prev != id {
					t.Fatalf("%s and %s share the key %q", prev, id, key)
				}
				seen[key] = id
			}
		}
	}
}

// TestLeaseCoversState: a key's lease lasts as long as its state matters,
// and not much longer: a window for a counter, the lockout and its
// escalation memory (MaxLockout after the lockout ends) for a key that
// locked.
func TestLeaseCoversState(t *testing.T) {
	endpoints := etcdtest.Start(t)
	gs, _ := gateways(t, endpoints, 1, throttle.Config{})
	l := gs[0]
	for range throttle.DefaultMaxFailures {
		if _, err := l.Fail(ctx, "192.0.2.1", "alice"); err != nil {
			t.Fatal(err)
		}
	}
	ttl := func(key string) time.Duration {
		t.Helper()
		resp, err := l.cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("%s: %v, %d keys", key, err, len(resp.Kvs))
		}
		lr, err := l.cli.TimeToLive(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
		if err != nil {
			t.Fatal(err)
		}
		return time.Duration(lr.TTL) * time.Second
	}
	slack := l.bucket + 3*time.Second
	for _, c := range []struct {
		what string
		key  string
		need time.Duration
	}{
		{"locked pair", l.Key(throttle.KindPair, "192.0.2.1", "alice"), throttle.DefaultBaseLockout + throttle.DefaultMaxLockout},
		{"username counter", l.Key(throttle.KindUser, "", "alice"), throttle.DefaultWindow},
		{"address counter", l.Key(throttle.KindIP, "192.0.2.1", ""), throttle.DefaultWindow},
	} {
		if got := ttl(c.key); got < c.need-time.Second || got > c.need+slack {
			t.Errorf("%s: lease of %v, want %v to %v", c.what, got, c.need, c.need+slack)
		}
	}
}

// TestIdleKeysExpire: keys no longer needed leave etcd on their own, so an
// attacker's made-up usernames and addresses do not pile up.
func TestIdleKeysExpire(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for leases to run out")
	}
	endpoints := etcdtest.Start(t)
	cli := client(t, endpoints)
	l := New(cli, "/crudauth/", throttle.Config{MaxFailures: 2, Window: time.Second, BaseLockout: time.Second, MaxLockout: 2 * time.Second}, 5*time.Second)
	for i := range 10 {
		for range 2 { // the second locks the pair
			if _, err := l.Fail(ctx, fmt.Sprint("192.0.2.", i), fmt.Sprint("made-up-", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func() int64 {
		resp, err := cli.Get(ctx, "/crudauth/throttle/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	if n := count(); n != 30 {
		t.Fatalf("%d keys after the failures, want 30", n)
	}
	// A locked key matters for 1s of lockout and 2s of escalation memory;
	// its lease rounds up to the next bucket and a second.
	deadline := time.Now().Add(15 * time.Second)
	for count() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d keys still held after 15s", count())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(l.leases); n > 4 {
		t.Errorf("%d leases cached for 30 keys of two expiries", n)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// TestUnavailable: with the cluster out of reach every call returns, within
// its timeout, an error that is store.ErrUnavailable, on which the auth
// service refuses the login with 503 and Retry-After. Nothing hangs.
func TestUnavailable(t *testing.T) {
	const timeout = 300 * time.Millisecond
	run := func(t *testing.T, l *Limiter) {
		for name, call := range map[string]func() error{
			"check":   func() error { _, err := l.Check(ctx, "192.0.2.1", "alice"); return err },
			"fail":    func() error { _, err := l.Fail(ctx, "192.0.2.1", "alice"); return err },
			"succeed": func() error { return l.Succeed(ctx, "192.0.2.1", "alice") },
		} {
			start := time.Now()
			err := call()
			took := time.Since(start)
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("%s: %v, want store.ErrUnavailable", name, err)
			}
			if took > timeout+time.Second {
				t.Errorf("%s took %v, timeout %v", name, took, timeout)
			}
		}
	}
	t.Run("never reachable", func(t *testing.T) {
		run(t, New(client(t, []string{"http://" + closedAddr(t)}), "/crudauth/", throttle.Config{}, timeout))
	})
	t.Run("member stopped", func(t *testing.T) {
		m := etcdtest.StartMember(t)
		l := New(client(t, m.Endpoints()), "/crudauth/", throttle.Config{}, timeout)
		if _, err := l.Fail(ctx, "192.0.2.1", "alice"); err != nil {
			t.Fatal(err)
		}
		m.Stop()
		run(t, l)
	})
}
