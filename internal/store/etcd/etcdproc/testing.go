package etcdproc

import (
	"context"
	"os"
	"os/exec"
	"testing"
)

// StartT starts an n-member cluster for a test, its data under
// t.TempDir, and stops it when the test ends. Without the etcd binary the
// test is skipped, except under CI (CI=true), where the fault tests must
// run and a missing binary fails the test.
func StartT(t testing.TB, n int) *Cluster {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("etcd binary not found (CI must run the tests that need it): %s", Install)
		}
		t.Skipf("etcd binary not found; install it with: %s", Install)
	}
	// t.Context is cancelled before cleanups run, and the processes are
	// stopped by Close, not by a context: the start needs none of it.
	c, err := Start(context.Background(), Options{Bin: bin, Dir: t.TempDir(), Members: n, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
