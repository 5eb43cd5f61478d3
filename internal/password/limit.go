package password

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"time"
)

// ErrBusy is returned by Limiter.Acquire when no hashing slot frees up in
// time, or when too many callers are already waiting.
var ErrBusy = errors.New("password hashing is busy")

// waitersPerSlot bounds the queue: at most waitersPerSlot*slots callers wait,
// so memory and goroutines parked here stay bounded under any flood.
const waitersPerSlot = 4

// Limiter caps how many password hashes run at once, so that a login flood
// cannot take every CPU (and argon2id's memory) away from proxied traffic.
// It is a buffered-channel semaphore with a bounded number of waiters.
// A nil *Limiter imposes no limit.
type Limiter struct {
	sem        chan struct{}
	maxWait    time.Duration
	maxWaiters int64
	waiting    atomic.Int64
}

// NewLimiter returns a Limiter that lets slots hashes run at once.
// slots <= 0 means max(1, runtime.NumCPU()/2): half the CPUs, leaving the
// rest to proxying. A caller waits at most maxWait for a slot (maxWait <= 0:
// not at all), and at most 4*slots callers wait at any time.
func NewLimiter(slots int, maxWait time.Duration) *Limiter {
	if slots <= 0 {
		slots = max(1, runtime.NumCPU()/2)
	}
	if maxWait < 0 {
		maxWait = 0
	}
	return &Limiter{
		sem:        make(chan struct{}, slots),
		maxWait:    maxWait,
		maxWaiters: int64(waitersPerSlot * slots),
	}
}

// Acquire takes a slot. On success the caller must call release once the
// hash is done; calling it again is a no-op. It returns ErrBusy when no slot
// frees up within maxWait or when the waiting queue is full (at once, in
// that case), and ctx.Err() when ctx ends first.
func (l *Limiter) Acquire(ctx context.Context) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case l.sem <- struct{}{}:
		return l.releaser(), nil
	default:
	}
	if l.maxWait == 0 {
		return nil, ErrBusy
	}
	if l.waiting.Add(1) > l.maxWaiters {
		l.waiting.Add(-1)
		return nil, ErrBusy
	}
	defer l.waiting.Add(-1)

	timer := time.NewTimer(l.maxWait)
	defer timer.Stop()
	select {
	case l.sem <- struct{}{}:
		return l.releaser(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timer.C:
		return nil, ErrBusy
	}
}

// releaser frees the slot exactly once, so a double release cannot admit an
// extra hasher.
func (l *Limiter) releaser() func() {
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			<-l.sem
		}
	}
}

// InUse returns the number of slots held.
func (l *Limiter) InUse() int {
	if l == nil {
		return 0
	}
	return len(l.sem)
}

// Waiting returns the number of callers waiting for a slot.
func (l *Limiter) Waiting() int {
	if l == nil {
		return 0
	}
	return int(l.waiting.Load())
}

// Cap returns the number of slots.
func (l *Limiter) Cap() int {
	if l == nil {
		return 0
	}
	return cap(l.sem)
}
