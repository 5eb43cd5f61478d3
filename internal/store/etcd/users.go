package etcd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// usersPerTxn is how many users one CreateUsers transaction holds: each
// needs three compares (name, ID, tombstone free), and etcd refuses a
// transaction with more than --max-txn-ops (default 128) compares.
const usersPerTxn = 40

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	return s.CreateUsers(ctx, []*store.User{u})
}

// CreateUsers implements store.Store. Up to usersPerTxn users are one
// transaction. A larger batch (an import) is written in transactions of
// that size; when one of them fails, the users the earlier ones stored are
// deleted again, so the batch is all or nothing once CreateUsers returns,
// although another reader may glimpse part of it meanwhile. The elements
// of us are updated only on success.
func (s *Store) CreateUsers(ctx context.Context, us []*store.User) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	now := time.Now().UTC()
	prepared := make([]*store.User, len(us))
	names := map[string]bool{}
	ids := map[string]bool{}
	for i, u := range us {
		if u == nil {
			return errors.New("user is nil")
		}
		if u.Username == "" {
			return errors.New("username is empty")
		}
		nu := u.Clone()
		for _, t := range []*time.Time{&nu.CreatedAt, &nu.UpdatedAt, &nu.PasswordChangedAt} {
			if t.IsZero() {
				*t = now
			}
		}
		norm := store.NormalizeUsername(nu.Username)
		if names[norm] {
			return fmt.Errorf("username %q: %w", nu.Username, store.ErrExists)
		}
		names[norm] = true
		if nu.ID != "" {
			if ids[nu.ID] {
				return fmt.Errorf("user id %s is or was in use: %w", nu.ID, store.ErrExists)
			}
			ids[nu.ID] = true
		}
		prepared[i] = nu
	}
	for _, nu := range prepared {
		// 128 random bits: a clash is astronomically unlikely, and the
		// transaction checks anyway.
		for nu.ID == "" {
			if id := store.NewID(); !ids[id] {
				nu.ID = id
				ids[id] = true
			}
		}
	}
	var done [][]*store.User
	for chunk := range slices.Chunk(prepared, usersPerTxn) {
		if err := s.createChunk(ctx, chunk, now); err != nil {
			if len(done) > 0 {
				s.undoCreate(ctx, done)
			}
			return err
		}
		done = append(done, chunk)
	}
	for i, u := range us {
		*u = *prepared[i]
	}
	return nil
}

// createChunk stores users in one transaction.
func (s *Store) createChunk(ctx context.Context, users []*store.User, now time.Time) error {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	classes := map[string]bool{}
	for _, u := range users {
		rec, err := encodeUser(u)
		if err != nil {
			return err
		}
		cmps = append(cmps,
			clientv3.Compare(clientv3.CreateRevision(s.nameKey(u.Username)), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(s.userKey(u.ID)), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(s.tombstoneKey(u.ID)), "=", 0))
		ops = append(ops, clientv3.OpPut(s.userKey(u.ID), rec), clientv3.OpPut(s.nameKey(u.Username), u.ID))
		if c := password.Class(u.PasswordHash); c != "" && !classes[c] {
			classes[c] = true
			ops = append(ops, clientv3.OpPut(s.classKey(c), now.Format(time.RFC3339)))
		}
	}
	resp, err := s.write(ctx, cmps, ops, nil)
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return s.whichTaken(ctx, users)
	}
	return nil
}

// whichTaken names the first user of a refused create whose name or ID
// is taken.
func (s *Store) whichTaken(ctx context.Context, users []*store.User) error {
	var ops []clientv3.Op
	for _, u := range users {
		ops = append(ops,
			clientv3.OpGet(s.nameKey(u.Username), clientv3.WithCountOnly()),
			clientv3.OpGet(s.userKey(u.ID), clientv3.WithCountOnly()),
			clientv3.OpGet(s.tombstoneKey(u.ID), clientv3.WithCountOnly()))
	}
	resp, err := s.txn(ctx, nil, ops, nil)
	if err != nil {
		return fmt.Errorf("%w (and finding which user clashed failed: %v)", store.ErrExists, err)
	}
	for i, u := range users {
		r := resp.Responses[3*i : 3*i+3]
		if r[0].GetResponseRange().Count > 0 {
			return fmt.Errorf("username %q: %w", u.Username, store.ErrExists)
		}
		if r[1].GetResponseRange().Count > 0 || r[2].GetResponseRange().Count > 0 {
			return fmt.Errorf("user id %s is or was in use: %w", u.ID, store.ErrExists)
		}
	}
	// Whoever held it let go in between: report the clash all the same.
	return fmt.Errorf("a username or id of the batch was taken: %w", store.ErrExists)
}

