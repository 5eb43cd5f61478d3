// Package etcdthrottle is a login throttle shared by every gateway that
// uses one etcd cluster: five wrong passwords spread over three gateways
// lock the account on all three.
//
// It applies the same policy as throttle.Memory, through the same pure
// function (throttle.Config.FailKey), so the lockouts a user sees do not
// depend on the backend. Each key (pair, username, IP) is one etcd key
// holding its throttle.KeyState:
//
//	<prefix>throttle/p/<base64url(ip)>.<base64url(username)>
//	<prefix>throttle/u/<base64url(username)>
//	<prefix>throttle/i/<base64url(ip)>
//
// The encoding cannot produce "/" or ".", so no username or address can
// name another key, whatever it contains.
//
// Every key is attached to a lease that runs out once its state no longer
// matters (throttle.Config.Expiry: the end of the window for a key that
// never locked, MaxLockout after the last failure or lockout end for one
// that did), so idle keys leave etcd on their own and an attacker's made-up
// keys cost etcd space for at most that long. Keys whose expiries fall in
// the same bucket share a lease, so the number of leases a gateway holds is
// bounded by the number of buckets (see bucketOf), not by the failure rate.
//
// Fail is a read, the policy, and a compare-and-swap transaction on the
// keys' ModRevision; when another gateway got there first the transaction
// returns the current values and the policy runs again on them. Check is
// one read. Every call is bounded by the timeout given to New; an error of
// the cluster (unreachable, no leader, timeout) wraps store.ErrUnavailable,
// on which the auth service refuses the login with 503 and Retry-After
// rather than letting it through unthrottled.
//
// Times are the gateways' own clocks (Config.Now): gateways whose clocks
// differ by s see a lockout end up to s earlier or later.
package etcdthrottle

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/throttle"
)

// DefaultTimeout bounds every call when New is given none.
const DefaultTimeout = 2 * time.Second

// Limiter is a throttle.Limiter whose counters live in etcd. It is safe for
// concurrent use; several Limiters (in several processes) on one cluster and
// prefix share their counters.
type Limiter struct {
	cli     *clientv3.Client
	prefix  string // ends in "throttle/"
	cfg     throttle.Config
	timeout time.Duration
	bucket  time.Duration
	now     func() time.Time // the real clock, for leases (etcd's TTLs run in real time)

	mu     sync.Mutex
	leases map[int64]clientv3.LeaseID // bucket end, Unix seconds of the real clock

	// stripes serialise this gateway's Fail calls on the same keys (by a
	// hash of each key): a flood of failed logins for one username would
	// otherwise race its own compare-and-swaps, each round committing one
	// of them and sending the rest back to etcd, so that the calls of a
	// busy gateway cost quadratically many transactions and run out of
	// time. Only gateways then contend with each other.
	stripes [failStripes]chan struct{}
}

// failStripes is the number of key stripes of Limiter.stripes.
const failStripes = 64

// New returns a Limiter storing its keys under prefix+"throttle/" (prefix
// is the store's, e.g. "/crudauth/"). cfg is the policy, as for Memory;
// MaxEntries and MaxLocks do not apply (leases bound what etcd holds).
// timeout bounds every call, DefaultTimeout when not positive. The client
// stays the caller's to close.
func New(cli *clientv3.Client, prefix string, cfg throttle.Config, timeout time.Duration) *Limiter {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	cfg = cfg.WithDefaults()
	l := &Limiter{
		cli:     cli,
		prefix:  prefix + "throttle/",
		cfg:     cfg,
		timeout: timeout,
		// A key outlives its expiry by at most a bucket; a Window's
		// quarter keeps a flood's counters from lingering, and a gateway
		// holds about (MaxLockout+Window)/bucket leases at most.
		bucket: min(max(cfg.Window/4, time.Second), time.Minute),
		now:    time.Now,
		leases: make(map[int64]clientv3.LeaseID),
	}
	for i := range l.stripes {
		l.stripes[i] = make(chan struct{}, 1)
	}
	return l
}

