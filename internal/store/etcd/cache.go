package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// cache is the local copy of every user's AuthState that AuthState serves
// from, without a round trip on a warm request.
//
// It holds the signing key set too (SigningKeys), under the same rules.
//
// It is loaded from one read of users/, sessions/ and the key set at a
// single revision R, then kept current by one watch on the whole prefix from R+1, applied
// in revision order. When the watch breaks it resumes after the last
// event applied; when that revision was compacted away meanwhile it
// loads everything again. The cache counts as current only as a
// linearizable read proves it: every MaxStaleness/8 (more often after a
// failed one) it reads the cluster's revision, and once the watch has delivered every
// event up to that revision, the cache held every write committed before
// the read was sent. A watch response or a progress notification alone
// proves nothing about the time it arrives: it comes from the member that
// serves the watch, which may lag behind the leader (after a leader
// change, for a while), and a notification may answer an earlier request
// than the last one. Past MaxStaleness without such proof AuthState fails
// closed.
type cache struct {
	s *Store

	mu sync.RWMutex
	// users holds every user's state without its sessions; sessions
	// holds each user's session IDs, sorted.
	users    map[string]entry
	sessions map[string][]string
	// keys is the signing key set (SigningKeys), replaced only when its
	// content changes, under mu, so that its pointer says whether it did.
	keys atomic.Pointer[keysEntry]

	// delivered: the revision of the last event applied (or of the
	// load), where a resumed watch starts again; events at or below it
	// are skipped. applied: every change under the prefix up to this
	// revision is in the maps, as the events and the progress
	// notifications tell; it may run ahead of delivered on an idle prefix.
	// The two are kept apart because etcd before 3.4.24 and 3.5.8 may
	// send a requested progress notification ahead of events still on
	// their way: an event below applied is still applied, and never lost
	// to a resumed watch. floor: a revision a write through this handle
	// committed at, which the watch did not deliver within DialTimeout;
	// until delivered reaches it the cache is behind this handle's own
	// writes.
	delivered, applied, floor atomic.Int64
	// confirmed is when the cache was last proven current (unix nanos).
	confirmed atomic.Int64
	// expectRev is the revision the newest linearizable read sent at
	// expectSent found, while applied is below it: once applied reaches
	// it, the cache was current at expectSent. Under emu.
	emu        sync.Mutex
	expectSent time.Time
	expectRev  int64

	nmu    sync.Mutex
	notify chan struct{} // closed and replaced whenever applied moves

	ctx    context.Context
	cancel context.CancelFunc
	done   sync.WaitGroup

	// Test hooks: reloads counts full loads after the first;
	// beforeWatch runs before each (re)start of the watch; watchCancel
	// ends the current watch.
	reloads     atomic.Int64
	beforeWatch atomic.Pointer[func()]
	wmu         sync.Mutex
	watchCancel context.CancelFunc
}

// entry is a user's cached state; err is set for a record this gateway
// cannot read, so that its user is refused rather than let through.
type entry struct {
	st  store.AuthState
	err error
}