// undoCreate deletes the users of the transactions a failed batch
// committed, each only while it is unchanged since (no one else's write
// is undone). It is best effort: it runs on a fresh context, since the
// caller's may be what ended the batch.
func (s *Store) undoCreate(ctx context.Context, chunks [][]*store.User) {
	ctx = context.WithoutCancel(ctx)
	for _, chunk := range chunks {
		for _, u := range chunk {
			_, err := s.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.Version(s.userKey(u.ID)), "=", 1)},
				[]clientv3.Op{clientv3.OpDelete(s.userKey(u.ID)), clientv3.OpDelete(s.nameKey(u.Username))}, nil)
			if err != nil {
				s.log.Error("undoing a failed batch create", zap.String("user_id", u.ID), zap.Error(err))
			}
		}
	}
}

// getUser reads users/<id>: the user, its ModRevision, or ErrNotFound.
func (s *Store) getUser(ctx context.Context, id string, opts ...clientv3.OpOption) (*store.User, int64, error) {
	var resp *clientv3.GetResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.userKey(id), opts...)
		return err
	}); err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, store.ErrNotFound
	}
	u, err := decodeUser(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	return u, resp.Kvs[0].ModRevision, nil
}

// GetUser implements store.Store with a linearizable read.
func (s *Store) GetUser(ctx context.Context, id string) (*store.User, error) {
	u, _, err := s.getUser(ctx, id)
	return u, err
}

// GetUserByName implements store.Store: the name index and the user are
// read at one revision, so a rename in between cannot pair them wrongly.
func (s *Store) GetUserByName(ctx context.Context, username string) (*store.User, error) {
	var resp *clientv3.GetResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.nameKey(username))
		return err
	}); err != nil {
		return nil, err
	}
	if username == "" || len(resp.Kvs) == 0 {
		return nil, store.ErrNotFound
	}
	u, _, err := s.getUser(ctx, string(resp.Kvs[0].Value), clientv3.WithRev(resp.Header.Revision))
	return u, err
}

// UpdateUser implements store.Store. The write compares the user's
// ModRevision with the one fn's copy was read at; when another writer
// committed in between, it runs fn again on the user the failed
// transaction read back.
func (s *Store) UpdateUser(ctx context.Context, id string, fn func(u *store.User) error) (*store.User, error) {
	old, rev, err := s.getUser(ctx, id)
	if err != nil {
		return nil, err
	}
	for range maxAttempts {
		u := old.Clone()
		if err := fn(u); err != nil {
			return nil, err
		}
		if u.ID != id {
			return nil, errors.New("user id cannot be changed")
		}
		if u.Username == "" {
			return nil, errors.New("username is empty")
		}
		u.UpdatedAt = time.Now().UTC()
		rec, err := encodeUser(u)
		if err != nil {
			return nil, err
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.userKey(id)), "=", rev)}
		ops := []clientv3.Op{clientv3.OpPut(s.userKey(id), rec)}
		oldName, newName := s.nameKey(old.Username), s.nameKey(u.Username)
		if oldName != newName {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(newName), "=", 0))
			ops = append(ops, clientv3.OpDelete(oldName), clientv3.OpPut(newName, id))
		}
		if c := password.Class(u.PasswordHash); c != "" {
			ops = append(ops, clientv3.OpPut(s.classKey(c), u.UpdatedAt.Format(time.RFC3339)))
		}
		resp, err := s.write(ctx, cmps, ops,
			[]clientv3.Op{clientv3.OpGet(s.userKey(id)), clientv3.OpGet(newName, clientv3.WithCountOnly())})
		if err != nil {
			return nil, err
		}
		if resp.Succeeded {
			return u, nil
		}
		cur := resp.Responses[0].GetResponseRange().Kvs
		if len(cur) == 0 {
			return nil, store.ErrNotFound
		}
		if cur[0].ModRevision == rev {
			// The user is as fn saw it: the new name is what is taken.
			return nil, fmt.Errorf("username %q: %w", u.Username, store.ErrExists)
		}
		if old, err = decodeUser(cur[0].Value); err != nil {
			return nil, err
		}
		rev = cur[0].ModRevision
	}
	return nil, errContended
}

// DeleteUser implements store.Store: the user, its name, its sessions go
// and its tombstone comes in one transaction.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	u, rev, err := s.getUser(ctx, id)
	if err != nil {
		return err
	}
	for range maxAttempts {
		resp, err := s.write(ctx,
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.userKey(id)), "=", rev)},
			[]clientv3.Op{clientv3.OpDelete(s.userKey(id)), clientv3.OpDelete(s.nameKey(u.Username)),
				clientv3.OpDelete(s.sessionsOf(id), clientv3.WithPrefix()),
				clientv3.OpPut(s.tombstoneKey(id), encodeTombstone(time.Now().UTC()))},
			[]clientv3.Op{clientv3.OpGet(s.userKey(id))})
		if err != nil {
			return err
		}
		if resp.Succeeded {
			return nil
		}
		cur := resp.Responses[0].GetResponseRange().Kvs
		if len(cur) == 0 {
			return store.ErrNotFound
		}
		if u, err = decodeUser(cur[0].Value); err != nil {
			return err
		}
		rev = cur[0].ModRevision
	}
	return errContended
}

