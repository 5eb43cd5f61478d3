// Package etcd implements store.Store on an etcd cluster, so that several
// gateways share one set of users, epochs, sessions and secrets.
//
// Every write that must be atomic is one etcd transaction whose compares
// guard what the write read (ModRevision, CreateRevision); when another
// writer committed in between, the write reads again and re-runs the
// caller's fn. Reads other than AuthState are linearizable reads of the
// cluster. AuthState and SigningKeys, on the path of every proxied request,
// are served from a local cache that one watch on the prefix keeps current, in revision
// order; a handle that cannot confirm the cache as current within
// MaxStaleness answers store.ErrUnavailable rather than risk honouring a
// revoked token (see cache.go).
//
// Keys, under Options.Prefix (path segments escaped with url.PathEscape,
// so that no ID can reach into another key's range):
//
//	users/<id>                 userRecord (JSON)
//	names/<normalized name>    the user's ID
//	tombstones/<id>            tombstoneRecord: a deleted ID is never reused
//	sessions/<userID>/<sid>    sessionRecord
//	secrets/<name>             the secret's bytes, created once
//	keys                       keySetRecord: the signing keys (see keys.go)
//	classes/<class>            a password hash class stored at least once
//	throttle/...               reserved for the shared login throttle
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// Defaults of Options.
const (
	DefaultPrefix       = "/crudauth/"
	DefaultDialTimeout  = 2 * time.Second
	DefaultMaxStaleness = 10 * time.Second
)

// Options configures Open.
type Options struct {
	// Endpoints of the cluster's members, as host:port or URLs.
	Endpoints []string
	// Prefix under which every key lives; default "/crudauth/". It must
	// start and end with "/". Gateways that share users share a prefix.
	Prefix string
	// DialTimeout bounds the connection at Open and every request to the
	// cluster: a request that gets no answer within it fails with
	// store.ErrUnavailable. Default 2s.
	DialTimeout time.Duration
	// TLS, when set, is used for the connections to the members.
	TLS *tls.Config
	// Username and Password authenticate to etcd when Username is set.
	Username, Password string
	// MaxStaleness is how long AuthState keeps answering from its cache
	// while it cannot confirm that the cache is current (the watch is
	// down, the member lost its quorum); past it AuthState fails with
	// store.ErrUnavailable. Default 10s.
	MaxStaleness time.Duration
	// Logger receives the store's own messages; nil: none.
	Logger *zap.Logger
}

func (o *Options) setDefaults() error {
	if len(o.Endpoints) == 0 {
		return errors.New("etcd: no endpoints")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !strings.HasPrefix(o.Prefix, "/") || !strings.HasSuffix(o.Prefix, "/") {
		return fmt.Errorf("etcd: prefix %q must start and end with /", o.Prefix)
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.MaxStaleness <= 0 {
		o.MaxStaleness = DefaultMaxStaleness
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return nil
}

// Store is a handle on the users kept under one prefix of an etcd cluster.
// Create it with Open; it is safe for concurrent use.
type Store struct {
	o   Options
	cli *clientv3.Client
	log *zap.Logger

	closed atomic.Bool
	cache  *cache
	// secretMu makes one caller of this handle generate a missing secret
	// while the others wait for it (the contract runs generate once);
	// across handles the transaction decides which value is stored.
	secretMu sync.Mutex
	// pages counts the range reads of rangeAt (a test hook).
	pages atomic.Int64
}

// Open connects to the cluster, loads the auth cache from one consistent
// read and starts the watch that keeps it current. It fails (wrapping
// store.ErrUnavailable when the cluster does not answer) within about
// o.DialTimeout per step, or when ctx ends.
func Open(ctx context.Context, o Options) (*Store, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		DialTimeout: o.DialTimeout,
		// Keepalive pings find a dead connection while no request is
		// in flight, so the watch moves on to a live member.
		DialKeepAliveTime:    o.DialTimeout,
		DialKeepAliveTimeout: o.DialTimeout,
		TLS:                  o.TLS,
		Username:             o.Username,
		Password:             o.Password,
		Logger:               o.Logger.Named("client").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
		Context:              context.Background(),
		// gRPC's default reconnect backoff grows to two minutes: a
		// member back after a short outage would stay unused (and the
		// cache unconfirmed) long after it could answer.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: o.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: connect: %w", unavailable(err))
	}
	s := &Store{o: o, cli: cli, log: o.Logger}
	s.cache = newCache(s)
	if err := s.cache.start(ctx); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("etcd: load auth state: %w", s.mapErr(ctx, err))
	}
	return s, nil
}

// Close stops the watch and closes the connection. Later calls fail with
// store.ErrClosed; a second Close returns nil.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	s.cache.stop()
	return s.cli.Close()
}

