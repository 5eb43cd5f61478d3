package cli

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd"
)

// location is where a store lives: a bolt file, or a prefix of an etcd
// cluster.
type location struct {
	file string        // a bolt file's absolute path, or
	etcd *etcd.Options // an etcd store (credentials from the environment)
}

func (l location) String() string {
	if l.etcd != nil {
		return l.etcd.URL()
	}
	return l.file
}

// parseLocation reads --from or --to: an etcd:// or etcds:// URL, or the
// path of a bolt file.
func (env *Env) parseLocation(flag, s string) (location, error) {
	if s == "" {
		return location{}, fmt.Errorf("--%s is required: a database file or etcd://HOST:PORT[,HOST:PORT]/PREFIX/", flag)
	}
	if etcd.IsURL(s) {
		o, err := env.etcdOptions(s)
		if err != nil {
			return location{}, fmt.Errorf("--%s: %w", flag, err)
		}
		return location{etcd: &o}, nil
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return location{}, fmt.Errorf("--%s: %w", flag, err)
	}
	return location{file: abs}, nil
}

// openSource opens the store to copy from. A bolt file must exist, and no
// other process may hold it: a running caddy keeps writing to its file
// (logins, refreshes), and a copy taken beside it would miss those.
func (env *Env) openSource(ctx context.Context, l location) (store.Store, error) {
	if l.etcd != nil {
		return env.openEtcdWith(ctx, *l.etcd)
	}
	if _, err := os.Stat(l.file); err != nil {
		return nil, fmt.Errorf("--from: %w", err)
	}
	st, err := bolt.Open(l.file, bolt.Options{Timeout: env.lockWait(), CacheSize: -1})
	if errors.Is(err, bolt.ErrLocked) {
		return nil, fmt.Errorf("--from: %s is held by another process, a running caddy most likely: "+
			"stop caddy and migrate again, or use the admin API's backup ('caddy crudauth backup FILE' while it runs) "+
			"and restore that into the target ('caddy crudauth restore --store URL FILE')", l.file)
	}
	if err != nil {
		return nil, fmt.Errorf("--from: %w", err)
	}
	return st, nil
}

// openTarget opens the store to copy into. A bolt file that does not exist
// yet is written under a temporary name beside it (returned as tmp) and
// moved into place only once the copy is verified, so that a failed
// migration leaves no half-written database where a caddy would open it.
func (env *Env) openTarget(ctx context.Context, l location) (st store.Store, tmp string, err error) {
	if l.etcd != nil {
		st, err := env.openEtcdWith(ctx, *l.etcd)
		return st, "", err
	}
	path := l.file
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		f, err := os.CreateTemp(filepath.Dir(path), ".crudauth-migrate-*")
		if err != nil {
			return nil, "", fmt.Errorf("--to: %w", err)
		}
		tmp = f.Name()
		f.Close()
		path = tmp
	} else if err != nil {
		return nil, "", fmt.Errorf("--to: %w", err)
	}
	st, err = bolt.Open(path, bolt.Options{Timeout: env.lockWait(), CacheSize: -1})
	if errors.Is(err, bolt.ErrLocked) {
		err = fmt.Errorf("--to: %s is held by another process, a running caddy most likely: stop it, or migrate into a new file", l.file)
	}
	if err != nil {
		if tmp != "" {
			os.Remove(tmp)
		}
		return nil, "", err
	}
	return st, tmp, nil
}

func (env *Env) lockWait() time.Duration {
	if env.LockWait > 0 {
		return env.LockWait
	}
	return defaultLockWait
}

