// Package etcdtest starts real etcd members inside the test process, on
// loopback, so that tests of the etcd store need no etcd installed and no
// setup: go.etcd.io/etcd/server/v3/embed is the etcd server itself, not a
// fake.
package etcdtest

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startTimeout bounds how long a member may take to become ready (a
// member of a cluster waits for its peers to elect a leader).
const startTimeout = 30 * time.Second

// Member is one embedded etcd member. Its ports and data directory stay the
// same across Stop and Restart, so clients that were connected to it find
// it again, as they would a restarted process.
type Member struct {
	t    testing.TB
	name string
	cfg  func() *embed.Config

	mu sync.Mutex
	e  *embed.Etcd
	// clientURL is the member's client endpoint: a relay to the member's
	// own listener (serverURL), so that Stop can cut its clients off at
	// once. peerURL is its raft endpoint.
	clientURL, serverURL, peerURL string
	relay                         *relay
}

// Start starts a single-member cluster on loopback (random free ports, a
// data directory under t.TempDir) and returns its client endpoints. The
// member stops when t ends.
func Start(t testing.TB) []string {
	t.Helper()
	return StartMember(t).Endpoints()
}

// StartMember is Start, returning the member so that a test can stop and
// restart it.
func StartMember(t testing.TB) *Member {
	t.Helper()
	c := StartCluster(t, 1)
	return c.Members[0]
}

// Cluster is a set of embedded members forming one etcd cluster.
type Cluster struct {
	Members []*Member
}

// Endpoints returns every member's client endpoint.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.Endpoints()...)
	}
	return out
}

// StartCluster starts n members in this process that form one cluster on
// loopback, and waits until all are ready. Every member stops when t ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: cluster of %d members", n)
	}
	dir := t.TempDir()
	token := fmt.Sprintf("crudauth-test-%d", time.Now().UnixNano())
	c := &Cluster{}
	var initial []string
	for i := range n {
		m := &Member{t: t, name: fmt.Sprintf("m%d", i)}
		m.relay = newRelay(t)
		m.clientURL = "http://" + m.relay.l.Addr().String()
		m.serverURL = "http://" + freeAddr(t)
		m.relay.target = strings.TrimPrefix(m.serverURL, "http://")
		m.peerURL = "http://" + freeAddr(t)
		initial = append(initial, m.name+"="+m.peerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m := m
		dataDir := filepath.Join(dir, m.name)
		m.cfg = func() *embed.Config {
			cfg := embed.NewConfig()
			cfg.Name = m.name
			cfg.Dir = dataDir
			su, cu, pu := mustURL(t, m.serverURL), mustURL(t, m.clientURL), mustURL(t, m.peerURL)
			cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{su}, []url.URL{cu}
			cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
			cfg.InitialCluster = strings.Join(initial, ",")
			cfg.InitialClusterToken = token
			// Short raft timings: members find a leader, and notice a
			// lost one, in a fraction of a second on loopback.
			cfg.TickMs = 10
			cfg.ElectionMs = 100
			cfg.LogLevel = "error"
			cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
			return cfg
		}
	}
	// Members of a cluster wait for each other, so start them together.
	errs := make(chan error, n)
	for _, m := range c.Members {
		go func() { errs <- m.start() }()
	}
	for range n {
		if err := <-errs; err != nil {
			for _, m := range c.Members {
				m.Stop()
			}
			t.Fatalf("etcdtest: %v", err)
		}
	}
	for _, m := range c.Members {
		t.Cleanup(m.Stop)
	}
	return c
}

// relay forwards a member's client connections to the member. While the
// member is down it closes every connection it holds and drops new ones,
// so that its port stays taken for the member's return.
type relay struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	up    bool
	conns map[net.Conn]struct{}
}

func newRelay(t testing.TB) *relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	r := &relay{l: l, conns: map[net.Conn]struct{}{}}
	go r.serve()
	t.Cleanup(func() {
		r.setUp(false)
		_ = l.Close()
	})
	return r
}

func (r *relay) serve() {
	for {
		c, err := r.l.Accept()
		if err != nil {
			return
		}
		go r.pipe(c)
	}
}

func (r *relay) pipe(c net.Conn) {
	if !r.isUp() {
		_ = c.Close()
		return
	}
	b, err := net.Dial("tcp", r.target)
	if err != nil {
		_ = c.Close()
		return
	}
	if !r.track(c, b) {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(b, c)
		_ = b.Close()
		close(done)
	}()
	_, _ = io.Copy(c, b)
	_ = c.Close()
	<-done
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, b)
	r.mu.Unlock()
}

func (r *relay) isUp() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.up
}

// track records both ends of a relayed connection, or closes them when
// the member went down meanwhile.
func (r *relay) track(c, b net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.up {
		_ = c.Close()
		_ = b.Close()
		return false
	}
	r.conns[c], r.conns[b] = struct{}{}, struct{}{}
	return true
}

func (r *relay) setUp(up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.up = up
	if !up {
		for c := range r.conns {
			_ = c.Close()
		}
		clear(r.conns)
	}
}

// Endpoints returns the member's client endpoint.
func (m *Member) Endpoints() []string { return []string{m.clientURL} }

// Name returns the member's name in the cluster.
func (m *Member) Name() string { return m.name }

func (m *Member) start() error {
	cfg := m.cfg()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start member %s: %w", m.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("member %s failed: %v", m.name, err)
	case <-time.After(startTimeout):
		e.Close()
		return fmt.Errorf("member %s not ready within %v", m.name, startTimeout)
	}
	m.mu.Lock()
	m.e = e
	m.mu.Unlock()
	m.relay.setUp(true)
	return nil
}

// Stop stops the member and keeps its data. Its clients' connections
// break at once, as they would when its process died (the embedded server
// on its own would serve open watch streams for its request timeout, five
// seconds, before it let go). Stopping a stopped member does nothing.
func (m *Member) Stop() {
	m.mu.Lock()
	e := m.e
	m.e = nil
	m.mu.Unlock()
	if e != nil {
		m.relay.setUp(false)
		e.Close()
	}
}

// Restart starts a stopped member again on the same ports and data. In a
// cluster it is ready once it rejoined (with a quorum of peers running).
func (m *Member) Restart() {
	m.t.Helper()
	m.mu.Lock()
	running := m.e != nil
	m.mu.Unlock()
	if running {
		return
	}
	if err := m.start(); err != nil {
		m.t.Fatalf("etcdtest: %v", err)
	}
}

// Etcd returns the running embedded server, or nil when it is stopped.
func (m *Member) Etcd() *embed.Etcd {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.e
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. Members need their ports before they start (the initial cluster
// names every peer URL), so port 0 cannot be used; another process taking
// the port in between fails the start, loudly.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

func mustURL(t testing.TB, s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	return *u
}
