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
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	classes := map[string]bool{}
	for _, u := range users {
		if c := password.Class(u.PasswordHash); c != "" && !classes[c] {
			classes[c] = true
			k := s.classKey(c)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			ops = append(ops, clientv3.OpPut(k, now.Format(time.RFC3339)))
		}
	}
	for name, v := range d.Secrets {
		k := s.secretKey(name)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		ops = append(ops, clientv3.OpPut(k, string(v)))
	}
	if len(ops) > 0 {
		if err := bulkTxn(ctx, cli, cmps, ops); err != nil {
			return fmt.Errorf("etcd: secrets and hash classes: %w", err)
		}
	}

	userTxn := func(chunk []*store.User) error {
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, u := range chunk {
			rec, err := encodeUser(u)
			if err != nil {
				return err
			}
			cmps = append(cmps,
				clientv3.Compare(clientv3.CreateRevision(s.userKey(u.ID)), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(s.nameKey(u.Username)), "=", 0))
			ops = append(ops, clientv3.OpPut(s.userKey(u.ID), rec), clientv3.OpPut(s.nameKey(u.Username), u.ID))
		}
		return bulkTxn(ctx, cli, cmps, ops)
	}
	if err := inParallel(ctx, slices.Collect(slices.Chunk(users, lo.MaxTxnOps/2)), lo.Parallel, userTxn); err != nil {
		return fmt.Errorf("etcd: users: %w", err)
	}
	sessionTxn := func(chunk []*store.Session) error {
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, x := range chunk {
			rec, err := encodeSession(x)
			if err != nil {
				return err
			}
			k := s.sessionKey(x.UserID, x.ID)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			ops = append(ops, clientv3.OpPut(k, rec))
		}
		return bulkTxn(ctx, cli, cmps, ops)
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

func bulkTxn(ctx context.Context, cli *clientv3.Client, cmps []clientv3.Cmp, ops []clientv3.Op) error {
	cctx, cancel := context.WithTimeout(ctx, bulkTxnTimeout)
	defer cancel()
	resp, err := cli.Txn(cctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return unavailable(err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("a key of the batch exists: %w", store.ErrExists)
	}
	return nil
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
