package password

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond; it bounds the test instead of sleeping a fixed time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewLimiterDefaults(t *testing.T) {
	if l := NewLimiter(0, time.Second); l.Cap() < 1 {
		t.Fatalf("default cap %d", l.Cap())
	}
	if l := NewLimiter(-3, 0); l.Cap() < 1 {
		t.Fatalf("default cap %d", l.Cap())
	}
	var l *Limiter // nil: no limit
	release, err := l.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	release()
}

func TestLimiterCap(t *testing.T) {
	const slots = 3
	l := NewLimiter(slots, 10*time.Second)
	var cur, peak, okCount, busy atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			release, err := l.Acquire(context.Background())
			if errors.Is(err, ErrBusy) {
				busy.Add(1)
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			n := cur.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			cur.Add(-1)
			okCount.Add(1)
			release()
		})
	}
	wg.Wait()
	if p := peak.Load(); p > slots || p < 1 {
		t.Fatalf("peak concurrency %d, cap %d", p, slots)
	}
	if okCount.Load()+busy.Load() != 100 {
		t.Fatalf("ok %d + busy %d != 100", okCount.Load(), busy.Load())
	}
	// Waiters are bounded by 4*slots, so some callers got through and the
	// rest were refused rather than queued without limit.
	if okCount.Load() < slots {
		t.Fatalf("only %d acquisitions succeeded", okCount.Load())
	}
	if l.InUse() != 0 || l.Waiting() != 0 {
		t.Fatalf("leak: in use %d, waiting %d", l.InUse(), l.Waiting())
	}
}

func TestLimiterBusyAfterMaxWait(t *testing.T) {
	const maxWait = 20 * time.Millisecond
	l := NewLimiter(1, maxWait)
	release, err := l.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := l.Acquire(context.Background()); !errors.Is(err, ErrBusy) {
		t.Fatalf("Acquire = %v, want ErrBusy", err)
	}
	if d := time.Since(start); d < maxWait {
		t.Fatalf("gave up after %v, before maxWait", d)
	}
	release()
	release() // double release must not free a second slot
	if l.InUse() != 0 {
		t.Fatalf("in use %d", l.InUse())
	}
	r1, err := l.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	release() // stale release from the first holder: still a no-op
	if l.InUse() != 1 {
		t.Fatal("a stale release freed someone else's slot")
	}
	r1()

	// maxWait 0: no waiting at all.
	l0 := NewLimiter(1, 0)
	r, _ := l0.Acquire(context.Background())
	if _, err := l0.Acquire(context.Background()); !errors.Is(err, ErrBusy) {
		t.Fatalf("Acquire = %v, want ErrBusy", err)
	}
	r()
}

func TestLimiterWaiterBound(t *testing.T) {
	const slots = 2
	l := NewLimiter(slots, time.Hour)
	var releases []func()
	for range slots {
		r, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range waitersPerSlot * slots {
		wg.Go(func() {
			if _, err := l.Acquire(ctx); !errors.Is(err, context.Canceled) {
				t.Errorf("waiter got %v, want context.Canceled", err)
			}
		})
	}
	waitFor(t, "waiters to queue", func() bool { return l.Waiting() == waitersPerSlot*slots })

	// The queue is full: the next caller is refused at once (with a 1h
	// maxWait, waiting would hang the test).
	done := make(chan error, 1)
	go func() { _, err := l.Acquire(context.Background()); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrBusy) {
			t.Fatalf("Acquire = %v, want ErrBusy", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Acquire waited although the queue was full")
	}
	if l.Waiting() != waitersPerSlot*slots {
		t.Fatalf("waiting %d after refusal", l.Waiting())
	}

	cancel()
	wg.Wait()
	if l.Waiting() != 0 {
		t.Fatalf("waiting %d after cancel", l.Waiting())
	}
	for _, r := range releases {
		r()
	}
}

func TestLimiterContext(t *testing.T) {
	l := NewLimiter(1, time.Hour)
	release, err := l.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := l.Acquire(ctx); errc <- err }()
	waitFor(t, "waiter", func() bool { return l.Waiting() == 1 })
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Acquire ignored ctx cancellation")
	}

	// An already-ended context fails even when a slot is free.
	l2 := NewLimiter(1, time.Hour)
	if _, err := l2.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire(canceled ctx) = %v", err)
	}
	if l2.InUse() != 0 {
		t.Fatal("slot taken with a canceled ctx")
	}

	// A waiter gets the slot when it is released.
	got := make(chan error, 1)
	go func() {
		r, err := l.Acquire(context.Background())
		if err == nil {
			r()
		}
		got <- err
	}()
	waitFor(t, "waiter", func() bool { return l.Waiting() == 1 })
	release()
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
}
