// Package gatewaystest runs several gateways the way they run in
// production: separate Caddy processes, built from this module, sharing
// one `store etcd` on a three-member cluster of etcd processes. It crashes
// (SIGKILL) and freezes (SIGSTOP: a partition) members under the gateways
// and checks what their clients and their backend see.
//
// One cluster serves the whole package, each test its own key
// prefix and its own three Caddy processes, on free loopback ports: the
// package can run beside the caddymodule package, which uses fixed ports.
// A test that crashes or freezes a member brings it back before it ends.
//
// Without the etcd binary the tests skip, except under CI (CI=true), where
// a missing binary fails the package.
package gatewaystest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdproc"
)

var (
	// cluster is the package's etcd cluster, started by the first test
	// that needs it; nil when there is none.
	cluster *etcdproc.Cluster
	// caddyBin is the module's Caddy, built once for the package.
	caddyBin string
	// noCluster says why there is no cluster, for the skip message.
	noCluster string
	// setupErr fails every test when the setup itself failed.
	setupErr  error
	setupOnce sync.Once
	workDir   string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster != nil {
		cluster.Close()
	}
	if workDir != "" {
		_ = os.RemoveAll(workDir)
	}
	os.Exit(code)
}

// setup builds Caddy and starts the cluster, once, when a test first needs
// them: a run that selects none of these tests costs nothing.
func setup(t *testing.T) {
	var err error
	workDir, err = os.MkdirTemp("", "crudauth-gateways-")
	if err != nil {
		setupErr = err
		return
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		noCluster = "etcd binary not found; install it with: " + etcdproc.Install
		if os.Getenv("CI") == "true" {
			setupErr = errors.New("under CI the multi-gateway tests must run: " + noCluster)
		}
		return
	}
	t0 := time.Now()
	caddyBin, err = buildCaddy(filepath.Join(workDir, "caddy"))
	if err != nil {
		setupErr = err
		return
	}
	built := time.Since(t0)
	t0 = time.Now()
	cluster, err = etcdproc.Start(context.Background(), etcdproc.Options{
		Dir:  filepath.Join(workDir, "etcd"),
		Logf: t.Logf,
	})
	if err != nil {
		setupErr = err
		return
	}
	t.Logf("caddy built in %v, etcd cluster of %d up in %v", ms(built), cluster.Len(), ms(time.Since(t0)))
}

// buildCaddy builds the module's cmd/caddy into out: the same program
// users run, with this working tree's module in it.
func buildCaddy(out string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is needed to build caddy: %w", err)
	}
	gomod, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if root == "." || root == "" {
		return "", fmt.Errorf("no go.mod found from %s", must(os.Getwd()))
	}
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/caddy")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/caddy: %w\n%s", err, b)
	}
	return out, nil
}

func must(s string, _ error) string { return s }

// needCluster skips the test when the package has no etcd (never under CI:
// TestMain has failed the package then), and makes sure every member runs
// and is healthy: an earlier test may have crashed or frozen one.
func needCluster(t *testing.T) *etcdproc.Cluster {
	t.Helper()
	setupOnce.Do(func() { setup(t) })
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	if cluster == nil {
		t.Skip(noCluster)
	}
	for i := range cluster.Len() {
		// A test that failed before it restarted the member it crashed
		// leaves it down: restart it rather than fail every later test.
		if !cluster.Member(i).Running() {
			if err := cluster.Restart(t.Context(), i); err != nil {
				t.Fatalf("restarting %s, which an earlier test left down: %v", cluster.Member(i).Name(), err)
			}
			continue
		}
		if err := cluster.WaitHealthy(t.Context(), i); err != nil {
			t.Fatalf("the package's etcd cluster is not healthy: %v", err)
		}
	}
	return cluster
}
