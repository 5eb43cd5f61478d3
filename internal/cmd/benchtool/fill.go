package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
)

// benchPassword is every benchmark user's password. One argon2id hash of it
// is computed per fill and stored for every user: hashing a million
// passwords would take hours and changes nothing the benchmark looks at.
const benchPassword = "bench-password-not-secret"

func userName(i int) string { return fmt.Sprintf("bench%07d", i) }

// fillResult says how the database was made and how long it took.
type fillResult struct {
	Users int `json:"users"`
	// Method is "CreateUsers" (the store's batch API, many users per
	// transaction) or "bbolt" (direct writes with the bolt package's layout, pages
	// 90% full, when the store has no batch API).
	Method string `json:"method"`
	// CreateUserMs is the mean time of a single-user CreateUser (one
	// transaction, one fsync) over the first SingleUsers users.
	CreateUserMs float64 `json:"create_user_ms"`
	SingleUsers  int     `json:"single_users"`
	// Seconds is the whole fill, the single-user part included.
	Seconds float64 `json:"seconds"`
	// FileMB is the database file size.
	FileMB float64 `json:"file_mb"`
	// Sessions were created after the users (one per user, and the
	// refresh cases'), in SessionSeconds (see addSessions).
	Sessions       int     `json:"sessions"`
	SessionSeconds float64 `json:"session_seconds"`
}

// fill creates n users named userName(i) with one shared password hash and
// returns their IDs in index order.
func fill(path string, n int, hash string) ([]string, fillResult, error) {
	start := time.Now()
	res := fillResult{Users: n}
	ctx := context.Background()
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		return nil, res, err
	}
	ids := make([]string, n)

	// Most users in batches, in ID order, so that each batch appends to the
	// B+tree (and the store packs the pages it fills, as `bbolt compact`
	// would) instead of rewriting pages all over it.
	single := min(n, 100)
	rest := n - single
	for i := single; i < n; i++ {
		ids[i] = store.NewID()
	}
	order := make([]int, rest) // user indexes, in ID order
	for k := range order {
		order[k] = single + k
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(ids[a], ids[b]) })
	const batch = 20000
	res.Method = "CreateUsers"
	for lo := 0; lo < rest; lo += batch {
		hi := min(lo+batch, rest)
		us := make([]*store.User, 0, hi-lo)
		for _, i := range order[lo:hi] {
			us = append(us, &store.User{ID: ids[i], Username: userName(i), PasswordHash: hash})
		}
		if err := st.CreateUsers(ctx, us); err != nil {
			st.Close()
			return nil, res, err
		}
	}

	// Then a few users through the ordinary API, timed: what a CLI loop
	// costs. Their generated IDs land anywhere among the others.
	t0 := time.Now()
	for i := 0; i < single; i++ {
		u := &store.User{Username: userName(i), PasswordHash: hash}
		if err := st.CreateUser(ctx, u); err != nil {
			st.Close()
			return nil, res, err
		}
		ids[i] = u.ID
	}
	res.SingleUsers = single
	if single > 0 {
		res.CreateUserMs = float64(time.Since(t0).Microseconds()) / 1000 / float64(single)
	}
	if err := st.Close(); err != nil {
		return nil, res, err
	}
	if err := checkFill(path, ids, n); err != nil {
		return nil, res, err
	}
	res.Seconds = time.Since(start).Seconds()
	if fi, err := os.Stat(path); err == nil {
		res.FileMB = float64(fi.Size()) / (1 << 20)
	}
	return ids, res, nil
}

// checkFill reopens the file through the bolt package and reads a sample of users
// back by name and by ID; small databases get the store's full Check.
func checkFill(path string, ids []string, n int) error {
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	ctx := context.Background()
	for k := 0; k < 200 && n > 0; k++ {
		i := rand.IntN(n)
		u, err := st.GetUserByName(ctx, userName(i))
		if err != nil {
			return fmt.Errorf("filled user %s: %w", userName(i), err)
		}
		if u.ID != ids[i] {
			return fmt.Errorf("filled user %s has id %s, want %s", userName(i), u.ID, ids[i])
		}
		if _, err := st.AuthState(ctx, ids[i]); err != nil {
			return fmt.Errorf("auth state of %s: %w", ids[i], err)
		}
	}
	if n <= 20000 {
		return st.Check()
	}
	return nil
}

func newHash() (string, error) {
	h, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		return "", err
	}
	return h.Hash(benchPassword)
}

func writeLines(path string, lines []string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, l := range lines {
		w.WriteString(l)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func runFill(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ExitOnError)
	db := fs.String("db", "", "database file")
	n := fs.Int("n", 1000, "users")
	idsOut := fs.String("ids", "", "write the user IDs here, one a line")
	_ = fs.Parse(args)
	hash, err := newHash()
	if err != nil {
		return err
	}
	ids, res, err := fill(*db, *n, hash)
	if err != nil {
		return err
	}
	if *idsOut != "" {
		if err := writeLines(*idsOut, ids); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	return nil
}

// sessionTTL is how long the sessions the bench creates live: longer than
// any run, as the gateway's refresh_ttl in the bench configuration.
const sessionTTL = 24 * time.Hour

// addSessions creates one session for each of userIDs in the database at
// path, as a login would (generation 1, the bench's default scope), through
// the store's CreateSession. It returns the session IDs, in the order of
// userIDs, and how long the whole took.
//
// CreateSession is one transaction and one disk sync per session, about
// 1.5 ms on the reference machine: a million would take half an hour. With
// scratch (a directory on tmpfs, where a sync costs nothing) the file is
// copied there, given its sessions, and copied back; the contents are the
// same, only the syncs are skipped.
func addSessions(path string, userIDs []string, scratch string) ([]string, time.Duration, error) {
	start := time.Now()
	work := path
	if scratch != "" {
		dir, err := os.MkdirTemp(scratch, "crudauth-bench-")
		if err != nil {
			return nil, 0, err
		}
		defer os.RemoveAll(dir)
		work = filepath.Join(dir, filepath.Base(path))
		if err := copyFile(work, path); err != nil {
			return nil, 0, err
		}
	}
	st, err := bolt.Open(work, bolt.Options{})
	if err != nil {
		return nil, 0, err
	}
	ctx := context.Background()
	exp := time.Now().Add(sessionTTL)
	sids := make([]string, len(userIDs))
	for i, id := range userIDs {
		s := &store.Session{UserID: id, Scopes: []string{"api:read"}, Generation: 1, ExpiresAt: exp,
			UserAgent: "benchtool", Address: "127.0.0.1"}
		if _, err := st.CreateSession(ctx, s, 0); err != nil {
			st.Close()
			return nil, 0, fmt.Errorf("session for %s: %w", id, err)
		}
		sids[i] = s.ID
	}
	if err := st.Close(); err != nil {
		return nil, 0, err
	}
	if work != path {
		if err := copyFile(path, work); err != nil {
			return nil, 0, err
		}
	}
	return sids, time.Since(start), nil
}

// scratchDir is a tmpfs directory for addSessions, or "" when the machine
// has none.
func scratchDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if f, err := os.CreateTemp("/dev/shm", "crudauth-bench-probe-"); err == nil {
			f.Close()
			os.Remove(f.Name())
			return "/dev/shm"
		}
	}
	return ""
}

// copyFile copies src to dst (created or truncated, mode 0600) and syncs it.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