// pageSize is how many keys one read of a range returns, so that a large
// range never becomes one response beyond etcd's message limit (10000
// users are some 5 MB). It is this large because etcd 3.4 (Debian's)
// walks every key from a page's start to the range's end before it
// applies the limit: reading n keys costs n²/(2·pageSize) key visits,
// and with pages of 1000 a gateway's first load of a million users took
// over ten minutes in the bench. etcd 3.5 applies the limit in the walk.
const pageSize = 10000

// rangeAt calls fn for every key-value under prefix as of revision rev (0:
// now), page by page, and returns the revision read.
func (s *Store) rangeAt(ctx context.Context, prefix string, rev int64, keysOnly bool, fn func(k, v []byte, modRev int64) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		var resp *clientv3.GetResponse
		s.pages.Add(1)
		if err := s.callWithin(ctx, max(s.o.DialTimeout, pageTimeout), func(ctx context.Context) (err error) {
			resp, err = s.cli.Get(ctx, from, opts...)
			return err
		}); err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv.Key, kv.Value, kv.ModRevision); err != nil {
				return rev, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// ListUsers implements store.Store: every user as of one revision, in
// normalized-username order. fn runs after the read, so it may call into
// the store.
func (s *Store) ListUsers(ctx context.Context, fn func(u *store.User) error) error {
	var users []*store.User
	if _, err := s.rangeAt(ctx, s.ns("users"), 0, false, func(_, v []byte, _ int64) error {
		u, err := decodeUser(v)
		if err != nil {
			return err
		}
		users = append(users, u)
		return nil
	}); err != nil {
		return err
	}
	slices.SortFunc(users, func(a, b *store.User) int {
		return cmpString(store.NormalizeUsername(a.Username), store.NormalizeUsername(b.Username))
	})
	for _, u := range users {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(u); err != nil {
			return err
		}
	}
	return nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// HashClasses implements store.Store.
func (s *Store) HashClasses(ctx context.Context) ([]string, error) {
	var out []string
	pre := s.ns("classes")
	_, err := s.rangeAt(ctx, pre, 0, true, func(k, _ []byte, _ int64) error {
		c, err := unescape(string(k[len(pre):]))
		if err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// Secret implements store.Store. The value is created with a compare on
// CreateRevision == 0: of concurrent creators on any handles one value is
// stored, and every other caller reads it back. Within a handle, callers
// wait for each other, so generate runs once.
func (s *Store) Secret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error) {
	if name == "" {
		return nil, errors.New("secret name is empty")
	}
	get := func() ([]byte, bool, error) {
		var resp *clientv3.GetResponse
		if err := s.call(ctx, func(ctx context.Context) (err error) {
			resp, err = s.cli.Get(ctx, s.secretKey(name))
			return err
		}); err != nil {
			return nil, false, err
		}
		if len(resp.Kvs) == 0 {
			return nil, false, nil
		}
		return resp.Kvs[0].Value, true, nil
	}
	if v, ok, err := get(); err != nil || ok {
		return v, err
	}
	s.secretMu.Lock()
	defer s.secretMu.Unlock()
	if v, ok, err := get(); err != nil || ok {
		return v, err
	}
	v, err := store.NewSecret(name, generate)
	if err != nil {
		return nil, err
	}
	key := s.secretKey(name)
	resp, err := s.write(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(key, string(v))}, []clientv3.Op{clientv3.OpGet(key)})
	if err != nil {
		return nil, err
	}
	if resp.Succeeded {
		return v, nil
	}
	return resp.Responses[0].GetResponseRange().Kvs[0].Value, nil
}

// Secrets implements store.Store.
func (s *Store) Secrets(ctx context.Context) (map[string][]byte, error) {
	out := map[string][]byte{}
	pre := s.ns("secrets")
	_, err := s.rangeAt(ctx, pre, 0, false, func(k, v []byte, _ int64) error {
		name, err := unescape(string(k[len(pre):]))
		if err != nil {
			return err
		}
		out[name] = slices.Clone(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AuthState implements store.Store from the local cache: no round trip.
func (s *Store) AuthState(ctx context.Context, id string) (store.AuthState, error) {
	if s.closed.Load() {
		return store.AuthState{}, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return store.AuthState{}, err
	}
	return s.cache.get(id)
}