func newCache(s *Store) *cache {
	c := &cache{s: s, notify: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// start loads the cache and starts the watch.
func (c *cache) start(ctx context.Context) error {
	if err := c.s.reachable(ctx); err != nil {
		c.cancel()
		return err
	}
	if err := c.load(ctx); err != nil {
		c.cancel()
		return err
	}
	c.done.Add(1)
	go c.watchLoop()
	return nil
}

func (c *cache) stop() {
	c.cancel()
	c.done.Wait()
	// Drop the private keys with the rest of the cache.
	c.keys.Store(&keysEntry{err: store.ErrClosed})
}

func (c *cache) appliedRevision() int64 { return c.applied.Load() }

// load replaces the cache with the users and sessions as of one revision.
func (c *cache) load(ctx context.Context) error {
	sent := time.Now()
	users := map[string]entry{}
	sessions := map[string][]string{}
	rev, err := c.s.rangeAt(ctx, c.s.ns("users"), 0, false, func(k, v []byte, _ int64) error {
		id, ok := c.userID(k)
		if !ok {
			return nil
		}
		users[id] = decodeEntry(v)
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := c.s.rangeAt(ctx, c.s.ns("sessions"), rev, true, func(k, _ []byte, _ int64) error {
		if uid, sid, ok := c.sessionID(k); ok {
			sessions[uid] = append(sessions[uid], sid)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, ids := range sessions {
		slices.Sort(ids)
	}
	var kresp *clientv3.GetResponse
	if err := c.s.call(ctx, func(ctx context.Context) (err error) {
		kresp, err = c.s.cli.Get(ctx, c.s.keysKey(), clientv3.WithRev(rev))
		return err
	}); err != nil {
		return err
	}
	var keys []byte
	if len(kresp.Kvs) > 0 {
		keys = kresp.Kvs[0].Value
	}
	c.mu.Lock()
	c.users, c.sessions = users, sessions
	c.setKeys(decodeKeysEntry(keys))
	c.delivered.Store(rev)
	c.applied.Store(rev)
	c.mu.Unlock()
	c.confirm(sent) // the load's read is linearizable
	c.reached()
	c.advanced()
	return nil
}

// keysEntry is the cached key set; err is set for a record this gateway
// cannot read, so that no key is trusted rather than a stale set.
type keysEntry struct {
	ks  *store.KeySet
	err error
}

func decodeKeysEntry(v []byte) *keysEntry {
	ks, err := decodeKeySet(v)
	return &keysEntry{ks: ks, err: err}
}

// setKeys makes e the cached set, unless the cache holds an equal one,
// whose pointer then stays. Called with mu held.
func (c *cache) setKeys(e *keysEntry) {
	if cur := c.keys.Load(); cur != nil && cur.err == nil && e.err == nil && cur.ks.Equal(e.ks) {
		return
	}
	c.keys.Store(e)
}

// sameKeys returns the cached set when it equals ks, else ks: the set
// UpdateSigningKeys returns is then the pointer SigningKeys hands out.
func (c *cache) sameKeys(ks *store.KeySet) *store.KeySet {
	if cur := c.keys.Load(); cur != nil && cur.err == nil && cur.ks.Equal(ks) {
		return cur.ks
	}
	return ks
}

// signingKeys serves SigningKeys.
func (c *cache) signingKeys() (*store.KeySet, error) {
	if err := c.current("signing keys"); err != nil {
		return nil, err
	}
	e := c.keys.Load()
	if e.err != nil {
		return nil, e.err
	}
	return e.ks, nil
}

func decodeEntry(v []byte) entry {
	u, err := decodeUser(v)
	if err != nil {
		return entry{err: err}
	}
	return entry{st: u.State()}
}

func unescape(s string) (string, error) { return url.PathUnescape(s) }

// userID parses prefix+"users/<id>".
func (c *cache) userID(key []byte) (string, bool) {
	rest, ok := strings.CutPrefix(string(key), c.s.ns("users"))
	if !ok || strings.Contains(rest, "/") {
		return "", false
	}
	id, err := unescape(rest)
	return id, err == nil
}

// sessionID parses prefix+"sessions/<userID>/<sid>".
func (c *cache) sessionID(key []byte) (uid, sid string, ok bool) {
	rest, ok := strings.CutPrefix(string(key), c.s.ns("sessions"))
	if !ok {
		return "", "", false
	}
	a, b, ok := strings.Cut(rest, "/")
	if !ok || strings.Contains(b, "/") {
		return "", "", false
	}
	uid, err1 := unescape(a)
	sid, err2 := unescape(b)
	return uid, sid, err1 == nil && err2 == nil
}

// confirm records that the cache was current at t.
func (c *cache) confirm(t time.Time) {
	n := t.UnixNano()
	for {
		old := c.confirmed.Load()
		if old >= n || c.confirmed.CompareAndSwap(old, n) {
			return
		}
	}
}

// advanced wakes everyone waiting for applied to move.
func (c *cache) advanced() {
	c.nmu.Lock()
	close(c.notify)
	c.notify = make(chan struct{})
	c.nmu.Unlock()
}

func (c *cache) waitCh() <-chan struct{} {
	c.nmu.Lock()
	defer c.nmu.Unlock()
	return c.notify
}

// waitApplied waits until the watch delivered rev, the revision of a
// write through this handle, at most timeout. When it gives up, AuthState
// fails closed until the watch catches up, rather than answer without a
// write this handle acknowledged.
func (c *cache) waitApplied(ctx context.Context, rev int64, timeout time.Duration) {
	if c.delivered.Load() >= rev {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		ch := c.waitCh()
		if c.delivered.Load() >= rev {
			return
		}
		select {
		case <-ch:
			continue
		case <-t.C:
		case <-ctx.Done():
		case <-c.ctx.Done():
			return
		}
		for {
			old := c.floor.Load()
			if old >= rev || c.floor.CompareAndSwap(old, rev) {
				break
			}
		}
		c.s.log.Warn("auth cache did not apply a write in time; refusing bearer checks until it does",
			zap.Int64("revision", rev), zap.Int64("applied", c.applied.Load()))
		return
	}
}

// current fails with ErrUnavailable unless the cache was confirmed
// current within MaxStaleness and holds this handle's own writes; what
// names what was asked for.
func (c *cache) current(what string) error {
	if age := time.Since(time.Unix(0, c.confirmed.Load())); age > c.s.o.MaxStaleness {
		return fmt.Errorf("%w: %s not confirmed current for %v (max_staleness %v)",
			store.ErrUnavailable, what, age.Truncate(time.Millisecond), c.s.o.MaxStaleness)
	}
	if c.delivered.Load() < c.floor.Load() {
		return fmt.Errorf("%w: %s behind this gateway's own writes", store.ErrUnavailable, what)
	}
	return nil
}

// get serves AuthState.
func (c *cache) get(id string) (store.AuthState, error) {
	if err := c.current("auth state"); err != nil {
		return store.AuthState{}, err
	}
	c.mu.RLock()
	e, ok := c.users[id]
	sids := c.sessions[id]
	c.mu.RUnlock()
	if !ok {
		return store.AuthState{}, store.ErrNotFound
	}
	if e.err != nil {
		return store.AuthState{}, e.err
	}
	st := e.st
	if st.AllowedScopes != nil {
		st.AllowedScopes = slices.Clone(st.AllowedScopes)
	}
	st.Sessions = slices.Clone(sids)
	return st, nil
}

// apply applies one watch response, in revision order. Events at or below
// the delivered revision (a resumed watch's overlap) are skipped.
func (c *cache) apply(resp *clientv3.WatchResponse) {
	from := c.delivered.Load()
	last := from
	c.mu.Lock()
	for _, ev := range resp.Events {
		// The events of one revision (one transaction) share it.
		if ev.Kv.ModRevision <= from {
			continue
		}
		last = ev.Kv.ModRevision
		if string(ev.Kv.Key) == c.s.keysKey() {
			if ev.Type == mvccpb.DELETE {
				c.setKeys(&keysEntry{ks: &store.KeySet{}})
			} else {
				c.setKeys(decodeKeysEntry(ev.Kv.Value))
			}
			continue
		}
		if id, ok := c.userID(ev.Kv.Key); ok {
			if ev.Type == mvccpb.DELETE {
				delete(c.users, id)
				delete(c.sessions, id)
			} else {
				c.users[id] = decodeEntry(ev.Kv.Value)
			}
			continue
		}
		if uid, sid, ok := c.sessionID(ev.Kv.Key); ok {
			ids := c.sessions[uid]
			i, found := slices.BinarySearch(ids, sid)
			switch {
			case ev.Type == mvccpb.DELETE && found:
				ids = slices.Delete(slices.Clone(ids), i, i+1)
			case ev.Type == mvccpb.PUT && !found:
				ids = slices.Insert(slices.Clone(ids), i, sid)
			}
			if len(ids) == 0 {
				delete(c.sessions, uid)
			} else {
				c.sessions[uid] = ids
			}
		}
	}
	c.delivered.Store(last)
	if last > c.applied.Load() {
		c.applied.Store(last)
	}
	c.mu.Unlock()
	c.reached()
	c.advanced()
}

// progress applies a progress notification: every event up to rev was
// delivered.
func (c *cache) progress(rev int64) {
	c.mu.Lock()
	if rev > c.applied.Load() {
		c.applied.Store(rev)
	}
	c.mu.Unlock()
	c.reached()
	c.advanced()
}

// expect records that a linearizable read sent at sent found the cluster
// at revision rev. When applied has reached rev already, the cache was
// current at sent, and expect reports so; otherwise reached confirms it
// once applied gets there. Only the newest expectation is kept.
func (c *cache) expect(sent time.Time, rev int64) bool {
	c.emu.Lock()
	defer c.emu.Unlock()
	if c.applied.Load() >= rev {
		c.confirm(sent)
		return true
	}
	if sent.After(c.expectSent) {
		c.expectSent, c.expectRev = sent, rev
	}
	return false
}

// reached confirms the cache current at the time of the expected read
// once applied has reached its revision; called whenever applied moves.
func (c *cache) reached() {
	c.emu.Lock()
	defer c.emu.Unlock()
	if c.expectRev != 0 && c.applied.Load() >= c.expectRev {
		c.confirm(c.expectSent)
		c.expectRev = 0
	}
}

// watchCtx is the context of every watch stream and of the progress
// requests, which must name the same stream (the client keys streams by
// the context's metadata). WithRequireLeader makes a member that lost its
// leader end the stream instead of serving a watch that no longer moves.
//
// Every (re)start of the watch uses the same key: the client keeps a
// stream open, with no watch on it, when the watch it had was cancelled
// while it reconnected; a new watch under the same key reuses that stream
// instead of leaving it behind.
func (c *cache) watchCtx() context.Context { return clientv3.WithRequireLeader(c.ctx) }

func (c *cache) watchLoop() {
	defer c.done.Done()
	backoff := 10 * time.Millisecond
	for c.ctx.Err() == nil {
		if f := c.beforeWatch.Load(); f != nil {
			(*f)()
		}
		wctx, wcancel := context.WithCancel(c.watchCtx())
		c.wmu.Lock()
		c.watchCancel = wcancel
		c.wmu.Unlock()
		// From the revision after the applied one: etcd serves a watch
		// that starts at or below its current revision from a
		// catch-up loop that runs every 100ms, one from a later
		// revision at once. Watch blocks while the client has no
		// connection; it returns once the stream is established, or
		// when wctx ends.
		from := c.delivered.Load() + 1
		ch := c.s.cli.Watch(wctx, c.s.o.Prefix, clientv3.WithPrefix(), clientv3.WithRev(from),
			clientv3.WithProgressNotify())
		end := c.serve(wctx, ch)
		wcancel()
		if c.ctx.Err() != nil {
			return
		}
		switch end {
		case watchCompacted:
			c.s.log.Warn("auth cache fell behind a compaction; reloading", zap.Int64("applied", c.applied.Load()))
			c.reload()
			continue
		case watchRewound:
			c.s.log.Warn("cluster revision is below the auth cache's (restored from a backup?); reloading",
				zap.Int64("applied", c.applied.Load()))
			c.reload()
			continue
		case watchDelivered:
			backoff = 10 * time.Millisecond
		}
		c.sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

// How a watch ended.
const (
	watchSilent    = iota // ended having confirmed nothing: back off
	watchDelivered        // ended after it applied or confirmed something
	watchCompacted        // its start revision was compacted away: reload
	watchRewound          // the cluster's revision is below the applied one: reload
)

// serve applies what one watch delivers until it ends, and has the cache
// confirmed current while it is open (askCurrent).
//
// The requests go out from here, while the watch is open, because a
// progress request for a stream that is gone makes the client open a new
// stream with no watch on it, which answers nothing and stays open until
// the client closes.
//
// It gives up on a watch that confirmed nothing for half of MaxStaleness
// since it opened; the next one resumes from the applied revision, so
// nothing is missed.
func (c *cache) serve(wctx context.Context, ch clientv3.WatchChan) int {
	// A read every MaxStaleness/8; after one failed (no leader, say),
	// again every MaxStaleness/32, so that the cache is confirmed soon
	// after a leader change, well within MaxStaleness. The read runs
	// beside the loop, which goes on applying events meanwhile.
	every := max(c.s.o.MaxStaleness/8, 10*time.Millisecond)
	t := time.NewTicker(every / 4)
	defer t.Stop()
	opened := time.Now()
	end := watchSilent
	asked := make(chan bool, 1) // askCurrent's answer: rewound
	asking := false
	var lastAsk time.Time
	for {
		select {
		case resp, ok := <-ch:
			if !ok {
				return end
			}
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				return watchCompacted
			}
			if err := resp.Err(); err != nil {
				c.s.log.Warn("auth cache watch broke; resuming", zap.Int64("applied", c.applied.Load()), zap.Error(err))
				return end
			}
			if resp.IsProgressNotify() {
				c.progress(resp.Header.Revision)
				end = watchDelivered
				continue
			}
			if len(resp.Events) > 0 {
				c.apply(&resp)
				end = watchDelivered
			}
		case rewound := <-asked:
			asking = false
			if rewound {
				return watchRewound
			}
		case <-t.C:
			age := time.Since(time.Unix(0, c.confirmed.Load()))
			since := time.Since(lastAsk)
			if !asking && (since >= every || age > every && since >= every/4) {
				asking, lastAsk = true, time.Now()
				go func() { asked <- c.askCurrent(wctx) }()
			}
			half := c.s.o.MaxStaleness / 2
			if age > half && time.Since(opened) > half {
				c.s.log.Warn("auth cache watch confirmed nothing; restarting it", zap.Int64("applied", c.applied.Load()))
				return end
			}
		case <-c.ctx.Done():
			return end
		}
	}
}

// askCurrent reads the cluster's revision (a linearizable read) and
// expects it. When the watch has not delivered that revision yet, it
// requests a progress notification, which etcd sends once every event up
// to its revision went out on the stream (none to a watch whose start
// revision is above its current one: the read then finds the applied
// revision, which confirms at once). It reports whether the cluster's
// revision is below the applied one: the cluster is not the one the
// cache was loaded from.
func (c *cache) askCurrent(wctx context.Context) (rewound bool) {
	ctx, cancel := context.WithTimeout(wctx, c.s.o.DialTimeout)
	defer cancel()
	sent := time.Now()
	resp, err := c.s.cli.Get(ctx, c.s.o.Prefix, clientv3.WithCountOnly())
	if err != nil {
		return false // shows as an unconfirmed cache
	}
	if resp.Header.Revision < c.applied.Load() {
		return true
	}
	if !c.expect(sent, resp.Header.Revision) {
		_ = c.s.cli.RequestProgress(ctx) // a failure shows as an unconfirmed cache
	}
	return false
}

// reload loads the cache again until it succeeds or the store closes.
// Meanwhile the cache stays as it was and ages towards MaxStaleness.
func (c *cache) reload() {
	backoff := 10 * time.Millisecond
	for c.ctx.Err() == nil {
		err := c.load(c.ctx)
		if err == nil {
			c.reloads.Add(1)
			return
		}
		c.s.log.Warn("auth cache reload failed; retrying", zap.Error(err))
		c.sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

func (c *cache) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.ctx.Done():
	}
}

// breakWatch ends the current watch stream (a test hook: the loop
// resumes it).
func (c *cache) breakWatch() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.watchCancel != nil {
		c.watchCancel()
	}
}