// Migrate copies every user, session, secret and signing key from one store
// to another (a bolt file or an etcd prefix, either way), exactly: IDs,
// password hashes, token versions, sessions with their generations, the
// signing secret, the signing keys with their retirements. So every token
// issued against the source verifies against the target, and none that is
// refused there is accepted. The target must hold no user, no secret and
// no signing key. The copy is read back
// from both sides and compared before Migrate reports success.
//
// What is not copied: sessions that have expired (their tokens have too),
// the IDs of deleted users (IDs are random, 128 bits: a new one does not
// meet an old one), and the login throttle's counts.
func (env *Env) Migrate(from, to string) error {
	ctx := context.Background()
	src, err := env.parseLocation("from", from)
	if err != nil {
		return err
	}
	dst, err := env.parseLocation("to", to)
	if err != nil {
		return err
	}
	if src.String() == dst.String() {
		return fmt.Errorf("--from and --to are the same store, %s", src)
	}

	in, err := env.openSource(ctx, src)
	if err != nil {
		return err
	}
	defer in.Close()
	env.verbosef("reading %s", src)
	now := time.Now().UTC()
	d, err := dumpOf(ctx, in, now)
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	if len(d.Users) == 0 {
		return fmt.Errorf("%s holds no users: nothing to migrate (is it the right file or prefix?)", src)
	}

	out, tmp, err := env.openTarget(ctx, dst)
	if err != nil {
		return err
	}
	closeOut := func() {
		if out != nil {
			out.Close()
			out = nil
		}
	}
	defer closeOut()
	if tmp != "" {
		defer os.Remove(tmp) // after the rename this fails harmlessly
	}
	if err := refuseNonEmpty(ctx, out, dst); err != nil {
		return err
	}

	env.verbosef("copying %s into %s", counts(d), dst)
	stats, err := store.ImportDump(ctx, out, d)
	if err != nil {
		if tmp != "" || stats.Users == 0 {
			// Users go in all at once or not at all: with none in, the
			// target is as it was.
			return fmt.Errorf("copying into %s: %w; nothing written there", dst, err)
		}
		return fmt.Errorf("copying into %s: %w; %d users, %d sessions, %d secrets and %d signing keys were copied before it failed: "+
			"empty the target before migrating again", dst, err, stats.Users, stats.Sessions, stats.Secrets, stats.Keys)
	}
	fmt.Fprintf(env.Stdout, "copied %s from %s to %s\n", counts(d), src, dst)

	// Verify from a fresh handle on the target, so that what is compared
	// is what another process (a gateway) will read.
	closeOut()
	if tmp != "" {
		out, err = bolt.Open(tmp, bolt.Options{Timeout: env.lockWait(), CacheSize: -1})
	} else {
		out, _, err = env.openTarget(ctx, dst)
	}
	if err != nil {
		return fmt.Errorf("verifying: reopening %s: %w", dst, err)
	}
	sum, err := verify(ctx, d, in, out, now)
	if err != nil {
		keep := "the target is left as it is, for inspection; empty it before migrating again"
		if tmp != "" {
			keep = "nothing written at " + dst.file
		}
		return fmt.Errorf("verifying the copy: %w; %s", err, keep)
	}
	closeOut()
	if tmp != "" {
		if err := os.Rename(tmp, dst.file); err != nil {
			return err
		}
	}
	fmt.Fprintf(env.Stdout, "verified: %s and %s both hold %s, sha256 %s\n", src, dst, counts(d), sum)
	return nil
}

// refuseNonEmpty refuses a target that holds any user, secret or signing
// key: merging two sets of users could clash on names, and a secret or key
// of its own would make the tokens of one side fail, or sign tokens the
// source's gateways do not know.
func refuseNonEmpty(ctx context.Context, st store.Store, l location) error {
	n := 0
	if err := st.ListUsers(ctx, func(*store.User) error { n++; return nil }); err != nil {
		return fmt.Errorf("reading %s: %w", l, err)
	}
	secrets, err := st.Secrets(ctx)
	if err != nil {
		return fmt.Errorf("reading %s: %w", l, err)
	}
	keys, err := st.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("reading %s: %w", l, err)
	}
	if n == 0 && len(secrets) == 0 && len(keys.Keys) == 0 {
		return nil
	}
	why := "migrate into an empty store: a new file, or a prefix no gateway has used"
	if n == 0 {
		// A gateway that starts on an empty store generates its signing
		// secret or key: the likely story is that the gateways were
		// started on the target before the migration.
		why = "a gateway that started on it has generated its signing secret or key; migrate before starting the gateways on the target, or use a new prefix"
	}
	holds := plural(n, "user") + " and " + plural(len(secrets), "secret")
	if len(keys.Keys) > 0 {
		holds = plural(n, "user") + ", " + plural(len(secrets), "secret") + " and " + plural(len(keys.Keys), "signing key")
	}
	return fmt.Errorf("%s already holds %s: nothing copied; %s", l, holds, why)
}

// dumpOf reads every user, every session alive at now, every secret and
// every signing key of st. One now for every read makes two dumps of equal stores equal, even
// when a session expires between them.
func dumpOf(ctx context.Context, st store.Store, now time.Time) (*store.Dump, error) {
	d := &store.Dump{CreatedAt: now}
	if err := st.ListUsers(ctx, func(u *store.User) error {
		d.Users = append(d.Users, u)
		return nil
	}); err != nil {
		return nil, err
	}
	for _, u := range d.Users {
		ss, err := st.ListSessions(ctx, u.ID, now)
		if err != nil {
			return nil, fmt.Errorf("sessions of user %s: %w", u.ID, err)
		}
		d.Sessions = append(d.Sessions, ss...)
	}
	var err error
	if d.Secrets, err = st.Secrets(ctx); err != nil {
		return nil, err
	}
	ks, err := st.SigningKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	d.Keys = ks.Clone().Keys // ks is shared
	return d, nil
}

