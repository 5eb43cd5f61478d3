package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd"
	"github.com/crudauth/caddy-crudauth/internal/store/etcd/etcdproc"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// scaleoutConfig sizes the etcd phase.
type scaleoutConfig struct {
	Mode         string        `json:"mode"`
	Rounds       int           `json:"rounds"`
	Duration     time.Duration `json:"duration"`
	Warmup       time.Duration `json:"warmup"`
	Threads      int           `json:"threads"`
	Conns        int           `json:"conns"`
	Users        int           `json:"users"`
	ListLen      int           `json:"list_len"`
	FloodRounds  int           `json:"flood_rounds"`
	LoginSamples int           `json:"login_samples"`
	Revocations  int           `json:"revocations"`
	BigUsers     int           `json:"big_users"`
	RawDuration  time.Duration `json:"raw_duration"`
	RawConc      []int         `json:"raw_conc"`
	Members      int           `json:"members"`
	Gateways     int           `json:"gateways"`
	GoMemLimit   string        `json:"gomemlimit"`
	// PollEvery is the revocation pollers' period.
	PollEvery time.Duration `json:"poll_every"`
}

func scaleoutConfigFor(mode string) (scaleoutConfig, error) {
	c := scaleoutConfig{Mode: mode, Threads: 2, Conns: 32, Users: 1000, ListLen: 32_768, Members: 3, Gateways: 3,
		RawConc: []int{1, 32}, PollEvery: time.Millisecond, LoginSamples: 10}
	switch mode {
	case "quick":
		c.Rounds, c.Duration, c.Warmup, c.FloodRounds, c.Revocations, c.BigUsers, c.RawDuration = 3, 2*time.Second, time.Second, 2, 200, 50_000, 2*time.Second
	case "full":
		c.Rounds, c.Duration, c.Warmup, c.FloodRounds, c.Revocations, c.BigUsers, c.RawDuration = 4, 4*time.Second, 2*time.Second, 3, 300, 1_000_000, 3*time.Second
	default:
		return c, fmt.Errorf("mode %q is not quick or full", mode)
	}
	return c, nil
}

// The prefixes of the phase, all in one cluster: the gateways' users, the
// raw write-rate measurement's, and the big set a new gateway loads.
const (
	// bigTxnOps and bigParallel size the big set's loader: etcd's
	// default limit of operations per transaction, 16 transactions in
	// flight. Larger transactions (512, 1024 with the limit raised)
	// loaded no faster here: the members' apply is what limits it.
	bigTxnOps   = 128
	bigParallel = 16

	benchPrefix = "/crudauth-bench/"
	rawPrefix   = "/crudauth-raw/"
	bigPrefix   = "/crudauth-big/"
)

// The cases of the phase. The bbolt gateway is the baseline of each ratio.
const (
	caseBolt         = "bolt"
	caseBoltFresh    = "bolt_fresh"
	caseBoltRefresh  = "bolt_refresh"
	caseEtcdFresh    = "etcd_a_fresh"
	caseEtcdRefresh  = "etcd_a_refresh"
	sideBolt         = "bolt"
	sideEtcd         = "etcd"
	revokeGiveUpTime = 2 * time.Second
)

// etcdCase is the one-token case of etcd gateway i (0: A).
func etcdCase(i int) string { return fmt.Sprintf("etcd_%c", 'a'+i) }

// scaleoutResult is everything the report's etcd section needs.
type scaleoutResult struct {
	Config     scaleoutConfig `json:"config"`
	Started    time.Time      `json:"started"`
	Finished   time.Time      `json:"finished"`
	LoadBefore string         `json:"load_before"`
	LoadAfter  string         `json:"load_after"`
	EtcdVer    string         `json:"etcd_version"`
	GC         gcSetting      `json:"gc"`

	Migrate migrateResult `json:"migrate"`

	Cases []caseInfo   `json:"cases"`
	Runs  []caseResult `json:"runs"`
	Flood []sideFlood  `json:"flood"`
	Hash  []float64    `json:"flood_hash_ms"` // one argon2.IDKey at the start of each flood round
	// Serial logins, one at a time, alternating sides, and one IDKey
	// timed between them: what a login adds to its hash on each side.
	LoginMs     map[string][]float64 `json:"login_ms"`
	LoginHashMs []float64            `json:"login_hash_ms"`
	Cap         int                  `json:"hash_cap"`
	Raw         []rawRate            `json:"raw"`
	Sizes       recordSizes          `json:"sizes"`
	Revs        []revocation         `json:"revocations"`
	Big         bigGateway           `json:"big"`
	Files       map[string]string    `json:"caddyfiles"`
}

type migrateResult struct {
	Command  string  `json:"command"`
	Users    int     `json:"users"`
	Sessions int     `json:"sessions"`
	Seconds  float64 `json:"seconds"`
}

type sideFlood struct {
	Round int    `json:"round"`
	Side  string `json:"side"`
	floodResult
}

