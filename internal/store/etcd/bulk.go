package etcd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// bulkTxnTimeout bounds one transaction of LoadEmpty: a full one carries
// tens of KB or more, longer to commit than a store call under load.
const bulkTxnTimeout = 30 * time.Second

// LoadOptions tune LoadEmpty.
type LoadOptions struct {
	// Parallel is how many transactions are in flight at once. Default 4.
	Parallel int
	// MaxTxnOps is the cluster's --max-txn-ops: etcd refuses a
	// transaction with more compares or more operations. Each user is two
	// keys (the user, its name), each session one. Default 128, etcd's.
	MaxTxnOps int
}

// LoadEmpty writes the users, sessions and secrets of d into a prefix that
// holds no key at all, with several large transactions in flight. It is
// the fast path for filling a new prefix (a benchmark's million users);
// Import goes through CreateUsers and CreateSession, one session per
// transaction and one transaction at a time.
//
// What keeps it sound without the compares those make on state that an
// empty prefix cannot have (tombstones, the session limit, other
// sessions): the prefix is checked empty first, nothing may write to it
// meanwhile (no gateway runs on it yet), and every key is still created
// only if absent (CreateRevision = 0), so a clash fails the transaction
// instead of overwriting. The records are this package's own, so a store
// opened on the prefix reads them as if CreateUsers and CreateSession had
// written them. Users are written before any session, and a session of a
// user not in d is refused up front. On error part of d may be written:
// empty the prefix before trying again.
func LoadEmpty(ctx context.Context, o Options, d *store.Dump, lo LoadOptions) error {
	if err := o.setDefaults(); err != nil {
		return err
	}
	if lo.Parallel <= 0 {
		lo.Parallel = 4
	}
	if lo.MaxTxnOps <= 0 {
		lo.MaxTxnOps = 128
	}
	if lo.MaxTxnOps < 2 {
		return errors.New("etcd: LoadOptions.MaxTxnOps below 2")
	}
	now := time.Now().UTC()
	users, sessions, err := prepareLoad(d, now)
	if err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: o.Endpoints, DialTimeout: o.DialTimeout, TLS: o.TLS,
		Username: o.Username, Password: o.Password, Context: ctx,
	})
	if err != nil {
		return fmt.Errorf("etcd: connect: %w", unavailable(err))
	}
	defer cli.Close()
	s := &Store{o: o, cli: cli, log: o.Logger}

	cctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	resp, err := cli.Get(cctx, o.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return fmt.Errorf("etcd: %w", unavailable(err))
	}
	if resp.Count > 0 {
		return fmt.Errorf("etcd: prefix %s holds %d keys: LoadEmpty fills an empty prefix only", o.Prefix, resp.Count)
	}

	// The hash classes and the secrets: one small transaction (a dump
	// holds a handful of each).
	var meta []bulkKV
	classes := map[string]bool{}
	for _, u := range users {
		if c := password.Class(u.PasswordHash); c != "" && !classes[c] {
			classes[c] = true
			meta = append(meta, bulkKV{s.classKey(c), now.Format(time.RFC3339)})
		}
	}
	for name, v := range d.Secrets {
		meta = append(meta, bulkKV{s.secretKey(name), string(v)})
	}
	for chunk := range slices.Chunk(meta, lo.MaxTxnOps) {
		if err := createAll(ctx, cli, chunk); err != nil {
			return fmt.Errorf("etcd: secrets and hash classes: %w", err)
		}
	}

	userTxn := func(chunk []*store.User) error {
		kvs := make([]bulkKV, 0, 2*len(chunk))
		for _, u := range chunk {
			rec, err := encodeUser(u)
			if err != nil {
				return err
			}
			kvs = append(kvs, bulkKV{s.userKey(u.ID), rec}, bulkKV{s.nameKey(u.Username), u.ID})
		}
		return createAll(ctx, cli, kvs)
	}
	if err := inParallel(ctx, slices.Collect(slices.Chunk(users, lo.MaxTxnOps/2)), lo.Parallel, userTxn); err != nil {
		return fmt.Errorf("etcd: users: %w", err)
	}
	sessionTxn := func(chunk []*store.Session) error {
		kvs := make([]bulkKV, 0, len(chunk))
		for _, x := range chunk {
			rec, err := encodeSession(x)
			if err != nil {
				return err
			}
			kvs = append(kvs, bulkKV{s.sessionKey(x.UserID, x.ID), rec})
		}
		return createAll(ctx, cli, kvs)
	}
	if err := inParallel(ctx, slices.Collect(slices.Chunk(sessions, lo.MaxTxnOps)), lo.Parallel, sessionTxn); err != nil {
		return fmt.Errorf("etcd: sessions: %w", err)
	}
	return nil
}