// lockKeys takes the stripes of the slots' keys, in ascending order (so
// that two calls never wait on each other crosswise), until ctx ends. The
// returned func releases them.
func (l *Limiter) lockKeys(ctx context.Context, slots []slot) (func(), error) {
	var idx []int
	for _, s := range slots {
		h := fnv.New32a()
		h.Write([]byte(s.key))
		idx = append(idx, int(h.Sum32()%failStripes))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	release := func(n int) {
		for _, i := range idx[:n] {
			<-l.stripes[i]
		}
	}
	for n, i := range idx {
		select {
		case l.stripes[i] <- struct{}{}:
		case <-ctx.Done():
			release(n)
			return nil, unavailable(ctx.Err())
		}
	}
	return func() { release(len(idx)) }, nil
}

// Config returns the configuration in force, defaults filled in.
func (l *Limiter) Config() throttle.Config { return l.cfg }

var kinds = [...]throttle.Kind{throttle.KindPair, throttle.KindUser, throttle.KindIP}

var enc = base64.RawURLEncoding

// Key is the etcd key of a kind's state for (ip, username).
func (l *Limiter) Key(k throttle.Kind, ip, username string) string {
	switch k {
	case throttle.KindPair:
		return l.prefix + "p/" + enc.EncodeToString([]byte(ip)) + "." + enc.EncodeToString([]byte(username))
	case throttle.KindUser:
		return l.prefix + "u/" + enc.EncodeToString([]byte(username))
	default:
		return l.prefix + "i/" + enc.EncodeToString([]byte(ip))
	}
}

// slot is one enabled kind's key and what was read of it.
type slot struct {
	kind  throttle.Kind
	key   string
	state throttle.KeyState
	rev   int64 // ModRevision; 0 when absent
}

func (l *Limiter) slots(ip, username string) []slot {
	s := make([]slot, 0, len(kinds))
	for _, k := range kinds {
		if l.cfg.Limit(k) >= 0 {
			s = append(s, slot{kind: k, key: l.Key(k, ip, username)})
		}
	}
	return s
}

// gets reads every slot's key, in one request.
func gets(slots []slot) []clientv3.Op {
	ops := make([]clientv3.Op, len(slots))
	for i, s := range slots {
		ops[i] = clientv3.OpGet(s.key)
	}
	return ops
}

// load fills slots from the responses of gets.
func load(slots []slot, resps []*pb.ResponseOp) error {
	if len(resps) != len(slots) {
		return fmt.Errorf("login throttle: %d answers to %d reads", len(resps), len(slots))
	}
	for i, r := range resps {
		rr := r.GetResponseRange()
		slots[i].state, slots[i].rev = throttle.KeyState{}, 0
		if rr == nil || len(rr.Kvs) == 0 {
			continue
		}
		st, err := decode(rr.Kvs[0].Value)
		if err != nil {
			return fmt.Errorf("login throttle: key %s: %w", slots[i].key, err)
		}
		slots[i].state, slots[i].rev = st, rr.Kvs[0].ModRevision
	}
	return nil
}

func (l *Limiter) read(ctx context.Context, slots []slot) error {
	resp, err := l.cli.Txn(ctx).Then(gets(slots)...).Commit()
	if err != nil {
		return unavailable(err)
	}
	return load(slots, resp.Responses)
}

// Check implements throttle.Limiter.
func (l *Limiter) Check(ctx context.Context, ip, username string) (time.Duration, error) {
	slots := l.slots(ip, username)
	if len(slots) == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := l.read(ctx, slots); err != nil {
		return 0, err
	}
	now := l.cfg.Now()
	var wait time.Duration
	for _, s := range slots {
		wait = max(wait, s.state.Wait(now))
	}
	return wait, nil
}

// Fail implements throttle.Limiter.
func (l *Limiter) Fail(ctx context.Context, ip, username string) (time.Duration, error) {
	slots := l.slots(ip, username)
	if len(slots) == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	unlock, err := l.lockKeys(ctx, slots)
	if err != nil {
		return 0, err
	}
	defer unlock()
	if err := l.read(ctx, slots); err != nil {
		return 0, err
	}
	for {
		now := l.cfg.Now()
		var wait time.Duration
		var cmps []clientv3.Cmp
		var puts []clientv3.Op
		for _, s := range slots {
			next, d := l.cfg.FailKey(s.kind, s.state, now)
			wait = max(wait, d)
			if same(next, s.state) {
				// Locked: a failure that raced the lockout changes
				// nothing, so there is nothing to write or to compare.
				continue
			}
			lease, err := l.lease(ctx, l.cfg.Expiry(next).Sub(now))
			if err != nil {
				return 0, err
			}
			val, err := encode(next)
			if err != nil {
				return 0, err
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.key), "=", s.rev))
			puts = append(puts, clientv3.OpPut(s.key, string(val), clientv3.WithLease(lease)))
		}
		if len(puts) == 0 {
			return wait, nil
		}
		resp, err := l.cli.Txn(ctx).If(cmps...).Then(puts...).Else(gets(slots)...).Commit()
		switch {
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			// A cached lease ran out (or was revoked) before its bucket
			// ended: etcd's clock ran ahead of ours. Forget them all and
			// grant afresh.
			l.dropLeases()
			if ctx.Err() != nil {
				return 0, unavailable(ctx.Err())
			}
			continue
		case err != nil:
			return 0, unavailable(err)
		case resp.Succeeded:
			return wait, nil
		}
		// Another gateway changed a key since we read it: run the policy
		// again on what it wrote.
		if err := load(slots, resp.Responses); err != nil {
			return 0, err
		}
	}
}