// verify reads both stores again and compares them with what was copied,
// d: the source must still hold d (nothing wrote to it meanwhile) and the
// target must hold exactly d. It returns the digest of d.
func verify(ctx context.Context, d *store.Dump, src, dst store.Store, now time.Time) (string, error) {
	want := canonical(d)
	for _, side := range []struct {
		name string
		st   store.Store
	}{{"the source", src}, {"the target", dst}} {
		got, err := dumpOf(ctx, side.st, now)
		if err != nil {
			return "", fmt.Errorf("re-reading %s: %w", side.name, err)
		}
		if diff := compareDumps(want, canonical(got)); diff != "" {
			if side.st == src {
				return "", fmt.Errorf("the source changed while it was copied (%s): stop whatever writes to it", diff)
			}
			return "", fmt.Errorf("the target differs from the source: %s", diff)
		}
	}
	return digest(want)
}

// canonical returns a copy of d in a fixed order, times in UTC, so that
// two dumps of the same content compare and hash equal whichever backend
// they came from.
func canonical(d *store.Dump) *store.Dump {
	c := &store.Dump{Secrets: d.Secrets}
	for _, u := range d.Users {
		u = u.Clone()
		u.CreatedAt, u.UpdatedAt, u.PasswordChangedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC(), u.PasswordChangedAt.UTC()
		c.Users = append(c.Users, u)
	}
	slices.SortFunc(c.Users, func(a, b *store.User) int { return cmp.Compare(a.ID, b.ID) })
	for _, x := range d.Sessions {
		x = x.Clone()
		x.RotatedAt, x.CreatedAt, x.LastUsedAt, x.ExpiresAt = x.RotatedAt.UTC(), x.CreatedAt.UTC(), x.LastUsedAt.UTC(), x.ExpiresAt.UTC()
		c.Sessions = append(c.Sessions, x)
	}
	slices.SortFunc(c.Sessions, func(a, b *store.Session) int {
		return cmp.Or(cmp.Compare(a.UserID, b.UserID), cmp.Compare(a.ID, b.ID))
	})
	for _, k := range (&store.KeySet{Keys: d.Keys}).Clone().Keys {
		k.CreatedAt, k.SignFrom, k.RetiredAt = k.CreatedAt.UTC(), k.SignFrom.UTC(), k.RetiredAt.UTC()
		c.Keys = append(c.Keys, k)
	}
	slices.SortFunc(c.Keys, func(a, b store.SigningKey) int { return cmp.Compare(a.ID, b.ID) })
	return c
}

// compareDumps says how two canonical dumps differ, without printing a
// hash, a secret or a key; "" when they are equal.
func compareDumps(a, b *store.Dump) string {
	if len(a.Users) != len(b.Users) || len(a.Sessions) != len(b.Sessions) || len(a.Secrets) != len(b.Secrets) || len(a.Keys) != len(b.Keys) {
		return fmt.Sprintf("%s against %s", counts(a), counts(b))
	}
	for i := range a.Users {
		if !reflect.DeepEqual(a.Users[i], b.Users[i]) {
			return fmt.Sprintf("user %s differs", a.Users[i].ID)
		}
	}
	for i := range a.Sessions {
		if !reflect.DeepEqual(a.Sessions[i], b.Sessions[i]) {
			return fmt.Sprintf("session %s of user %s differs", a.Sessions[i].ID, a.Sessions[i].UserID)
		}
	}
	for name, v := range a.Secrets {
		if w, ok := b.Secrets[name]; !ok || string(w) != string(v) {
			return fmt.Sprintf("secret %q differs", name)
		}
	}
	for i := range a.Keys {
		if !(&store.KeySet{Keys: a.Keys[i : i+1]}).Equal(&store.KeySet{Keys: b.Keys[i : i+1]}) {
			return fmt.Sprintf("signing key %s differs", a.Keys[i].ID)
		}
	}
	return ""
}

// digest is the SHA-256 of a canonical dump in the export format: one
// number for an operator to compare, which names no secret.
func digest(c *store.Dump) (string, error) {
	h := sha256.New()
	if err := store.WriteExport(h, c); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func counts(d *store.Dump) string {
	if len(d.Keys) == 0 {
		return fmt.Sprintf("%s, %s and %s", plural(len(d.Users), "user"), plural(len(d.Sessions), "session"), plural(len(d.Secrets), "secret"))
	}
	return fmt.Sprintf("%s, %s, %s and %s", plural(len(d.Users), "user"), plural(len(d.Sessions), "session"), plural(len(d.Secrets), "secret"),
		plural(len(d.Keys), "signing key"))
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
