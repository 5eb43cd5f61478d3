package gatewaystest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	// The store settings of every gateway: short, so that the tests see
	// the fail-closed rule act within seconds.
	dialTimeout  = time.Second
	maxStaleness = 3 * time.Second
	// detect is how long a member cut off from its peers goes on
	// confirming a gateway's cache before it notices it lost its leader (a
	// few election timeouts of 500ms): the staleness bound under a
	// partition is maxStaleness + detect (docs/etcd.md).
	detect = 3 * time.Second
	// callBound is the functional bound on a request that needs the
	// cluster while the cluster cannot answer: dial_timeout bounds each
	// etcd call, and a login makes a few (throttle, user).
	callBound = 2*dialTimeout + time.Second

	password  = "gateways-test-password-1"
	badPasswd = "not-the-password"
	reqHeader = "X-Test-Req"
)

var prefixes atomic.Int64

// freshPrefix gives every test its own keys on the package's cluster.
func freshPrefix() string {
	return fmt.Sprintf("/gateways-%d-%d/", time.Now().UnixNano(), prefixes.Add(1))
}

// ---------------------------------------------------------------------------
// The backend, and what the clients saw.

// ledger numbers the bearer requests the tests send and remembers what
// the client got, so that the backend can be checked against it: the
// backend must never see a request its client was refused.
type ledger struct {
	next   atomic.Int64
	mu     sync.Mutex
	status map[int64]int // request -> status the client got; absent: no answer
	seen   []string      // X-Test-Req of every request the backend received
	srv    *httptest.Server
}

func newLedger(t *testing.T) *ledger {
	l := &ledger{status: map[int64]int{}}
	l.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.seen = append(l.seen, r.Header.Get(reqHeader))
		l.mu.Unlock()
		_, _ = io.WriteString(w, "backend")
	}))
	t.Cleanup(l.srv.Close)
	// Checked when the test ends, after every request has returned.
	t.Cleanup(func() { l.check(t) })
	return l
}

func (l *ledger) addr() string { return strings.TrimPrefix(l.srv.URL, "http://") }

func (l *ledger) check(t *testing.T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	refused := 0
	for _, st := range l.status {
		if st != http.StatusOK {
			refused++
		}
	}
	bad := 0
	for _, v := range l.seen {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Errorf("the backend received a request that is not a test's bearer request (%s %q)", reqHeader, v)
			bad++
			continue
		}
		if st, ok := l.status[id]; ok && st != http.StatusOK {
			t.Errorf("the backend received request %d, whose client was answered %d", id, st)
			bad++
		}
	}
	t.Logf("backend: received %d requests, none refused to its client (%d bearer requests sent, %d refused)",
		len(l.seen)-bad, l.next.Load(), refused)
}

// ---------------------------------------------------------------------------
// Gateways: Caddy processes.

type gateway struct {
	name        string
	admin, http string // host:port on 127.0.0.1
	cmd         *exec.Cmd
	exited      chan struct{}
	logPath     string
	client      *http.Client
	l           *ledger
}

