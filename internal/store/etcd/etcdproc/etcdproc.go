// Package etcdproc runs an etcd cluster on loopback whose members are
// separate etcd processes, so that a member can be crashed (SIGKILL) or
// frozen (SIGSTOP: its peers and clients see a partition), which members
// running inside the calling process (etcdtest) cannot be. The fault tests
// and the bench tool start their clusters with it; StartT is the test
// wrapper.
package etcdproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Install is the command that installs the etcd binary on Debian and
// Ubuntu, for messages that ask for it.
const Install = "DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server"

// Options configure Start.
type Options struct {
	// Bin is the etcd binary. Default: etcd from PATH.
	Bin string
	// Dir holds the members' data directories and logs. Default: a new
	// temporary directory, removed by Close.
	Dir string
	// Members is the size of the cluster. Default: 3.
	Members int
	// StartTimeout bounds how long each member may take to report
	// healthy. Default: 20s.
	StartTimeout time.Duration
	// Logf, if set, is told about retries and restarts.
	Logf func(format string, args ...any)
	// Args are more flags for every member, after the ones Start sets
	// (etcd takes the last of a repeated flag): a larger
	// --quota-backend-bytes for a benchmark's million users, say.
	Args []string
}

// Member is one etcd process. Its ports and data directory stay the same
// across restarts, so clients find it again as they would a real member
// coming back.
type Member struct {
	name, clientURL, peerURL, dataDir string
	args                              []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current process has exited
}

// Name is the member's etcd name (m0, m1, ...).
func (m *Member) Name() string { return m.name }

// ClientURL is the member's client endpoint, http://127.0.0.1:PORT.
func (m *Member) ClientURL() string { return m.clientURL }

// Pid is the process id of the member's current process.
func (m *Member) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd.Process.Pid
}

// Running reports whether the member's process has not exited (a frozen
// member is running).
func (m *Member) Running() bool {
	_, exited := m.current()
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

func (m *Member) current() (*exec.Cmd, chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd, m.exited
}

func (m *Member) logPath() string {
	return filepath.Join(filepath.Dir(m.dataDir), m.name+".log")
}

// Cluster is a running cluster of etcd processes.
type Cluster struct {
	bin     string
	dir     string
	ownDir  bool
	timeout time.Duration
	logf    func(string, ...any)
	members []*Member
}

// Start starts opts.Members etcd processes forming one new cluster on
// loopback and returns once every member reports healthy. The processes do
// not depend on ctx, which bounds only the start; Close stops them.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Bin == "" {
		bin, err := exec.LookPath("etcd")
		if err != nil {
			return nil, fmt.Errorf("etcd binary not found (install it with: %s): %w", Install, err)
		}
		opts.Bin = bin
	}
	if opts.Members <= 0 {
		opts.Members = 3
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 20 * time.Second
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	ownDir := opts.Dir == ""
	if ownDir {
		d, err := os.MkdirTemp("", "etcdproc-")
		if err != nil {
			return nil, err
		}
		opts.Dir = d
	}
	// A free port found by listening on :0 can be taken by another
	// process before etcd binds it (other tests run on this machine):
	// then start over on new ports, saying so.
	for attempt := 1; ; attempt++ {
		c, err := tryStart(ctx, opts, attempt)
		if err == nil {
			c.ownDir = ownDir
			return c, nil
		}
		if attempt == 3 || ctx.Err() != nil {
			if ownDir {
				_ = os.RemoveAll(opts.Dir)
			}
			return nil, fmt.Errorf("etcd cluster did not start (attempt %d): %w", attempt, err)
		}
		opts.Logf("etcd cluster did not start (attempt %d), starting over on new ports: %v", attempt, err)
	}
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func tryStart(ctx context.Context, opts Options, attempt int) (*Cluster, error) {
	c := &Cluster{bin: opts.Bin, dir: opts.Dir, timeout: opts.StartTimeout, logf: opts.Logf}
	// Each attempt gets fresh data directories: a member that half
	// started leaves state that belongs to the cluster given up on.
	dir := filepath.Join(opts.Dir, fmt.Sprintf("attempt%d", attempt))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var initial []string
	for i := range opts.Members {
		client, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		peer, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		m := &Member{
			name:      fmt.Sprintf("m%d", i),
			clientURL: "http://" + client,
			peerURL:   "http://" + peer,
		}
		m.dataDir = filepath.Join(dir, m.name)
		initial = append(initial, m.name+"="+m.peerURL)
		c.members = append(c.members, m)
	}
	token := fmt.Sprintf("etcdproc-%d", time.Now().UnixNano())
	for _, m := range c.members {
		m.args = []string{
			"--name", m.name,
			"--data-dir", m.dataDir,
			"--listen-client-urls", m.clientURL,
			"--advertise-client-urls", m.clientURL,
			"--listen-peer-urls", m.peerURL,
			"--initial-advertise-peer-urls", m.peerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", token,
			"--initial-cluster-state", "new",
			// Short raft timings: a lost leader is replaced within a
			// second on loopback.
			"--heartbeat-interval", "50",
			"--election-timeout", "500",
			"--logger", "zap",
			"--log-level", "error",
		}
		m.args = append(m.args, opts.Args...)
	}
	for _, m := range c.members {
		if err := c.start(m); err != nil {
			c.Close()
			return nil, err
		}
	}
	for i := range c.members {
		if err := c.WaitHealthy(ctx, i); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) start(m *Member) error {
	cmd := exec.Command(c.bin, m.args...)
	// etcd 3.4 refuses to start on some architectures without this.
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
	// Die with us even if we are killed without a chance to Close (a
	// test binary's timeout panic, a bench run interrupted).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(m.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(exited)
	}()
	m.mu.Lock()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()
	return nil
}

// Len is the number of members.
func (c *Cluster) Len() int { return len(c.members) }

// Member returns member i.
func (c *Cluster) Member(i int) *Member { return c.members[i] }

// Endpoints are the members' client URLs, in member order.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.clientURL
	}
	return out
}

