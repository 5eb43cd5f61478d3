package etcdthrottle

import (
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdtest"
	"github.com/crudauth/caddy-crudauth/internal/throttle"
)

func benchLimiter(b *testing.B) *Limiter {
	endpoints := etcdtest.Start(b)
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cli.Close() })
	return New(cli, "/crudauth/", throttle.Config{}, 5*time.Second)
}

// BenchmarkCheck is the round trip every login pays before its hash with
// a shared throttle: one read of the three keys on a local member.
func BenchmarkCheck(b *testing.B) {
	l := benchLimiter(b)
	for i := range 1024 {
		_, _ = l.Fail(ctx, fmt.Sprint("10.0.", i/256, ".", i%256), fmt.Sprint("user", i))
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := l.Check(ctx, fmt.Sprint("10.0.", i%1024/256, ".", i%256), fmt.Sprint("user", i%1024)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFail is a failed login's write: a read, the policy and one
// compare-and-swap transaction of three keys (no contention).
func BenchmarkFail(b *testing.B) {
	l := benchLimiter(b)
	for i := 0; b.Loop(); i++ {
		if _, err := l.Fail(ctx, fmt.Sprint("10.", i>>16&255, ".", i>>8&255, ".", i&255), fmt.Sprint("user", i)); err != nil {
			b.Fatal(err)
		}
	}
}