// prepareLoad checks d as CreateUsers and CreateSession would (names
// present and unique once normalized, IDs present and unique, sessions of
// users in d, each ID once per user) and fills the times they fill.
func prepareLoad(d *store.Dump, now time.Time) ([]*store.User, []*store.Session, error) {
	users := make([]*store.User, len(d.Users))
	names := make(map[string]bool, len(d.Users))
	ids := make(map[string]bool, len(d.Users))
	for i, u := range d.Users {
		switch {
		case u == nil:
			return nil, nil, errors.New("user is nil")
		case u.Username == "":
			return nil, nil, errors.New("username is empty")
		case u.ID == "":
			return nil, nil, fmt.Errorf("user %q has no id", u.Username)
		}
		norm := store.NormalizeUsername(u.Username)
		if names[norm] {
			return nil, nil, fmt.Errorf("username %q: %w", u.Username, store.ErrExists)
		}
		if ids[u.ID] {
			return nil, nil, fmt.Errorf("user id %s: %w", u.ID, store.ErrExists)
		}
		names[norm], ids[u.ID] = true, true
		nu := u.Clone()
		for _, t := range []*time.Time{&nu.CreatedAt, &nu.UpdatedAt, &nu.PasswordChangedAt} {
			if t.IsZero() {
				*t = now
			}
		}
		users[i] = nu
	}
	sessions := make([]*store.Session, len(d.Sessions))
	seen := make(map[[2]string]bool, len(d.Sessions))
	for i, x := range d.Sessions {
		ns, err := store.PrepareSession(x, now)
		if err != nil {
			return nil, nil, err
		}
		if ns.ID == "" {
			return nil, nil, fmt.Errorf("a session of user %s has no id", ns.UserID)
		}
		if !ids[ns.UserID] {
			return nil, nil, fmt.Errorf("session %s: user %s: %w", ns.ID, ns.UserID, store.ErrNotFound)
		}
		k := [2]string{ns.UserID, ns.ID}
		if seen[k] {
			return nil, nil, fmt.Errorf("session %s of user %s appears twice", ns.ID, ns.UserID)
		}
		seen[k] = true
		sessions[i] = ns
	}
	return users, sessions, nil
}

// bulkKV is one key LoadEmpty creates, with its value.
type bulkKV struct{ key, value string }

// bulkAttempts bounds how often createAll tries a transaction whose
// outcome a timeout left unknown.
const bulkAttempts = 5

// createAll creates every key of kvs in one transaction, each only if
// absent. A cluster that times out (a busy machine, a leader change) may
// still have committed the transaction: then the keys are read back, and
// the transaction counts as done when every key holds exactly its value,
// is tried again when none exists, and fails when only some do or one
// holds another value.
func createAll(ctx context.Context, cli *clientv3.Client, kvs []bulkKV) error {
	cmps := make([]clientv3.Cmp, len(kvs))
	ops := make([]clientv3.Op, len(kvs))
	for i, kv := range kvs {
		cmps[i] = clientv3.Compare(clientv3.CreateRevision(kv.key), "=", 0)
		ops[i] = clientv3.OpPut(kv.key, kv.value)
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, bulkTxnTimeout)
		resp, err := cli.Txn(cctx).If(cmps...).Then(ops...).Commit()
		cancel()
		if err == nil && resp.Succeeded {
			return nil
		}
		if err == nil && attempt == 1 {
			return fmt.Errorf("a key of the batch exists: %w", store.ErrExists)
		}
		if err != nil && (!isUnavailable(err) || attempt == bulkAttempts || ctx.Err() != nil) {
			return unavailable(err)
		}
		// A timeout, or a later attempt's compares failing: did an
		// earlier attempt commit?
		present, err := keysHolding(ctx, cli, kvs)
		switch {
		case err != nil && attempt == bulkAttempts:
			return err
		case err != nil:
		case present == len(kvs):
			return nil
		case present > 0:
			return fmt.Errorf("%d of %d keys of a batch exist after a timeout: %w", present, len(kvs), store.ErrExists)
		}
		if attempt == bulkAttempts {
			return fmt.Errorf("a batch not committed after %d attempts: %w", attempt, store.ErrUnavailable)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff *= 2
	}
}

// keysHolding reads every key of kvs in one transaction and returns how
// many exist, or an error when one holds another value than kvs gives it.
func keysHolding(ctx context.Context, cli *clientv3.Client, kvs []bulkKV) (int, error) {
	ops := make([]clientv3.Op, len(kvs))
	for i, kv := range kvs {
		ops[i] = clientv3.OpGet(kv.key)
	}
	cctx, cancel := context.WithTimeout(ctx, bulkTxnTimeout)
	defer cancel()
	resp, err := cli.Txn(cctx).Then(ops...).Commit()
	if err != nil {
		return 0, unavailable(err)
	}
	n := 0
	for i, r := range resp.Responses {
		got := r.GetResponseRange().Kvs
		if len(got) == 0 {
			continue
		}
		if string(got[0].Value) != kvs[i].value {
			return 0, fmt.Errorf("key %s holds another value: %w", kvs[i].key, store.ErrExists)
		}
		n++
	}
	return n, nil
}

// inParallel runs fn on every chunk, at most parallel at a time, and
// returns the first error (the chunks not started by then are skipped).
func inParallel[T any](ctx context.Context, chunks [][]T, parallel int, fn func([]T) error) error {
	parallel = max(parallel, 1)
	work := make(chan []T)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	stop := make(chan struct{})
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				if err := fn(c); err != nil {
					once.Do(func() { first = err; close(stop) })
				}
			}
		}()
	}
feed:
	for _, c := range chunks {
		select {
		case work <- c:
		case <-stop:
			break feed
		case <-ctx.Done():
			once.Do(func() { first = ctx.Err(); close(stop) })
			break feed
		}
	}
	close(work)
	wg.Wait()
	return first
}
