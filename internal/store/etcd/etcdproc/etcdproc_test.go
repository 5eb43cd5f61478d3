package etcdproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestStartWithoutTesting starts a cluster the way a program does (no
// testing.TB, default directory), writes through it, crashes and restarts
// a member, and checks that Close removes what Start created.
func TestStartWithoutTesting(t *testing.T) {
	if _, err := exec.LookPath("etcd"); err != nil {
		StartT(t, 1) // skips, or fails under CI
	}
	ctx := t.Context()
	c, err := Start(ctx, Options{Members: 3, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Len() != 3 || len(c.Endpoints()) != 3 {
		t.Fatalf("%d members, %d endpoints, want 3", c.Len(), len(c.Endpoints()))
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	put := func(v string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := cli.Put(wctx, "k", v); err != nil {
			t.Fatalf("put %s: %v", v, err)
		}
	}
	put("before")

	lead, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(lead); err != nil {
		t.Fatal(err)
	}
	if c.Member(lead).Running() {
		t.Errorf("%s reported running after Kill", c.Member(lead).Name())
	}
	// Restart waits until the member reports healthy again.
	if err := c.Restart(ctx, lead); err != nil {
		t.Fatalf("restart %s: %v", c.Member(lead).Name(), err)
	}
	if !c.Member(lead).Running() {
		t.Errorf("%s not running after Restart", c.Member(lead).Name())
	}
	if err := c.Restart(ctx, lead); err == nil {
		t.Errorf("Restart of a running member succeeded, want an error")
	}
	put("after")

	dir := c.dir
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("data directory: %v", err)
	}
	c.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s behind (%v)", dir, err)
	}
	c.Close() // a second Close is harmless
}

// TestArgs: the extra flags reach every member, after the defaults: a
// transaction of 200 operations, refused under etcd's default
// --max-txn-ops of 128, commits with --max-txn-ops 256.
func TestArgs(t *testing.T) {
	if _, err := exec.LookPath("etcd"); err != nil {
		StartT(t, 1) // skips, or fails under CI
	}
	c, err := Start(t.Context(), Options{Members: 1, Dir: t.TempDir(), Logf: t.Logf, Args: []string{"--max-txn-ops", "256"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ops := make([]clientv3.Op, 200)
	for i := range ops {
		ops[i] = clientv3.OpPut(fmt.Sprintf("k%03d", i), "v")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		t.Fatalf("a 200-operation transaction with --max-txn-ops 256: %v", err)
	}
}