// String names the handle for logs.
func (s *Store) String() string {
	return "etcd:" + strings.Join(s.o.Endpoints, ",") + s.o.Prefix
}

// AppliedRevision returns the etcd revision up to which the auth cache has
// applied every change under the prefix.
func (s *Store) AppliedRevision() int64 { return s.cache.appliedRevision() }

// Keys. Segments that come from callers are escaped so that "/" in an ID
// cannot make one user's range cover another's.
func (s *Store) key(parts ...string) string {
	var b strings.Builder
	b.WriteString(s.o.Prefix)
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('/')
		}
		if i == 0 {
			b.WriteString(p) // the namespace, ours
		} else {
			b.WriteString(url.PathEscape(p))
		}
	}
	return b.String()
}

func (s *Store) userKey(id string) string      { return s.key("users", id) }
func (s *Store) tombstoneKey(id string) string { return s.key("tombstones", id) }
func (s *Store) secretKey(name string) string  { return s.key("secrets", name) }
func (s *Store) classKey(c string) string      { return s.key("classes", c) }

// nameKey is not escaped: names are only ever looked up whole, and
// unescaped keys sort in the byte order of the normalized names, which is
// the order ListUsers promises.
func (s *Store) nameKey(username string) string {
	return s.o.Prefix + "names/" + store.NormalizeUsername(username)
}

func (s *Store) sessionKey(userID, sid string) string { return s.key("sessions", userID, sid) }

// sessionsOf is the range of one user's sessions (a prefix, ending in "/").
func (s *Store) sessionsOf(userID string) string { return s.key("sessions", userID) + "/" }

// ns returns the prefix of a namespace: users/, sessions/, ...
func (s *Store) ns(name string) string { return s.o.Prefix + name + "/" }

// call runs one request to the cluster under a context bounded by
// DialTimeout, so that no call outlives it, and maps its failure.
func (s *Store) call(ctx context.Context, fn func(ctx context.Context) error) error {
	return s.callWithin(ctx, s.o.DialTimeout, fn)
}

// pageTimeout bounds one page of a range read (rangeAt), which may take
// far longer than an ordinary request: etcd 3.4 walks a limited range to
// its end, so a page at the start of a million users' prefix takes
// seconds. A cluster that does not answer at all is found by a request
// bounded by DialTimeout first (reachable).
const pageTimeout = time.Minute

// callWithin is call with its own bound.
func (s *Store) callWithin(ctx context.Context, d time.Duration, fn func(ctx context.Context) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return s.mapErr(ctx, fn(cctx))
}

// reachable asks the cluster one cheap linearizable question within
// DialTimeout: a range read may then take longer (pageTimeout) without
// making an unreachable cluster take that long to notice.
func (s *Store) reachable(ctx context.Context) error {
	return s.call(ctx, func(ctx context.Context) error {
		_, err := s.cli.Get(ctx, s.keysKey(), clientv3.WithCountOnly())
		return err
	})
}

