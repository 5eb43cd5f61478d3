package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// cache is the local copy of every user's AuthState that AuthState serves
// from, without a round trip on a warm request.
//
// It is loaded from one read of users/ and sessions/ at a single revision
// R, then kept current by one watch on the whole prefix from R+1, applied
// in revision order. When the watch breaks it resumes from the last
// revision applied; when that revision was compacted away meanwhile it
// loads everything again. The cache counts as current as long as the
// watch proves it: an event that brings it up to the server's revision, or
// a progress notification (requested every MaxStaleness/4), which etcd
// sends only once every event up to its revision was delivered. Past
// MaxStaleness without such proof AuthState fails closed.
type cache struct {
	s *Store

	mu sync.RWMutex
	// users holds every user's state without its sessions; sessions
	// holds each user's session IDs, sorted.
	users    map[string]entry
	sessions map[string][]string

	// applied: every change under the prefix up to this revision is in
	// the maps. floor: a revision a write through this handle committed
	// at, which the watch did not deliver within DialTimeout; until
	// applied reaches it the cache is behind this handle's own writes.
	applied, floor atomic.Int64
	// confirmed is when the cache was last proven current (unix nanos);
	// progressSent when progress was last requested.
	confirmed, progressSent atomic.Int64

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
	wbase       context.Context
	wgen        int64
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

// start loads the cache and starts the watch and the progress requests.
func (c *cache) start(ctx context.Context) error {
	if err := c.load(ctx); err != nil {
		c.cancel()
		return err
	}
	c.done.Add(2)
	go c.watchLoop()
	go c.progressLoop()
	return nil
}

func (c *cache) stop() {
	c.cancel()
	c.done.Wait()
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
	c.mu.Lock()
	c.users, c.sessions = users, sessions
	c.applied.Store(rev)
	c.mu.Unlock()
	c.confirm(sent)
	c.advanced()
	return nil
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

// waitApplied waits until applied >= rev, at most timeout. When it gives
// up, AuthState fails closed until the watch catches up, rather than
// answer without a write this handle acknowledged.
func (c *cache) waitApplied(ctx context.Context, rev int64, timeout time.Duration) {
	if c.applied.Load() >= rev {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		ch := c.waitCh()
		if c.applied.Load() >= rev {
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

// get serves AuthState.
func (c *cache) get(id string) (store.AuthState, error) {
	if age := time.Since(time.Unix(0, c.confirmed.Load())); age > c.s.o.MaxStaleness {
		return store.AuthState{}, fmt.Errorf("%w: auth state not confirmed current for %v (max_staleness %v)",
			store.ErrUnavailable, age.Truncate(time.Millisecond), c.s.o.MaxStaleness)
	}
	if c.applied.Load() < c.floor.Load() {
		return store.AuthState{}, fmt.Errorf("%w: auth state behind this gateway's own writes", store.ErrUnavailable)
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
// the applied revision (a resumed watch's overlap) are skipped.
func (c *cache) apply(resp *clientv3.WatchResponse) {
	from := c.applied.Load()
	last := from
	c.mu.Lock()
	for _, ev := range resp.Events {
		// The events of one revision (one transaction) share it.
		if ev.Kv.ModRevision <= from {
			continue
		}
		last = ev.Kv.ModRevision
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
	c.applied.Store(last)
	c.mu.Unlock()
	if resp.Header.Revision == last {
		// Up to the server's revision when it sent this: current.
		c.confirm(time.Now())
	}
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
	sent := c.progressSent.Load()
	if sent == 0 {
		sent = time.Now().UnixNano()
	}
	c.confirm(time.Unix(0, sent))
	c.advanced()
}

// watchCtx is the context of the watch stream and of the progress
// requests, which must name the same stream. WithRequireLeader makes a
// member that lost its leader end the stream instead of serving a watch
// that no longer moves.
//
// Each (re)start of the watch gets a stream of its own (the client keys
// streams by the context's metadata): a stream that stayed silent through
// an outage is abandoned, not reused.
func (c *cache) watchCtx() context.Context {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wbase == nil {
		c.wbase = clientv3.WithRequireLeader(c.ctx)
	}
	return c.wbase
}

func (c *cache) newWatchCtx() context.Context {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wgen++
	c.wbase = metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(c.ctx), "crudauth-watch", strconv.FormatInt(c.wgen, 10))
	return c.wbase
}

func (c *cache) watchLoop() {
	defer c.done.Done()
	backoff := 10 * time.Millisecond
	for c.ctx.Err() == nil {
		if f := c.beforeWatch.Load(); f != nil {
			(*f)()
		}
		wctx, wcancel := context.WithCancel(c.newWatchCtx())
		c.wmu.Lock()
		c.watchCancel = wcancel
		c.wmu.Unlock()
		from := c.applied.Load() + 1
		ch := c.s.cli.Watch(wctx, c.s.o.Prefix, clientv3.WithPrefix(), clientv3.WithRev(from),
			clientv3.WithProgressNotify())
		compacted := false
		for resp := range ch {
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				compacted = true
				break
			}
			if err := resp.Err(); err != nil {
				c.s.log.Warn("auth cache watch broke; resuming", zap.Int64("applied", c.applied.Load()), zap.Error(err))
				break
			}
			if resp.IsProgressNotify() {
				c.progress(resp.Header.Revision)
				continue
			}
			if len(resp.Events) > 0 {
				c.apply(&resp)
				backoff = 10 * time.Millisecond
			}
		}
		wcancel()
		if c.ctx.Err() != nil {
			return
		}
		if compacted {
			c.s.log.Warn("auth cache fell behind a compaction; reloading", zap.Int64("applied", c.applied.Load()))
			c.reload()
			continue
		}
		c.sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
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

// progressLoop asks for a progress notification every MaxStaleness/4, so
// that an idle cache is confirmed current well within MaxStaleness.
func (c *cache) progressLoop() {
	defer c.done.Done()
	every := max(c.s.o.MaxStaleness/4, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	var restarted time.Time
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		// A stream that came back from an outage may stay silent to
		// progress requests: when nothing confirmed the cache for half
		// the staleness bound, start the watch afresh (it resumes from
		// the applied revision, so nothing is missed).
		if age := time.Since(time.Unix(0, c.confirmed.Load())); age > c.s.o.MaxStaleness/2 && time.Since(restarted) > c.s.o.MaxStaleness/2 {
			restarted = time.Now()
			c.breakWatch()
		}
		ctx, cancel := context.WithTimeout(c.watchCtx(), c.s.o.DialTimeout)
		c.progressSent.Store(time.Now().UnixNano())
		_ = c.s.cli.RequestProgress(ctx) // a failure shows as an unconfirmed cache
		cancel()
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