// Succeed implements throttle.Limiter: the pair's state is deleted, its
// escalation with it. The username and IP keys run on.
func (l *Limiter) Succeed(ctx context.Context, ip, username string) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if _, err := l.cli.Delete(ctx, l.Key(throttle.KindPair, ip, username)); err != nil {
		return unavailable(err)
	}
	return nil
}

func same(a, b throttle.KeyState) bool {
	return a.Count == b.Count && a.Strikes == b.Strikes && a.WindowStart.Equal(b.WindowStart) &&
		a.LockedUntil.Equal(b.LockedUntil) && a.Last.Equal(b.Last)
}

// lease returns a lease that lasts at least ttl from now (the real clock).
// Leases are shared by bucket: every key whose expiry falls in a bucket
// gets the lease that runs out at the bucket's end.
func (l *Limiter) lease(ctx context.Context, ttl time.Duration) (clientv3.LeaseID, error) {
	now := l.now()
	end := now.Add(ttl).Truncate(l.bucket).Add(l.bucket)
	l.mu.Lock()
	id, ok := l.leases[end.Unix()]
	if !ok {
		// Forget the buckets that have ended, so the map stays as small as
		// the set of leases alive.
		for b := range l.leases {
			if b < now.Unix() {
				delete(l.leases, b)
			}
		}
	}
	l.mu.Unlock()
	if ok {
		return id, nil
	}
	// Rounded up, plus a second for the time the grant takes to reach the
	// leader, whose clock starts the lease.
	secs := int64((end.Sub(now)+time.Second-1)/time.Second) + 1
	resp, err := l.cli.Grant(ctx, secs)
	if err != nil {
		return 0, unavailable(err)
	}
	l.mu.Lock()
	// Two calls may race to grant one bucket; the loser's lease serves
	// its own key and runs out on its own.
	if _, ok := l.leases[end.Unix()]; !ok {
		l.leases[end.Unix()] = resp.ID
	}
	l.mu.Unlock()
	return resp.ID, nil
}

func (l *Limiter) dropLeases() {
	l.mu.Lock()
	clear(l.leases)
	l.mu.Unlock()
}

// unavailable is a failure of the cluster to answer in time: the caller
// refuses the login for now rather than let it through unthrottled.
func unavailable(err error) error {
	return fmt.Errorf("login throttle: %w: %w", store.ErrUnavailable, err)
}

// record is a KeyState as stored: times in Unix nanoseconds, 0 for none.
type record struct {
	V           int   `json:"v"`
	Count       int   `json:"c,omitempty"`
	WindowStart int64 `json:"w,omitempty"`
	LockedUntil int64 `json:"l,omitempty"`
	Strikes     int   `json:"s,omitempty"`
	Last        int64 `json:"t,omitempty"`
}

const recordVersion = 1

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func encode(s throttle.KeyState) ([]byte, error) {
	return json.Marshal(record{V: recordVersion, Count: s.Count, WindowStart: nanos(s.WindowStart),
		LockedUntil: nanos(s.LockedUntil), Strikes: s.Strikes, Last: nanos(s.Last)})
}

func decode(b []byte) (throttle.KeyState, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return throttle.KeyState{}, err
	}
	if r.V != recordVersion {
		return throttle.KeyState{}, fmt.Errorf("record version %d, want %d", r.V, recordVersion)
	}
	return throttle.KeyState{Count: r.Count, WindowStart: fromNanos(r.WindowStart),
		LockedUntil: fromNanos(r.LockedUntil), Strikes: r.Strikes, Last: fromNanos(r.Last)}, nil
}

var _ throttle.Limiter = (*Limiter)(nil)