// gwConfig is what differs between the gateways of a test.
type gwConfig struct {
	endpoints []string // etcd client URLs
	prefix    string
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (g *gateway) caddyfile(c gwConfig) string {
	return fmt.Sprintf(`{
	admin %s
	persist_config off
	skip_install_trust
	auto_https off
	grace_period 1ns
}

http://%s {
	crudauth {
		store etcd {
			endpoints %s
			prefix %s
			dial_timeout %s
			max_staleness %s
		}
		refresh body
	}
	reverse_proxy %s
}
`, g.admin, g.http, strings.Join(c.endpoints, " "), c.prefix, dialTimeout, maxStaleness, g.l.addr())
}

// startGateways starts one Caddy per config, at the same time (so that
// they race to create the prefix's signing secret, as gateways started
// together do), and waits until each serves. Each is killed, its whole
// process group, when the test ends; if the test failed, the end of each
// one's log is shown.
func startGateways(t *testing.T, l *ledger, cfgs ...gwConfig) []*gateway {
	t.Helper()
	gws := make([]*gateway, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, c := range cfgs {
		wg.Go(func() {
			// A port found free can be taken before Caddy binds it:
			// start over on new ports, saying so.
			for attempt := 1; ; attempt++ {
				g, err := startGateway(t, l, fmt.Sprintf("gw%d", i+1), c)
				if err == nil {
					gws[i] = g
					return
				}
				if attempt == 3 {
					errs[i] = err
					return
				}
				t.Logf("gw%d did not start (attempt %d), starting over on new ports: %v", i+1, attempt, err)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return gws
}

func startGateway(t *testing.T, l *ledger, name string, c gwConfig) (*gateway, error) {
	dir := t.TempDir()
	g := &gateway{
		name:    name,
		admin:   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		http:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		logPath: filepath.Join(dir, "caddy.log"),
		client:  &http.Client{Timeout: 15 * time.Second},
		l:       l,
	}
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, []byte(g.caddyfile(c)), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(g.logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(caddyBin, "run", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_DATA_HOME="+filepath.Join(dir, "data"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, killed as a whole; and killed with us if the
	// test binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	g.cmd = cmd
	g.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(g.exited) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s (admin %s, http %s) log tail:\n%s", g.name, g.admin, g.http, g.logTail())
		}
	})
	t.Cleanup(g.kill)

	// Up once it answers on its site: crudauth has opened the store by
	// then (Provision runs before the servers start).
	deadline := time.Now().Add(30 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-g.exited:
			return nil, fmt.Errorf("%s exited while starting: %s", name, g.logTail())
		default:
		}
		if resp, err := hc.Get("http://" + g.http + "/"); err == nil {
			resp.Body.Close()
			return g, nil
		}
		if time.Now().After(deadline) {
			g.kill()
			return nil, fmt.Errorf("%s did not serve within 30s: %s", name, g.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *gateway) kill() {
	_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	<-g.exited
}

func (g *gateway) logTail() string {
	b, _ := os.ReadFile(g.logPath)
	// The warnings and errors first (a refusal's reason is logged at warn),
	// the last 40 of them, then the tail of everything.
	var warn []string
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
			warn = append(warn, line)
		}
	}
	warn = warn[max(0, len(warn)-40):]
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return "warnings and errors:\n" + strings.Join(warn, "") + "tail:\n" + string(b)
}

// ---------------------------------------------------------------------------
// Requests. Each returns the answer, or status 0 and the error when there
// was none (the tests count those as failures).

type response struct {
	status int
	header http.Header
	body   []byte
	err    error
	took   time.Duration
}

func (r *response) String() string {
	if r.err != nil {
		return fmt.Sprintf("no answer after %v: %v", r.took.Round(time.Millisecond), r.err)
	}
	return fmt.Sprintf("%d %q after %v", r.status, r.body, r.took.Round(time.Millisecond))
}

// retryAfter reports whether a 503 carries Retry-After.
func (r *response) retryAfter() bool { return r.header.Get("Retry-After") != "" }

func (g *gateway) do(req *http.Request) *response {
	t0 := time.Now()
	resp, err := g.client.Do(req)
	r := &response{err: err}
	if err == nil {
		r.status, r.header = resp.StatusCode, resp.Header
		r.body, r.err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	r.took = time.Since(t0)
	return r
}

func (g *gateway) post(url, ctype string, body []byte) *response {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return g.do(req)
}

// bearer GETs /api with the access token, numbered in the ledger.
func (g *gateway) bearer(access string) *response {
	id := g.l.next.Add(1)
	req, err := http.NewRequest(http.MethodGet, "http://"+g.http+"/api", nil)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set(reqHeader, strconv.FormatInt(id, 10))
	r := g.do(req)
	if r.err == nil {
		g.l.mu.Lock()
		g.l.status[id] = r.status
		g.l.mu.Unlock()
	}
	return r
}

type tokens struct{ access, refresh string }

func (r *response) tokens() (tokens, error) {
	var m struct {
		Access  string `json:"access_token"`
		Refresh string `json:"refresh_token"`
	}
	if err := json.Unmarshal(r.body, &m); err != nil || m.Access == "" || m.Refresh == "" {
		return tokens{}, fmt.Errorf("no tokens in %s", r)
	}
	return tokens{m.Access, m.Refresh}, nil
}

func (g *gateway) login(user, pw string) *response {
	form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {pw}}
	return g.post("http://"+g.http+"/token", "application/x-www-form-urlencoded", []byte(form.Encode()))
}

func (g *gateway) refresh(rt string) *response {
	b, _ := json.Marshal(map[string]string{"refresh_token": rt})
	return g.post("http://"+g.http+"/refresh", "application/json", b)
}

// mustLogin logs user in with the test password.
func (g *gateway) mustLogin(t *testing.T, user string) tokens {
	t.Helper()
	r := g.login(user, password)
	if r.status != http.StatusOK {
		t.Fatalf("%s: login %s: %s", g.name, user, r)
	}
	tk, err := r.tokens()
	if err != nil {
		t.Fatalf("%s: login %s: %v", g.name, user, err)
	}
	return tk
}

// revoke revokes every token of user through the gateway's admin API.
func (g *gateway) revoke(user string) *response {
	return g.post("http://"+g.admin+"/crudauth/users/"+url.PathEscape(user)+"/revoke", "", nil)
}

// addUser adds user through the gateway's admin API.
func (g *gateway) addUser(t *testing.T, user string) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"username": user, "password": password})
	if r := g.post("http://"+g.admin+"/crudauth/users", "application/json", b); r.status != http.StatusCreated {
		t.Fatalf("%s: adding %s through the admin API: %s", g.name, user, r)
	}
}

// cliAddUser adds user with the module's command line, on the store
// directly (--store etcd://...), as an operator does with no Caddy at hand.
func cliAddUser(t *testing.T, endpoints []string, prefix, user string) {
	t.Helper()
	hosts := make([]string, len(endpoints))
	for i, e := range endpoints {
		hosts[i] = strings.TrimPrefix(e, "http://")
	}
	storeURL := "etcd://" + strings.Join(hosts, ",") + prefix
	cmd := exec.Command(caddyBin, "crudauth", "user", "add", user, "--store", storeURL, "--password-stdin")
	cmd.Stdin = strings.NewReader(password + "\n")
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("caddy crudauth user add %s --store %s: %v\n%s", user, storeURL, err, out)
	}
	t.Logf("caddy crudauth user add %s --store %s: %s", user, storeURL, strings.TrimSpace(string(out)))
}

// eventually polls f every 10ms until it returns nil or limit passes, and
// returns how long it took and the last error.
func eventually(limit time.Duration, f func() error) (time.Duration, error) {
	t0 := time.Now()
	for {
		err := f()
		if err == nil || time.Since(t0) > limit {
			return time.Since(t0), err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
