package throttle

import (
	"fmt"
	"testing"
)

// benchKeys is a pool of distinct (IP, username) pairs, built before the
// timer starts so that formatting does not count.
func benchKeys(n int) (ips, users []string) {
	ips, users = make([]string, n), make([]string, n)
	for i := range n {
		ips[i] = fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		users[i] = fmt.Sprint("user", i)
	}
	return ips, users
}

// BenchmarkCheck is the cost every login pays before its password is
// hashed: a Check on a limiter that holds many counters, some of them
// locked.
func BenchmarkCheck(b *testing.B) {
	const n = 1 << 14
	m, _ := newTest(Config{MaxEntries: 3 * n})
	ips, users := benchKeys(n)
	for i := range n {
		_, _ = m.Fail(ctx, ips[i], users[i])
		if i%16 == 0 { // every sixteenth pair is locked
			for range DefaultMaxFailures {
				_, _ = m.Fail(ctx, ips[i], users[i])
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_, _ = m.Check(ctx, ips[i%n], users[i%n])
	}
}

// BenchmarkCheckParallel: Check from every core at once, the contention
// a login flood puts on the limiter's lock.
func BenchmarkCheckParallel(b *testing.B) {
	const n = 1 << 14
	m, _ := newTest(Config{MaxEntries: 3 * n})
	ips, users := benchKeys(n)
	for i := range n {
		_, _ = m.Fail(ctx, ips[i], users[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_, _ = m.Check(ctx, ips[i%n], users[i%n])
			i++
		}
	})
}

// BenchmarkFailFlood is a flood of failures under fresh keys at capacity:
// every Fail creates three counters and evicts three.
func BenchmarkFailFlood(b *testing.B) {
	const n = 1 << 16
	m, _ := newTest(Config{MaxEntries: 3 * 1024})
	ips, users := benchKeys(n)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_, _ = m.Fail(ctx, ips[i%n], users[i%n])
	}
}

// BenchmarkFailLocking: failures that lock a fresh pair every MaxFailures
// attempts, many more than the limiter holds, the path a flood of
// lockouts takes. The clock moves past every lockout and its escalation at
// the end of each pass over the pairs, so every pass locks them anew.
func BenchmarkFailLocking(b *testing.B) {
	const n = 1 << 16
	m, clk := newTest(Config{MaxEntries: 3 * 1024, UserMaxFailures: -1, IPMaxFailures: -1})
	ips, users := benchKeys(n)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%(DefaultMaxFailures*n) == 0 {
			clk.Advance(DefaultMaxLockout + DefaultMaxLockout)
		}
		j := (i / DefaultMaxFailures) % n
		_, _ = m.Fail(ctx, ips[j], users[j])
	}
}