// mapErr turns a client error into what callers handle: the caller's own
// context error as is, ErrClosed after Close, and store.ErrUnavailable for
// a cluster that did not answer in time, has no leader or cannot be
// reached.
func (s *Store) mapErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if s.closed.Load() {
		return store.ErrClosed
	}
	return unavailable(err)
}

func unavailable(err error) error {
	if isUnavailable(err) {
		return fmt.Errorf("%w: %v", store.ErrUnavailable, err)
	}
	return err
}

func isUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return transient(ee.Code())
	}
	if st, ok := status.FromError(err); ok {
		if st.Code() == codes.Unknown && (st.Message() == context.DeadlineExceeded.Error() || st.Message() == context.Canceled.Error()) {
			return true
		}
		return transient(st.Code())
	}
	return false
}

func transient(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// maxAttempts bounds how often a write re-reads and retries after losing
// a race, so that a pathological livelock ends in an error.
const maxAttempts = 1000

var errContended = fmt.Errorf("%w: too many concurrent writers, gave up", store.ErrUnavailable)

// committed is called after every write transaction that changed
// something under the prefix at revision rev: it waits until this handle's
// auth cache has applied rev, so that once a write returns, AuthState
// through this handle shows it (the cache is what AuthState reads). When
// the watch does not deliver in time the cache is marked behind and
// AuthState fails closed until it catches up.
func (s *Store) committed(ctx context.Context, rev int64) {
	s.cache.waitApplied(ctx, rev, s.o.DialTimeout)
}

// CatchUp implements store.CatchUpper: the cache, proven current after t,
// holds every write committed before t; otherwise the user's records are
// read from the cluster, in one linearizable transaction. It does not wait
// for the watch: etcd before 3.4.24 and 3.5.8 may send a progress
// notification ahead of the events it covers, so a cache that has reached
// a revision may still lack its events for a moment.
func (s *Store) CatchUp(ctx context.Context, id string, t time.Time) (store.AuthState, error) {
	if s.cache.confirmed.Load() >= t.UnixNano() {
		return s.AuthState(ctx, id)
	}
	var resp *clientv3.TxnResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).Then(
			clientv3.OpGet(s.userKey(id)),
			clientv3.OpGet(s.sessionsOf(id), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		).Commit()
		return err
	}); err != nil {
		return store.AuthState{}, err
	}
	users := resp.Responses[0].GetResponseRange().Kvs
	if len(users) == 0 {
		return store.AuthState{}, store.ErrNotFound
	}
	e := decodeEntry(users[0].Value)
	if e.err != nil {
		return store.AuthState{}, e.err
	}
	st := e.st
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if uid, sid, ok := s.cache.sessionID(kv.Key); ok && uid == id {
			st.Sessions = append(st.Sessions, sid)
		}
	}
	slices.Sort(st.Sessions)
	return st, nil
}

// txn runs one transaction, If(cmps).Then(then).Else(els), through call.
// It waits for nothing: a read, or a write whose success does not always
// produce a new revision, decides itself whether to call committed.
func (s *Store) txn(ctx context.Context, cmps []clientv3.Cmp, then, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	var resp *clientv3.TxnResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
		return err
	}); err != nil {
		return nil, err
	}
	return resp, nil
}

// write is txn for a transaction whose Then branch always changes
// something under the prefix. When the compares held, it calls committed
// before it returns, so that this handle's reads see the write (or fail
// closed until they do). When they failed nothing was written and nothing
// is waited for: waiting on the revision of a transaction that wrote
// nothing would, while the watch is down, mark the cache behind for a
// write that never happened.
func (s *Store) write(ctx context.Context, cmps []clientv3.Cmp, then, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	resp, err := s.txn(ctx, cmps, then, els)
	if err == nil && resp.Succeeded {
		s.committed(ctx, resp.Header.Revision)
	}
	return resp, err
}

// Interface guards.
var (
	_ store.Store      = (*Store)(nil)
	_ store.CatchUpper = (*Store)(nil)
)