// LogTail is the end of member i's output, for a failure message.
func (c *Cluster) LogTail(i int) string {
	b, _ := os.ReadFile(c.members[i].logPath())
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return string(b)
}

// WaitHealthy polls member i's /health until it reports a cluster with a
// leader that commits, for at most the start timeout.
func (c *Cluster) WaitHealthy(ctx context.Context, i int) error {
	m := c.members[i]
	_, exited := m.current()
	deadline := time.Now().Add(c.timeout)
	hc := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("%s exited while starting: %s", m.name, c.LogTail(i))
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy: %w", m.name, ctx.Err())
		default:
		}
		resp, err := hc.Get(m.clientURL + "/health")
		if err == nil {
			var b [256]byte
			k, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b[:k]), `"true"`) {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not healthy within %v: %s", m.name, c.timeout, c.LogTail(i))
}

// Signal sends sig to member i's process.
func (c *Cluster) Signal(i int, sig syscall.Signal) error {
	m := c.members[i]
	cmd, _ := m.current()
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%v to %s: %w", sig, m.name, err)
	}
	return nil
}

// Kill crashes member i (SIGKILL) and waits until its process is gone.
func (c *Cluster) Kill(i int) error {
	if err := c.Signal(i, syscall.SIGKILL); err != nil {
		return err
	}
	_, exited := c.members[i].current()
	<-exited
	return nil
}

// Freeze stops member i (SIGSTOP): to its peers and its clients it is
// partitioned away, its connections open but silent.
func (c *Cluster) Freeze(i int) error { return c.Signal(i, syscall.SIGSTOP) }

// Thaw lets a frozen member i run again (SIGCONT).
func (c *Cluster) Thaw(i int) error { return c.Signal(i, syscall.SIGCONT) }

// Restart starts member i again on its ports and data directory, after
// Kill, and waits until it reports healthy: it has rejoined the cluster.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	m := c.members[i]
	cmd, exited := m.current()
	select {
	case <-exited:
	default:
		return fmt.Errorf("restart %s: process %d still running", m.name, cmd.Process.Pid)
	}
	if err := c.start(m); err != nil {
		return err
	}
	c.logf("etcd member %s restarted", m.name)
	return c.WaitHealthy(ctx, i)
}

// Leader returns the index of the member that currently leads the
// cluster, asking each running member in turn.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second})
	if err != nil {
		return -1, err
	}
	defer cli.Close()
	var errs []error
	for i, m := range c.members {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, m.clientURL)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
			continue
		}
		if st.Header.MemberId == st.Leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no member reports itself leader: %w", errors.Join(errs...))
}

// Close kills every member (thawing frozen ones first), waits for the
// processes to exit, and removes the directory Start created, if it did.
// It may be called more than once.
func (c *Cluster) Close() {
	for _, m := range c.members {
		cmd, exited := m.current()
		if cmd == nil {
			continue
		}
		select {
		case <-exited:
			continue
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
	if c.ownDir {
		_ = os.RemoveAll(c.dir)
	}
}