// rawRate is one store operation driven against the cluster from this
// process through the etcd store package, conc callers at once.
type rawRate struct {
	Op      string  `json:"op"`
	Conc    int     `json:"conc"`
	Ops     int64   `json:"ops"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
	PerS    float64 `json:"per_s"`
	MeanMs  float64 `json:"mean_ms"`
}

// recordSizes are mean sizes in bytes, measured on the raw prefix: the
// stored key plus value, and the watch event each put sends to every
// watcher (mvccpb.Event, protobuf-encoded).
type recordSizes struct {
	UserKV       float64 `json:"user_kv"`
	SessionKV    float64 `json:"session_kv"`
	UserEvent    float64 `json:"user_event"`
	SessionEvent float64 `json:"session_event"`
	NameKV       float64 `json:"name_kv"`
}

// revocation is one user revoked through gateway A's admin API; B and C
// are how long after the acknowledgement each answered 401 (negative: it
// already did before the acknowledgement arrived), NaN-free: a gateway
// that never did within revokeGiveUpTime is counted in TimedOut.
type revocation struct {
	AckMs    float64   `json:"ack_ms"` // the admin call's own duration
	Ms       []float64 `json:"ms"`     // per other gateway (B, C)
	TimedOut int       `json:"timed_out"`
}

type bigGateway struct {
	Users        int     `json:"users"`
	Sessions     int     `json:"sessions"`
	LoadSeconds  float64 `json:"load_seconds"`
	LoadParallel int     `json:"load_parallel"`
	LoadTxnOps   int     `json:"load_txn_ops"`
	// OpenSeconds is etcd.Open in this process: the full load of the
	// AuthState cache and the watch started, nothing else.
	OpenSeconds float64 `json:"open_seconds"`
	// ReadySeconds is until its first AuthState answered: after a load
	// longer than max_staleness, once the watch confirmed the cache.
	ReadySeconds float64 `json:"ready_seconds"`
	// HeapBytes is the live heap the loaded cache added in this process.
	HeapBytes int64 `json:"heap_bytes"`
	// FirstSeconds: from starting Caddy to its first 200 to an
	// authenticated request; ListenSeconds: to its first answer at all.
	FirstSeconds  float64     `json:"first_seconds"`
	ListenSeconds float64     `json:"listen_seconds"`
	Mem           memStatus   `json:"mem"`
	HeapInuse     uint64      `json:"heap_inuse"`
	EtcdDBBytes   int64       `json:"etcd_db_bytes"` // all members' data directories
	EtcdMem       []memStatus `json:"etcd_mem"`
	MemGC         []string    `json:"mem_gc"`
}

func runScaleout(args []string) error {
	fs := flag.NewFlagSet("scaleout", flag.ExitOnError)
	mode := fs.String("mode", "quick", "quick or full")
	caddyBin := fs.String("caddy", "bin/caddy", "the Caddy binary with crudauth")
	wrkBin := fs.String("wrk", "wrk", "wrk binary")
	etcdBin := fs.String("etcd", "", "etcd binary (default: etcd from PATH)")
	memLimit := fs.String("gomemlimit", "300MiB", "GOMEMLIMIT of the compared gateways (GOGC=off)")
	out := fs.String("out", "", "output directory (scaleout.json, logs, work files)")
	bigOnly := fs.Bool("big-only", false, "only the new gateway on the big prefix (no comparison, no report section): for working on that step")
	bigUsers := fs.Int("big-users", 0, "users in the new gateway's prefix (default: 1000000 in full mode, 50000 in quick)")
	_ = fs.Parse(args)
	cfg, err := scaleoutConfigFor(*mode)
	if err != nil {
		return err
	}
	if *bigUsers > 0 {
		cfg.BigUsers = *bigUsers
	}
	cfg.GoMemLimit = *memLimit
	if err := checkRunFlags(*memLimit, caddyBin, out); err != nil {
		return err
	}
	ps := &procs{}
	defer ps.stopAll()
	so := &scaleout{cfg: cfg, etcdBin: *etcdBin, bigOnly: *bigOnly}
	// The etcd members are children of this process too (etcdproc), in
	// its process group, and die with it (Pdeathsig); Close stops them on
	// an ordinary exit and on a signal.
	defer so.closeCluster()
	stopOnSignal(ps, so.closeCluster)
	so.e = &e2e{cfg: e2eConfig{Mode: cfg.Mode, Rounds: cfg.Rounds, Duration: cfg.Duration, Warmup: cfg.Warmup,
		Threads: cfg.Threads, Conns: cfg.Conns, GoMemLimit: cfg.GoMemLimit},
		ps: ps, caddy: *caddyBin, wrk: *wrkBin, out: *out}
	return so.run()
}

type scaleout struct {
	cfg     scaleoutConfig
	e       *e2e // the e2e phase's helpers: processes, Caddy, wrk, measure
	etcdBin string
	bigOnly bool
	res     scaleoutResult

	cmu     sync.Mutex
	cluster *etcdproc.Cluster
	etcdDir string

	m        *token.Manager
	ids      []string
	sids     []string
	hash     string
	boltC    *proc
	gws      []*proc
	ports    []int // bolt, then the etcd gateways
	admins   []int // the etcd gateways' admin ports
	oneToken string
}

func (so *scaleout) closeCluster() {
	so.cmu.Lock()
	defer so.cmu.Unlock()
	if so.cluster != nil {
		so.cluster.Close()
		so.cluster = nil
	}
}

func (so *scaleout) endpoints() []string { return so.cluster.Endpoints() }

// hostports are the endpoints without their scheme, for a store URL.
func (so *scaleout) hostports() []string {
	var out []string
	for _, ep := range so.endpoints() {
		out = append(out, strings.TrimPrefix(ep, "http://"))
	}
	return out
}

func (so *scaleout) run() error {
	cfg, e := so.cfg, so.e
	so.res = scaleoutResult{Config: cfg, Started: time.Now().UTC(), LoadBefore: loadavg(), Cap: hashCap(),
		GC: gcSettings(cfg.GoMemLimit)[0]}
	e.work = filepath.Join(e.out, "scaleout-work")
	e.logs = filepath.Join(e.out, "scaleout-logs")
	for _, d := range []string{e.work, e.logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	e.res.Caddyfiles = map[string]string{}
	var err error
	if e.scripts, err = writeLuaScripts(e.work); err != nil {
		return err
	}
	kb := make([]byte, 32)
	_, _ = rand.Read(kb)
	e.secret = base64.RawURLEncoding.EncodeToString(kb)
	if so.m, err = token.New(token.Config{Key: []byte(e.secret), Issuer: benchIssuer, Audience: benchAudience,
		AccessTTL: 2 * time.Hour, RefreshTTL: 24 * time.Hour}); err != nil {
		return err
	}

	// The cluster: three members on this machine, their data on the same
	// disk as the bbolt file, so that both sides of a write ratio sync to
	// one disk. The quota is raised for the big set.
	logf("etcd: starting %d members", cfg.Members)
	so.etcdDir = filepath.Join(e.work, "etcd")
	c, err := etcdproc.Start(context.Background(), etcdproc.Options{Bin: so.etcdBin, Dir: so.etcdDir, Members: cfg.Members,
		StartTimeout: 60 * time.Second, Logf: logf, Args: []string{"--quota-backend-bytes", fmt.Sprint(8 << 30)}})
	if err != nil {
		return err
	}
	so.cmu.Lock()
	so.cluster = c
	so.cmu.Unlock()
	bin := so.etcdBin
	if bin == "" {
		bin = "etcd"
	}
	if v, err := execOut(bin, "--version"); err == nil {
		so.res.EtcdVer = strings.TrimSpace(strings.SplitN(v, "\n", 2)[0])
	}

	if so.bigOnly {
		if so.hash, err = newHash(); err != nil {
			return err
		}
		return so.finish(so.bigGateway())
	}
	if err := so.prepare(); err != nil {
		return err
	}
	if err := e.startUpstream(); err != nil {
		return err
	}
	if err := so.startGateways(); err != nil {
		return err
	}
	if err := so.throughput(); err != nil {
		return err
	}
	if err := so.logins(); err != nil {
		return err
	}
	if err := so.revocations(); err != nil {
		return err
	}
	// The gateways are done: the rest measures the cluster and a new
	// gateway, with the machine's CPU to themselves.
	for _, p := range append([]*proc{so.boltC}, so.gws...) {
		e.ps.stop(p)
	}
	if err := so.rawRates(); err != nil {
		return err
	}
	return so.finish(so.bigGateway())
}

// finish writes scaleout.json after the last step's err.
func (so *scaleout) finish(err error) error {
	if err != nil {
		return err
	}
	e := so.e
	so.res.Files = e.res.Caddyfiles
	so.res.Finished = time.Now().UTC()
	so.res.LoadAfter = loadavg()
	b, err := json.MarshalIndent(so.res, "", "  ")
	if err != nil {
		return err
	}
	logf("etcd phase done in %.1f min", so.res.Finished.Sub(so.res.Started).Minutes())
	return os.WriteFile(filepath.Join(e.out, "scaleout.json"), b, 0o600)
}

// prepare fills the bbolt file (users, their sessions, the refresh cases'
// sessions), mints the tokens, and copies the file into the cluster with
// `caddy crudauth migrate`, timed: both gateways then hold the same users
// and sessions, so the same tokens and the same refresh chains serve both
// sides of each ratio.
func (so *scaleout) prepare() error {
	cfg, e := so.cfg, so.e
	var err error
	if so.hash, err = newHash(); err != nil {
		return err
	}
	db := filepath.Join(e.work, "small.db")
	logf("filling %d users", cfg.Users)
	if so.ids, _, err = fill(db, cfg.Users, so.hash); err != nil {
		return err
	}
	perRun := 2 * cfg.Conns
	nRotating := (cfg.Rounds + 1) * perRun
	refreshUsers := make([]string, nRotating)
	for i := range refreshUsers {
		refreshUsers[i] = so.ids[i%len(so.ids)]
	}
	all, _, err := addSessions(db, slices.Concat(so.ids, refreshUsers), "")
	if err != nil {
		return err
	}
	so.sids = all[:len(so.ids)]
	sc := scope.MustNew("api:read")
	mint := func(k int) (string, error) {
		t, _, err := so.m.IssueAccess(token.Subject{UserID: so.ids[k], SessionID: so.sids[k], Scopes: sc})
		return t, err
	}
	if so.oneToken, err = mint(0); err != nil {
		return err
	}
	list := make([]string, cfg.ListLen)
	for i := range list {
		if list[i], err = mint(i % len(so.ids)); err != nil {
			return err
		}
	}
	if err := writeLines(filepath.Join(e.work, "tokens.txt"), list); err != nil {
		return err
	}
	rot := make([]string, nRotating)
	for i, sid := range all[len(so.ids):] {
		if rot[i], _, err = so.m.IssueRefresh(token.Subject{UserID: refreshUsers[i], SessionID: sid, Generation: 1, Scopes: sc}); err != nil {
			return err
		}
	}
	// One file per run (the warm-up, then each round), the same for both
	// sides: the bbolt gateway spends its copy of a session, the etcd
	// gateway its own.
	for r := range cfg.Rounds + 1 {
		if err := writeLines(so.refreshFile(r), rot[r*perRun:(r+1)*perRun]); err != nil {
			return err
		}
	}

	to := "etcd://" + strings.Join(so.hostports(), ",") + benchPrefix
	so.res.Migrate = migrateResult{Command: "caddy crudauth migrate --from small.db --to etcd://<3 members>" + benchPrefix,
		Users: len(so.ids), Sessions: len(all)}
	logf("migrating %d users and %d sessions into etcd", len(so.ids), len(all))
	start := time.Now()
	cmd := exec.Command(e.caddy, "crudauth", "migrate", "--from", db, "--to", to)
	cmd.Env = append(os.Environ(), e.goEnv(defaultGC)...)
	out, err := cmd.CombinedOutput()
	so.res.Migrate.Seconds = time.Since(start).Seconds()
	_ = os.WriteFile(filepath.Join(e.logs, "migrate.log"), out, 0o600)
	if err != nil {
		return fmt.Errorf("migrate: %w\n%s", err, out)
	}
	logf("migrated in %.1fs", so.res.Migrate.Seconds)
	return nil
}

func (so *scaleout) refreshFile(run int) string {
	return filepath.Join(so.e.work, fmt.Sprintf("refresh-run%d.txt", run))
}

// etcdStoreBlock is the `store etcd` block of gateway i: every member,
// listed from a different one for each gateway.
func (so *scaleout) etcdStoreBlock(i int, prefix, dialTimeout string) string {
	eps := so.hostports()
	k := i % len(eps)
	eps = append(eps[k:], eps[:k]...)
	return fmt.Sprintf("store etcd {\n\t\t\tendpoints %s\n\t\t\tprefix %s\n\t\t\tdial_timeout %s\n\t\t\tmax_staleness 10s\n\t\t}",
		strings.Join(eps, " "), prefix, dialTimeout)
}

// bigDialTimeout is the new gateway's dial_timeout: the default, since
// the store's start is bounded per request, not as a whole (a first load
// of a million users takes minutes on etcd 3.4).
const bigDialTimeout = "2s"

// startGateways starts the bbolt gateway and the etcd gateways, each its
// own Caddy process with the headline GC setting, each in front of the
// shared upstream. The etcd gateways have an admin endpoint each (A's
// takes the revocations).
func (so *scaleout) startGateways() error {
	cfg, e := so.cfg, so.e
	env := e.goEnv(so.res.GC.Env)
	up := fmt.Sprintf("127.0.0.1:%d", e.upPort)
	site := func(port int, body string) string {
		return fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\tbind 127.0.0.1\n%s\treverse_proxy %s\n}\n", port, body, up)
	}
	n := 1 + cfg.Gateways
	so.ports = make([]int, n)
	so.admins = make([]int, cfg.Gateways)
	for i := range so.ports {
		p, err := freePort()
		if err != nil {
			return err
		}
		so.ports[i] = p
	}
	for i := range so.admins {
		p, err := freePort()
		if err != nil {
			return err
		}
		so.admins[i] = p
	}
	var err error
	bolt := fmt.Sprintf(caddyGlobal, "off") + site(so.ports[0], e.gatewayBlock(filepath.Join(e.work, "small.db")))
	if so.boltC, err = e.launchCaddy("etcdphase-bolt", "etcd phase: the bbolt gateway", bolt, env); err != nil {
		return err
	}
	for i := range cfg.Gateways {
		cf := fmt.Sprintf(caddyGlobal, fmt.Sprintf("127.0.0.1:%d", so.admins[i])) +
			site(so.ports[1+i], e.gatewayBlockOn(so.etcdStoreBlock(i, benchPrefix, "2s")))
		name := fmt.Sprintf("etcd phase: gateway %c", 'A'+i)
		if i > 0 {
			name = "" // the same but for the ports and the order of the endpoints
		}
		p, err := e.launchCaddy(fmt.Sprintf("etcdphase-gw%c", 'a'+i), name, cf, env)
		if err != nil {
			return err
		}
		so.gws = append(so.gws, p)
	}
	delete(e.res.Caddyfiles, "")
	for i, p := range append([]*proc{so.boltC}, so.gws...) {
		if err := waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", so.ports[i]), p, 60*time.Second); err != nil {
			return err
		}
	}
	// Every gateway lets the token through, and none lets a request
	// without one.
	c := httpClient(2)
	for _, port := range so.ports {
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		if err := getOK(c, base, so.oneToken); err != nil {
			return fmt.Errorf("sanity check on %s: %w", base, err)
		}
		if st, err := getStatus(c, base+"/api/items", ""); err != nil || st != http.StatusUnauthorized {
			return fmt.Errorf("sanity check on %s without a token: status %d, %v; want 401", base, st, err)
		}
	}
	return nil
}

func getStatus(c *http.Client, url, tok string) (int, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// throughput runs the wrk cases in interleaved rounds: the one-token case
// on the bbolt gateway and on each etcd gateway (one at a time, the others
// up and idle), fresh tokens and /refresh with rotation on the bbolt
// gateway and on gateway A.
func (so *scaleout) throughput() error {
	cfg, e := so.cfg, so.e
	e.set = serverSet{gc: so.res.GC}
	threadsEnv := fmt.Sprintf("BENCH_THREADS=%d", cfg.Threads)
	auth := "Authorization: Bearer " + so.oneToken
	url := func(i int) string { return fmt.Sprintf("http://127.0.0.1:%d/api/items", so.ports[i]) }
	pidsOf := func(p *proc) func() []int { return func() []int { return []int{p.pid()} } }
	fresh := wrkSpec{script: filepath.Join(e.scripts, "fresh.lua"), env: []string{"BENCH_TOKENS=" + filepath.Join(e.work, "tokens.txt"), threadsEnv}}
	refresh := func(i int) wrkSpec {
		return wrkSpec{url: fmt.Sprintf("http://127.0.0.1:%d/refresh", so.ports[i]), script: filepath.Join(e.scripts, "refresh.lua"),
			env: []string{"BENCH_ROTATE=1", threadsEnv}}
	}
	// Each side takes the next run's refresh file in turn: run 0 is the
	// warm-up, then one per round.
	runs := map[string]int{}
	takeRefresh := func(name string) func() ([]string, error) {
		return func() ([]string, error) {
			r := runs[name]
			if r > cfg.Rounds {
				return nil, fmt.Errorf("%s: no fresh refresh sessions left", name)
			}
			runs[name] = r + 1
			return []string{"BENCH_REFRESH_TOKENS=" + so.refreshFile(r)}, nil
		}
	}
	cases := []benchCase{{info: caseInfo{Name: caseBolt, Desc: "the bbolt gateway, one token (the baseline)", CPUOf: "bbolt gateway"},
		spec: wrkSpec{url: url(0), headers: []string{auth}}, pids: pidsOf(so.boltC)}}
	for i, p := range so.gws {
		cases = append(cases, benchCase{info: caseInfo{Name: etcdCase(i), Desc: fmt.Sprintf("etcd gateway %c, one token", 'A'+i), CPUOf: fmt.Sprintf("etcd gateway %c", 'A'+i)},
			spec: wrkSpec{url: url(1 + i), headers: []string{auth}}, pids: pidsOf(p)})
	}
	bf, ef := fresh, fresh
	bf.url, ef.url = url(0), url(1)
	cases = append(cases,
		benchCase{info: caseInfo{Name: caseBoltFresh, Desc: fmt.Sprintf("the bbolt gateway, a different token per request (%d tokens over %d users)", cfg.ListLen, cfg.Users), CPUOf: "bbolt gateway"},
			spec: bf, pids: pidsOf(so.boltC)},
		benchCase{info: caseInfo{Name: caseEtcdFresh, Desc: "etcd gateway A, the same tokens", CPUOf: "etcd gateway A"},
			spec: ef, pids: pidsOf(so.gws[0])},
		benchCase{info: caseInfo{Name: caseBoltRefresh, Desc: fmt.Sprintf("the bbolt gateway, POST /refresh with rotation (%d sessions per run, new ones each run)", 2*cfg.Conns), CPUOf: "bbolt gateway"},
			spec: refresh(0), pids: pidsOf(so.boltC), runEnv: takeRefresh(caseBoltRefresh), countErrors: true},
		benchCase{info: caseInfo{Name: caseEtcdRefresh, Desc: "etcd gateway A, the same sessions (its own copy of them)", CPUOf: "etcd gateway A"},
			spec: refresh(1), pids: pidsOf(so.gws[0]), runEnv: takeRefresh(caseEtcdRefresh), countErrors: true},
	)
	for k := range cases {
		cases[k].info.Command = cases[k].spec.commandLine(cfg.Threads, cfg.Conns, cfg.Duration)
		so.res.Cases = append(so.res.Cases, cases[k].info)
	}
	logf("etcd phase: %d rounds of %d cases, %s each", cfg.Rounds, len(cases), cfg.Duration)
	for r := range cfg.Rounds {
		for k := range cases {
			c := cases[(r+k)%len(cases)]
			res, err := e.measure(c, r, k)
			if err != nil {
				return err
			}
			so.res.Runs = append(so.res.Runs, res)
			logf("etcd round %d %-15s %8.0f req/s  p99 %6.2fms  cpu %5.1fus/req  failed %d", r+1, c.info.Name, res.RPS, res.P99us/1000, res.CPUus, res.Errors())
		}
	}
	return nil
}

// logins runs the login flood of the e2e phase (open loop at twice the
// hashing capacity, no other traffic) against the bbolt gateway and
// gateway A, alternating which goes first, the single-hash time measured
// at the start of each round.
func (so *scaleout) logins() error {
	cfg := so.cfg
	users := make([]string, cfg.Users)
	for i := range users {
		users[i] = userName(i)
	}
	bases := map[string]string{
		sideBolt: fmt.Sprintf("http://127.0.0.1:%d", so.ports[0]),
		sideEtcd: fmt.Sprintf("http://127.0.0.1:%d", so.ports[1]),
	}
	so.res.LoginMs = map[string][]float64{}
	lc := httpClient(2)
	for i := range cfg.LoginSamples {
		for k := range 2 {
			side := []string{sideBolt, sideEtcd}[(i+k)%2]
			user := userName((i*7919 + 13) % cfg.Users)
			t := time.Now()
			status, err := login(lc, bases[side], user)
			if err != nil || status != http.StatusOK {
				return fmt.Errorf("login %s on %s: status %d, %v", user, side, status, err)
			}
			so.res.LoginMs[side] = append(so.res.LoginMs[side], float64(time.Since(t).Microseconds())/1000)
		}
		so.res.LoginHashMs = append(so.res.LoginHashMs, hashSamples(1)...)
	}
	logf("serial logins: median bbolt %.1f ms, etcd %.1f ms, one IDKey %.1f ms", median(so.res.LoginMs[sideBolt]),
		median(so.res.LoginMs[sideEtcd]), median(so.res.LoginHashMs))
	for r := range cfg.FloodRounds {
		h := median(hashSamples(6))
		so.res.Hash = append(so.res.Hash, h)
		rate := 2 * float64(so.res.Cap) / (h / 1000)
		order := []string{sideBolt, sideEtcd}
		if r%2 == 1 {
			order = []string{sideEtcd, sideBolt}
		}
		for _, side := range order {
			f := flood(bases[side], users, rate, cfg.Duration)
			so.res.Flood = append(so.res.Flood, sideFlood{Round: r, Side: side, floodResult: f})
			logf("etcd flood round %d %-4s logins %.1f/s of %.1f offered (busy %d, other %d)", r+1, side, f.LoginsPerS, rate, f.Busy, f.Other)
			time.Sleep(300 * time.Millisecond) // let queued logins drain
		}
	}
	return nil
}

// revocations revokes users one at a time through gateway A's admin API
// and times, from the acknowledgement, how long each other gateway keeps
// honouring the user's token: two pollers, one per gateway, each sending
// the token every PollEvery until it gets 401.
func (so *scaleout) revocations() error {
	cfg := so.cfg
	admin := fmt.Sprintf("http://127.0.0.1:%d", so.admins[0])
	ac := httpClient(1)
	others := so.ports[2:]
	pollers := make([]*http.Client, len(others))
	for i := range pollers {
		pollers[i] = httpClient(1)
	}
	sc := scope.MustNew("api:read")
	logf("revocations: %d through gateway A, polled on %d gateways every %v", cfg.Revocations, len(others), cfg.PollEvery)
	for n := range cfg.Revocations {
		// Users from the middle of the set on, one each: user 0's
		// token served the throughput cases.
		k := 1 + (len(so.ids)/2+n)%(len(so.ids)-1)
		tok, _, err := so.m.IssueAccess(token.Subject{UserID: so.ids[k], SessionID: so.sids[k], Scopes: sc})
		if err != nil {
			return err
		}
		for i, port := range others {
			if st, err := getStatus(pollers[i], fmt.Sprintf("http://127.0.0.1:%d/api/items", port), tok); err != nil || st != http.StatusOK {
				return fmt.Errorf("revocation %d: the token of %s before: status %d, %v; want 200", n, userName(k), st, err)
			}
		}
		got := make([]time.Time, len(others))
		var wg sync.WaitGroup
		start := time.Now()
		for i, port := range others {
			wg.Add(1)
			go func() {
				defer wg.Done()
				url := fmt.Sprintf("http://127.0.0.1:%d/api/items", port)
				for next := time.Now(); time.Since(start) < revokeGiveUpTime+time.Second; next = next.Add(cfg.PollEvery) {
					time.Sleep(time.Until(next))
					st, err := getStatus(pollers[i], url, tok)
					if err == nil && st == http.StatusUnauthorized {
						got[i] = time.Now()
						return
					}
				}
			}()
		}
		req, _ := http.NewRequest(http.MethodPost, admin+"/crudauth/users/"+userName(k)+"/revoke", nil)
		t0 := time.Now()
		resp, err := ac.Do(req)
		if err != nil {
			return fmt.Errorf("revoke %s: %w", userName(k), err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ack := time.Now()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("revoke %s: status %d: %s", userName(k), resp.StatusCode, body)
		}
		wg.Wait()
		rv := revocation{AckMs: float64(ack.Sub(t0).Microseconds()) / 1000}
		for _, g := range got {
			if g.IsZero() || g.Sub(ack) > revokeGiveUpTime {
				rv.TimedOut++
				continue
			}
			rv.Ms = append(rv.Ms, float64(g.Sub(ack).Microseconds())/1000)
		}
		so.res.Revs = append(so.res.Revs, rv)
		time.Sleep(10 * time.Millisecond)
	}
	all := revocationMs(so.res.Revs)
	logf("revocations: p50 %.2fms p99 %.2fms max %.2fms, %d timed out", percentile(all, 50), percentile(all, 99), percentile(all, 100), revocationTimeouts(so.res.Revs))
	return nil
}

// rawRates drives the store operations behind logins (CreateSession),
// refreshes (GetSession, UpdateSession) and revocations (Revoke:
// UpdateUser and DeleteSessions) against the cluster from this process, each for
// RawDuration at each concurrency, on a prefix of its own. It also
// measures the records' sizes and the watch events they make.
func (so *scaleout) rawRates() error {
	cfg := so.cfg
	ctx := context.Background()
	st, err := etcd.Open(ctx, etcd.Options{Endpoints: so.endpoints(), Prefix: rawPrefix})
	if err != nil {
		return err
	}
	defer st.Close()
	users := make([]*store.User, cfg.Users)
	for i := range users {
		users[i] = &store.User{Username: userName(i), PasswordHash: so.hash, AllowedScopes: []string{"api:read"}}
	}
	if err := st.CreateUsers(ctx, users); err != nil {
		return err
	}
	exp := time.Now().Add(sessionTTL)
	var smu sync.Mutex
	var sessions [][2]string // user, session, as created
	ops := []struct {
		name string
		fn   func(worker, i int) error
	}{
		{"CreateSession (a login's write)", func(w, i int) error {
			u := users[(w*7919+i)%len(users)]
			x := &store.Session{UserID: u.ID, Scopes: []string{"api:read"}, Generation: 1, ExpiresAt: exp, UserAgent: "benchtool", Address: "127.0.0.1"}
			if _, err := st.CreateSession(ctx, x, 0); err != nil {
				return err
			}
			smu.Lock()
			sessions = append(sessions, [2]string{u.ID, x.ID})
			smu.Unlock()
			return nil
		}},
		{"UpdateSession (a refresh's rotation)", func(w, i int) error {
			// Worker w rotates the sessions at w, w+conc, ...: no two
			// workers contend for one session, as no two refreshes of
			// one chain do.
			x := sessions[(w+i*maxConc(cfg))%len(sessions)]
			_, err := st.UpdateSession(ctx, x[0], x[1], func(s *store.Session) error {
				now := time.Now().UTC()
				s.Generation++
				s.RotatedAt, s.LastUsedAt = now, now
				return nil
			})
			return err
		}},
		{"GetSession (a linearizable read: a refresh's first step)", func(w, i int) error {
			x := sessions[(w+i*maxConc(cfg))%len(sessions)]
			_, err := st.GetSession(ctx, x[0], x[1])
			return err
		}},
		{"Revoke (UpdateUser and DeleteSessions)", func(w, i int) error {
			_, err := store.Revoke(ctx, st, users[(w+i*maxConc(cfg))%len(users)].ID)
			return err
		}},
	}
	for _, op := range ops {
		if strings.HasPrefix(op.name, "Revoke") {
			// Revocations end the users' sessions: the sizes first.
			if so.res.Sizes, err = measureSizes(ctx, so.endpoints()); err != nil {
				return err
			}
		}
		for _, conc := range cfg.RawConc {
			r := driveRate(op.fn, conc, cfg.RawDuration)
			r.Op = op.name
			so.res.Raw = append(so.res.Raw, r)
			logf("raw %-40s conc %2d: %7.0f/s, mean %.2f ms, errors %d", op.name, conc, r.PerS, r.MeanMs, r.Errors)
		}
	}
	return nil
}

func maxConc(cfg scaleoutConfig) int { return slices.Max(cfg.RawConc) }

// driveRate calls fn from conc goroutines for d and counts the calls.
func driveRate(fn func(worker, i int) error, conc int, d time.Duration) rawRate {
	var n, errs atomic.Int64
	var busy atomic.Int64 // nanoseconds inside fn, all workers
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				t := time.Now()
				err := fn(w, i)
				busy.Add(int64(time.Since(t)))
				if err != nil {
					errs.Add(1)
					continue
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	r := rawRate{Conc: conc, Ops: n.Load(), Errors: errs.Load(), Seconds: secs, PerS: float64(n.Load()) / secs}
	if calls := n.Load() + errs.Load(); calls > 0 {
		r.MeanMs = float64(busy.Load()) / float64(calls) / 1e6
	}
	return r
}

// measureSizes reads the raw prefix's records and returns their mean
// sizes, stored and as watch events.
func measureSizes(ctx context.Context, endpoints []string) (recordSizes, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		return recordSizes{}, err
	}
	defer cli.Close()
	mean := func(ns string) (kv, ev float64, err error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := cli.Get(cctx, rawPrefix+ns+"/", clientv3.WithPrefix(), clientv3.WithLimit(1000))
		if err != nil || len(resp.Kvs) == 0 {
			return 0, 0, fmt.Errorf("sizes of %s: %d keys, %v", ns, len(resp.Kvs), err)
		}
		for _, x := range resp.Kvs {
			kv += float64(len(x.Key) + len(x.Value))
			ev += float64(proto.Size(&mvccpb.Event{Type: mvccpb.Event_PUT, Kv: x}))
		}
		return kv / float64(len(resp.Kvs)), ev / float64(len(resp.Kvs)), nil
	}
	var s recordSizes
	if s.UserKV, s.UserEvent, err = mean("users"); err != nil {
		return s, err
	}
	if s.SessionKV, s.SessionEvent, err = mean("sessions"); err != nil {
		return s, err
	}
	s.NameKV, _, err = mean("names")
	return s, err
}

// bigGateway fills a prefix with BigUsers users and a session each
// (etcd.LoadEmpty), loads it into an AuthState cache in this process
// (timed, with the heap it adds), then starts a new Caddy on it and times
// its first authenticated answer, and reads its memory.
func (so *scaleout) bigGateway() error {
	cfg, e := so.cfg, so.e
	ctx := context.Background()
	b := &so.res.Big
	b.Users, b.Sessions, b.LoadParallel, b.LoadTxnOps = cfg.BigUsers, cfg.BigUsers, bigParallel, bigTxnOps
	logf("big: %d users with a session each into %s", cfg.BigUsers, bigPrefix)
	d := &store.Dump{Users: make([]*store.User, cfg.BigUsers), Sessions: make([]*store.Session, cfg.BigUsers)}
	exp := time.Now().Add(sessionTTL)
	for i := range d.Users {
		d.Users[i] = &store.User{ID: store.NewID(), Username: userName(i), PasswordHash: so.hash}
		d.Sessions[i] = &store.Session{ID: store.NewSessionID(), UserID: d.Users[i].ID, Scopes: []string{"api:read"},
			Generation: 1, ExpiresAt: exp, UserAgent: "benchtool", Address: "127.0.0.1"}
	}
	start := time.Now()
	if err := etcd.LoadEmpty(ctx, etcd.Options{Endpoints: so.endpoints(), Prefix: bigPrefix}, d,
		etcd.LoadOptions{Parallel: b.LoadParallel, MaxTxnOps: b.LoadTxnOps}); err != nil {
		return err
	}
	b.LoadSeconds = time.Since(start).Seconds()
	logf("big: loaded in %.1fs", b.LoadSeconds)
	probeUser, probeSession := d.Users[len(d.Users)/2].ID, d.Sessions[len(d.Users)/2].ID
	d = nil

	// The cache load alone, in this process; its heap is the live heap
	// with the store open less the live heap once it is closed.
	heap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	start = time.Now()
	st, err := etcd.Open(ctx, etcd.Options{Endpoints: so.endpoints(), Prefix: bigPrefix, DialTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	b.OpenSeconds = time.Since(start).Seconds()
	// A load that took longer than max_staleness leaves the cache
	// unconfirmed until the watch, started at the load's revision,
	// confirms it: until then AuthState fails closed, as a gateway's
	// first requests would.
	for {
		_, err := st.AuthState(ctx, probeUser)
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrUnavailable) || time.Since(start) > time.Duration(b.OpenSeconds*float64(time.Second))+time.Minute {
			st.Close()
			return fmt.Errorf("big: a loaded user: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ReadySeconds = time.Since(start).Seconds()
	open := heap()
	st.Close()
	st = nil
	b.HeapBytes = open - heap()
	logf("big: cache load in this process %.1fs, heap %+.0f MB", b.OpenSeconds, float64(b.HeapBytes)/(1<<20))

	for i := range so.cluster.Len() {
		if m, err := readMem(so.cluster.Member(i).Pid()); err == nil {
			b.EtcdMem = append(b.EtcdMem, m)
		}
	}
	b.EtcdDBBytes = dirSize(so.etcdDir)

	// A new gateway: a fresh Caddy process under Go's default collector,
	// as the memory runs of the e2e phase.
	port, err := freePort()
	if err != nil {
		return err
	}
	adminPort, err := freePort()
	if err != nil {
		return err
	}
	b.MemGC = defaultGC
	cf := fmt.Sprintf(caddyGlobal, fmt.Sprintf("127.0.0.1:%d", adminPort)) +
		fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\tbind 127.0.0.1\n%s\trespond \"ok\" 200\n}\n", port,
			e.gatewayBlockOn(so.etcdStoreBlock(0, bigPrefix, bigDialTimeout)))
	tok, _, err := so.m.IssueAccess(token.Subject{UserID: probeUser, SessionID: probeSession, Scopes: scope.MustNew("api:read")})
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/api/items", port)
	start = time.Now()
	p, err := e.launchCaddy("etcdphase-new-gateway", "etcd phase: a new gateway on the big prefix", cf, e.goEnv(defaultGC))
	if err != nil {
		return err
	}
	defer e.ps.stop(p)
	for {
		code, err := getStatus(c, url, tok)
		if err == nil && b.ListenSeconds == 0 {
			b.ListenSeconds = time.Since(start).Seconds()
		}
		if code == http.StatusOK {
			b.FirstSeconds = time.Since(start).Seconds()
			break
		}
		select {
		case <-p.done:
			return fmt.Errorf("big: the new gateway exited:\n%s", p.tail())
		default:
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("big: the new gateway did not serve within 10 minutes (last status %d, %v)", code, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if b.Mem, err = readMem(p.pid()); err != nil {
		return err
	}
	b.HeapInuse = heapInuse(fmt.Sprintf("http://127.0.0.1:%d", adminPort))
	logf("big: new gateway served after %.1fs, VmRSS %.0f MB", b.FirstSeconds, kib(b.Mem.VmRSS))
	return nil
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
