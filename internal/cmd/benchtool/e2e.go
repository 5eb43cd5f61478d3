package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// e2eConfig sizes one run.
type e2eConfig struct {
	Mode         string        `json:"mode"`
	Rounds       int           `json:"rounds"`
	Duration     time.Duration `json:"duration"`
	Warmup       time.Duration `json:"warmup"`
	Threads      int           `json:"threads"`
	Conns        int           `json:"conns"`
	SmallUsers   int           `json:"small_users"`
	BigUsers     int           `json:"big_users"`
	ListLen      int           `json:"list_len"`
	FloodRounds  int           `json:"flood_rounds"`
	LoginSamples int           `json:"login_samples"`
	MemTokens    int64         `json:"mem_tokens"`
	MemConns     int           `json:"mem_conns"`
	// GoMemLimit is the GOMEMLIMIT of every compared process in the
	// headline rounds, which run with GOGC=off.
	GoMemLimit string `json:"gomemlimit"`
}

func configFor(mode string) (e2eConfig, error) {
	switch mode {
	case "quick":
		return e2eConfig{Mode: mode, Rounds: 3, Duration: 2 * time.Second, Warmup: time.Second,
			Threads: 2, Conns: 32, SmallUsers: 1000, BigUsers: 50_000, ListLen: 32_768,
			FloodRounds: 2, LoginSamples: 4, MemTokens: 30_000, MemConns: 8}, nil
	case "full":
		return e2eConfig{Mode: mode, Rounds: 6, Duration: 4 * time.Second, Warmup: 2 * time.Second,
			Threads: 2, Conns: 32, SmallUsers: 1000, BigUsers: 1_000_000, ListLen: 131_072,
			FloodRounds: 3, LoginSamples: 25, MemTokens: 1_000_000, MemConns: 8}, nil
	}
	return e2eConfig{}, fmt.Errorf("mode %q is not quick or full", mode)
}

// caseResult is one wrk run of one case.
type caseResult struct {
	Case  string `json:"case"`
	Round int    `json:"round"`
	Pos   int    `json:"pos"` // position within the round
	GC    string `json:"gc"`  // gcSetting.Name of the processes measured
	wrkResult
	CPUus      float64 `json:"cpu_us_per_req"`      // the serving processes
	UpstreamUs float64 `json:"upstream_us_per_req"` // the upstream's share
	GCs        int     `json:"gcs"`                 // garbage collections of the Caddy process(es) during the run
	GCus       float64 `json:"gc_us_per_req"`       // their CPU, per request (part of CPUus)
}

type caseInfo struct {
	Name    string `json:"name"`
	Desc    string `json:"desc"`
	Command string `json:"command"`
	CPUOf   string `json:"cpu_of"`
}

// e2eResult is everything the report needs.
type e2eResult struct {
	Config     e2eConfig             `json:"config"`
	Started    time.Time             `json:"started"`
	Finished   time.Time             `json:"finished"`
	LoadBefore string                `json:"load_before"`
	LoadAfter  string                `json:"load_after"`
	WrkVersion string                `json:"wrk_version"`
	Fill       map[string]fillResult `json:"fill"`
	Cases      []caseInfo            `json:"cases"`
	GC         []gcSetting           `json:"gc"`   // headline first
	Runs       []caseResult          `json:"runs"` // every GC setting's rounds

	HashCap       int       `json:"hash_cap"`
	HashParams    string    `json:"hash_params"`
	HashMs        float64   `json:"hash_ms"`
	HashSamplesMs []float64 `json:"hash_samples_ms"`
	LoginSmallMs  []float64 `json:"login_small_ms"`
	LoginBigMs    []float64 `json:"login_big_ms"`

	FloodHashMs []float64         `json:"flood_hash_ms"` // single-hash time per flood round
	FloodGC     string            `json:"flood_gc"`      // the GC setting the logins and floods ran under
	MemGC       string            `json:"mem_gc"`        // and the memory runs
	FloodCases  []caseInfo        `json:"flood_cases"`
	FloodRuns   []caseResult      `json:"flood_runs"` // proxied traffic, with and without flood
	Floods      []floodRecord     `json:"floods"`     // the login side
	Mem         memResult         `json:"mem"`        // distinct tokens over the small database's users
	MemUsers    memResult         `json:"mem_users"`  // distinct tokens and users over the big database
	Caddyfiles  map[string]string `json:"caddyfiles"`
}

// gcSetting is the garbage collector's environment of every Go process one
// set of rounds compares: the Caddy processes and the forward_auth service.
type gcSetting struct {
	Name string   `json:"name"`
	Env  []string `json:"env"`
}

// gcSettings returns the headline setting (the same fixed memory limit for
// every process, so that how often a process collects does not depend on
// how much it keeps alive) and Go's default.
func gcSettings(memLimit string) []gcSetting {
	return []gcSetting{
		{Name: "limit", Env: []string{"GOGC=off", "GOMEMLIMIT=" + memLimit}},
		{Name: "default", Env: defaultGC},
	}
}

// defaultGC is Go's default, spelled out so that a GOGC or GOMEMLIMIT in
// the caller's environment does not leak into the processes.
var defaultGC = []string{"GOGC=100", "GOMEMLIMIT=off"}

type floodRecord struct {
	Round   int  `json:"round"`
	WithWrk bool `json:"with_wrk"`
	floodResult
}

func runE2E(args []string) error {
	fs := flag.NewFlagSet("e2e", flag.ExitOnError)
	mode := fs.String("mode", "quick", "quick or full")
	caddyBin := fs.String("caddy", "bin/caddy", "the Caddy binary with crudauth")
	wrkBin := fs.String("wrk", "wrk", "wrk binary")
	memLimit := fs.String("gomemlimit", "300MiB", "GOMEMLIMIT of the compared processes in the headline rounds (GOGC=off)")
	out := fs.String("out", "", "output directory (e2e.json, logs, work files)")
	_ = fs.Parse(args)
	cfg, err := configFor(*mode)
	if err != nil {
		return err
	}
	cfg.GoMemLimit = *memLimit
	if err := checkRunFlags(*memLimit, caddyBin, out); err != nil {
		return err
	}
	ps := &procs{}
	defer ps.stopAll()
	stopOnSignal(ps, nil)
	e := &e2e{cfg: cfg, ps: ps, caddy: *caddyBin, wrk: *wrkBin, out: *out}
	if err := e.run(); err != nil {
		return err
	}
	return nil
}

// checkRunFlags is what the e2e and scaleout subcommands check of their
// flags: -out given, the memory limit enough for the hashing slots, and
// the paths made absolute (the processes run in other directories).
func checkRunFlags(memLimit string, caddyBin, out *string) error {
	if *out == "" {
		return errors.New("-out is required")
	}
	if err := checkMemLimit(memLimit, hashCap()); err != nil {
		return err
	}
	for _, p := range []*string{caddyBin, out} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	return nil
}

// stopOnSignal stops ps's children, then runs also (when not nil), on SIGINT,
// SIGTERM and SIGHUP, and exits: a deferred stop does not run when a
// signal kills the program.
func stopOnSignal(ps *procs, also func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintln(os.Stderr, "benchtool: got", s, "- stopping")
		ps.stopAll()
		if also != nil {
			also()
		}
		os.Exit(130)
	}()
}

type e2e struct {
	cfg                    e2eConfig
	ps                     *procs
	caddy, wrk, out        string
	scripts                string // the wrk Lua scripts, written out of the binary
	work, logs             string
	secret                 string
	res                    e2eResult
	smallIDs, bigIDs       []string
	smallSIDs, bigSIDs     []string // a live session of each user, in the order of the IDs
	upstream               *proc
	upPort                 int
	smallTokens, bigTokens string // files of tokens, one a line
	oneToken               string
	// rotating holds refresh tokens of generation 1, each of its own
	// session, never presented yet: a run of the rotating refresh case
	// takes refreshConns() of them (takeRotating), since its sessions have
	// moved on when the run ends, and a token presented again after the
	// reuse grace would revoke its session. sanityRotate is one more per
	// GC setting, for the sanity check.
	rotating     []string
	sanityRotate []string
	// staticRefresh: refresh tokens of sessions for the case without
	// rotation, presented in every run (they never change).
	staticRefresh string
	set           serverSet // the processes of the GC setting being measured
	// algs are the tokens of the EdDSA and ES256 sites (e2e_alg.go).
	algs map[string]algTokens
}

// serverSet is the processes compared under one GC setting.
type serverSet struct {
	gc                     gcSetting
	fwd                    *proc // the forward_auth service
	plainC, plainAAC       *proc // plainAAC: a second, identical plain proxy (the A/A case)
	gwC, fwdC              *proc
	authPort               int
	plainPort, fwdPort     int
	plainAAPort            int
	gwSmallPort, gwBigPort int
	gwNoRotatePort         int            // the gateway on the small database with rotate_refresh off
	gwAlgPorts             map[string]int // the sites signing with EdDSA and ES256, by algorithm
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

func (e *e2e) run() error {
	cfg := e.cfg
	e.res = e2eResult{Config: cfg, Started: time.Now().UTC(), LoadBefore: loadavg(),
		Fill: map[string]fillResult{}, Caddyfiles: map[string]string{}}
	e.work = filepath.Join(e.out, "work")
	e.logs = filepath.Join(e.out, "logs")
	for _, d := range []string{e.work, e.logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	var err error
	if v, err := execOut(e.wrk, "-v"); err == nil {
		e.res.WrkVersion = strings.TrimSpace(strings.SplitN(v, "\n", 2)[0])
	}
	if e.scripts, err = writeLuaScripts(e.work); err != nil {
		return err
	}
	kb := make([]byte, 32)
	_, _ = rand.Read(kb)
	e.secret = base64.RawURLEncoding.EncodeToString(kb)

	// Databases.
	logf("hashing the shared password")
	hash, err := newHash()
	if err != nil {
		return err
	}
	logf("filling %d users", cfg.SmallUsers)
	var fr fillResult
	if e.smallIDs, fr, err = fill(filepath.Join(e.work, "small.db"), cfg.SmallUsers, hash); err != nil {
		return fmt.Errorf("fill small: %w", err)
	}
	logf("filling %d users", cfg.BigUsers)
	var bigFill fillResult
	if e.bigIDs, bigFill, err = fill(filepath.Join(e.work, "big.db"), cfg.BigUsers, hash); err != nil {
		return fmt.Errorf("fill big: %w", err)
	}
	logf("filled in %.1fs (%s, %.0f MB)", bigFill.Seconds, bigFill.Method, bigFill.FileMB)

	// Sessions. Every access token carries the sid of a live session of
	// its user (the gateway refuses one without), so every user gets one,
	// as a login would have made. The refresh cases get sessions of their
	// own on the small database: rotating ones for each run, and a fixed
	// set for the case without rotation.
	perRun := e.refreshConns()
	runs := len(gcSettings(cfg.GoMemLimit)) * (cfg.Rounds + 1) // +1: each setting's warm-up
	nRotating, nSanity, nStatic := runs*perRun, len(gcSettings(cfg.GoMemLimit)), perRun
	refreshUsers := make([]string, nRotating+nSanity+nStatic)
	for i := range refreshUsers {
		refreshUsers[i] = e.smallIDs[i%len(e.smallIDs)]
	}
	logf("creating %d + %d sessions on the small database", len(e.smallIDs), len(refreshUsers))
	smallSIDs, d, err := addSessions(filepath.Join(e.work, "small.db"), slices.Concat(e.smallIDs, refreshUsers), "")
	if err != nil {
		return fmt.Errorf("sessions small: %w", err)
	}
	e.smallSIDs = smallSIDs[:len(e.smallIDs)]
	refreshSIDs := smallSIDs[len(e.smallIDs):]
	fr.Sessions, fr.SessionSeconds = len(smallSIDs), d.Seconds()
	e.res.Fill["small"] = fr
	logf("creating %d sessions on the big database", len(e.bigIDs))
	if e.bigSIDs, d, err = addSessions(filepath.Join(e.work, "big.db"), e.bigIDs, scratchDir()); err != nil {
		return fmt.Errorf("sessions big: %w", err)
	}
	bigFill.Sessions, bigFill.SessionSeconds = len(e.bigSIDs), d.Seconds()
	e.res.Fill["big"] = bigFill
	logf("sessions created in %.1fs", d.Seconds())

	// Tokens.
	m, err := token.New(token.Config{Key: []byte(e.secret), Issuer: benchIssuer,
		Audience: benchAudience, AccessTTL: 2 * time.Hour, RefreshTTL: 24 * time.Hour})
	if err != nil {
		return err
	}
	sc := scope.MustNew("api:read")
	mintFor := func(ids, sids []string, n int, stride int) ([]string, error) {
		toks := make([]string, n)
		for i := range toks {
			k := (i * stride) % len(ids)
			t, _, err := m.IssueAccess(token.Subject{UserID: ids[k], SessionID: sids[k], Scopes: sc})
			if err != nil {
				return nil, err
			}
			toks[i] = t
		}
		return toks, nil
	}
	one, err := mintFor(e.smallIDs, e.smallSIDs, 1, 1)
	if err != nil {
		return err
	}
	smallList, err := mintFor(e.smallIDs, e.smallSIDs, cfg.ListLen, 1)
	if err != nil {
		return err
	}
	bigList, err := mintFor(e.bigIDs, e.bigSIDs, cfg.ListLen, 104729)
	if err != nil {
		return err
	}
	// A refresh token of generation 1 for each refresh session, as the
	// login that made it would have handed out.
	refreshToks := make([]string, len(refreshSIDs))
	for i, sid := range refreshSIDs {
		if refreshToks[i], _, err = m.IssueRefresh(token.Subject{UserID: refreshUsers[i], SessionID: sid, Generation: 1, Scopes: sc}); err != nil {
			return err
		}
	}
	e.rotating, e.sanityRotate = refreshToks[:nRotating], refreshToks[nRotating:nRotating+nSanity]
	e.staticRefresh = filepath.Join(e.work, "refresh-static.txt")
	if err := writeLines(e.staticRefresh, refreshToks[nRotating+nSanity:]); err != nil {
		return err
	}
	smallFile, bigFile := filepath.Join(e.work, "tokens-small.txt"), filepath.Join(e.work, "tokens-big.txt")
	if err := writeLines(smallFile, smallList); err != nil {
		return err
	}
	if err := writeLines(bigFile, bigList); err != nil {
		return err
	}

	e.smallTokens, e.bigTokens, e.oneToken = smallFile, bigFile, one[0]
	logf("creating the EdDSA and ES256 keys and their tokens")
	if err := e.prepareAlgs(); err != nil {
		return fmt.Errorf("signing algorithms: %w", err)
	}

	if err := e.startUpstream(); err != nil {
		return err
	}
	e.res.GC = gcSettings(cfg.GoMemLimit)
	e.res.HashCap = hashCap()
	for i, gc := range e.res.GC {
		if err := e.startSet(gc); err != nil {
			return err
		}
		cases := e.cases()
		for k := range cases {
			cases[k].info.Command = cases[k].spec.commandLine(cfg.Threads, cfg.Conns, cfg.Duration)
			if i == 0 {
				e.res.Cases = append(e.res.Cases, cases[k].info)
			}
		}
		if err := e.sanity(i, smallList[0], bigList[0]); err != nil {
			return err
		}
		if err := e.rounds(cases); err != nil {
			return err
		}
		// Logins and the flood run once, under the headline setting.
		if i == 0 {
			e.res.FloodGC = gc.Name
			if err := e.logins(cases); err != nil {
				return err
			}
		}
		e.stopSet()
	}

	// Memory: a fresh gateway process for each database, with Go's
	// default collector (see docs/dev/benchmarks.md).
	e.res.MemGC = "default"
	if e.res.Mem, err = e.memory(m, "small.db", e.smallIDs, e.smallSIDs); err != nil {
		return err
	}
	if e.res.MemUsers, err = e.memory(m, "big.db", e.bigIDs, e.bigSIDs); err != nil {
		return err
	}

	e.res.Finished = time.Now().UTC()
	e.res.LoadAfter = loadavg()
	b, err := json.MarshalIndent(e.res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(e.out, "e2e.json"), b, 0o600)
}

// cases are the end-to-end cases against the current server set.
func (e *e2e) cases() []benchCase {
	cfg, s := e.cfg, &e.set
	threadsEnv := fmt.Sprintf("BENCH_THREADS=%d", cfg.Threads)
	auth := "Authorization: Bearer " + e.oneToken
	url := func(port int) string { return fmt.Sprintf("http://127.0.0.1:%d/api/items", port) }
	fresh := filepath.Join(e.scripts, "fresh.lua")
	refreshLua := filepath.Join(e.scripts, "refresh.lua")
	plainPids := func() []int { return []int{s.plainC.pid()} }
	gwPids := func() []int { return []int{s.gwC.pid()} }
	fwdPids := func() []int { return []int{s.fwdC.pid(), s.fwd.pid()} }
	cases := []benchCase{
		{info: caseInfo{Name: "plain", Desc: "plain reverse_proxy, one token (ignored)", CPUOf: "plain Caddy"},
			spec: wrkSpec{url: url(s.plainPort), headers: []string{auth}}, pids: plainPids},
		{info: caseInfo{Name: "plain_aa", Desc: "a second plain reverse_proxy process, identical to `plain` (A/A: how far two identical cases differ)", CPUOf: "second plain Caddy"},
			spec: wrkSpec{url: url(s.plainAAPort), headers: []string{auth}}, pids: func() []int { return []int{s.plainAAC.pid()} }},
		{info: caseInfo{Name: "gateway", Desc: "gateway, one token", CPUOf: "gateway Caddy"},
			spec: wrkSpec{url: url(s.gwSmallPort), headers: []string{auth}}, pids: gwPids},
		{info: caseInfo{Name: "forward_auth", Desc: "forward_auth to a token-checking service, one token", CPUOf: "forward_auth Caddy + auth service"},
			spec: wrkSpec{url: url(s.fwdPort), headers: []string{auth}}, pids: fwdPids},
		{info: caseInfo{Name: "plain_lua", Desc: "plain reverse_proxy, Lua token list (the baseline of the fresh cases)", CPUOf: "plain Caddy"},
			spec: wrkSpec{url: url(s.plainPort), script: fresh, env: []string{"BENCH_TOKENS=" + e.smallTokens, threadsEnv}}, pids: plainPids},
		{info: caseInfo{Name: "gateway_fresh", Desc: fmt.Sprintf("gateway, a different token per request (%d tokens over %d users)", cfg.ListLen, cfg.SmallUsers), CPUOf: "gateway Caddy"},
			spec: wrkSpec{url: url(s.gwSmallPort), script: fresh, env: []string{"BENCH_TOKENS=" + e.smallTokens, threadsEnv}}, pids: gwPids},
		{info: caseInfo{Name: "gateway_fresh_big", Desc: fmt.Sprintf("gateway on the %d-user database, a different token and user per request (%d tokens)", cfg.BigUsers, cfg.ListLen), CPUOf: "gateway Caddy"},
			spec: wrkSpec{url: url(s.gwBigPort), script: fresh, env: []string{"BENCH_TOKENS=" + e.bigTokens, threadsEnv}}, pids: gwPids},
		{info: caseInfo{Name: "refresh", Desc: fmt.Sprintf("gateway POST /refresh with rotation (the default; refresh token in a JSON body): every refresh spends the token it presents, and its session's next refresh presents the successor it returned; %d sessions per run, new ones each run", e.refreshConns()), CPUOf: "gateway Caddy"},
			spec: wrkSpec{url: fmt.Sprintf("http://127.0.0.1:%d/refresh", s.gwSmallPort), script: refreshLua,
				env: []string{"BENCH_ROTATE=1", threadsEnv}},
			pids: gwPids, runEnv: e.takeRotating, countErrors: true},
		{info: caseInfo{Name: "refresh_norotate", Desc: fmt.Sprintf("the same with `rotate_refresh off`: %d sessions, their tokens presented in turn", e.refreshConns()), CPUOf: "gateway Caddy"},
			spec: wrkSpec{url: fmt.Sprintf("http://127.0.0.1:%d/refresh", s.gwNoRotatePort), script: refreshLua,
				env: []string{"BENCH_ROTATE=0", threadsEnv, "BENCH_REFRESH_TOKENS=" + e.staticRefresh}},
			pids: gwPids, countErrors: true},
	}
	return append(cases, e.algCases(url, fresh, threadsEnv)...)
}

// refreshConns is how many sessions a run of a refresh case uses: two per
// wrk connection, so that the few a failed request takes out of a thread's
// pool (see wrk/refresh.lua) leave it enough.
func (e *e2e) refreshConns() int { return 2 * e.cfg.Conns }

// takeRotating writes refreshConns() refresh tokens not presented yet to a
// file and returns the refresh script's environment naming it.
func (e *e2e) takeRotating() ([]string, error) {
	n := e.refreshConns()
	if len(e.rotating) < n {
		return nil, fmt.Errorf("no fresh refresh sessions left for a rotating run")
	}
	toks := e.rotating[:n]
	e.rotating = e.rotating[n:]
	f, err := os.CreateTemp(e.work, "refresh-rotating-*.txt")
	if err != nil {
		return nil, err
	}
	f.Close()
	if err := writeLines(f.Name(), toks); err != nil {
		return nil, err
	}
	return []string{"BENCH_REFRESH_TOKENS=" + f.Name()}, nil
}

// rounds runs every case once per round, the starting case rotated by one
// each round, against the current server set.
func (e *e2e) rounds(cases []benchCase) error {
	cfg := e.cfg
	logf("GC %s (%s): %d rounds of %d cases, %s each", e.set.gc.Name, strings.Join(e.set.gc.Env, " "), cfg.Rounds, len(cases), cfg.Duration)
	for r := 0; r < cfg.Rounds; r++ {
		for k := range cases {
			c := cases[(r+k)%len(cases)]
			res, err := e.measure(c, r, k)
			if err != nil {
				return err
			}
			e.res.Runs = append(e.res.Runs, res)
			logf("%s round %d %-18s %8.0f req/s  p99 %6.2fms  cpu %5.1fus/req  gc %3d  non2xx %d", e.set.gc.Name, r+1, c.info.Name, res.RPS, res.P99us/1000, res.CPUus, res.GCs, res.Non2xx)
		}
	}
	return nil
}

// logins measures serial login latency, the single-hash time and the login
// flood against the current server set.
func (e *e2e) logins(cases []benchCase) error {
	cfg, s := e.cfg, &e.set
	// Serial logins, small and big database alternating, and between them
	// the single-hash time.
	p := password.DefaultParams
	e.res.HashParams = fmt.Sprintf("m=%d KiB, t=%d, p=%d, %d-byte key", p.Memory, p.Time, p.Threads, p.KeyLen)
	lc := httpClient(2)
	smallBase, bigBase := fmt.Sprintf("http://127.0.0.1:%d", s.gwSmallPort), fmt.Sprintf("http://127.0.0.1:%d", s.gwBigPort)
	logf("login latency and single-hash time, %d samples", cfg.LoginSamples)
	for i := 0; i < cfg.LoginSamples; i++ {
		for _, side := range []int{i % 2, 1 - i%2} {
			base, n, dst := smallBase, cfg.SmallUsers, &e.res.LoginSmallMs
			if side == 1 {
				base, n, dst = bigBase, cfg.BigUsers, &e.res.LoginBigMs
			}
			user := userName((i*7919 + 13) % n)
			t := time.Now()
			status, err := login(lc, base, user)
			if err != nil || status != http.StatusOK {
				return fmt.Errorf("login %s on %s: status %d, err %v", user, base, status, err)
			}
			*dst = append(*dst, float64(time.Since(t).Microseconds())/1000)
		}
		e.res.HashSamplesMs = append(e.res.HashSamplesMs, hashSamples(2)...)
	}
	e.res.HashMs = median(e.res.HashSamplesMs)
	logf("login median small %.1fms big %.1fms, single hash %.1fms", median(e.res.LoginSmallMs), median(e.res.LoginBigMs), e.res.HashMs)

	// Login flood at twice the hashing capacity, with and without proxied
	// traffic, interleaved with the same proxied traffic alone.
	rate := 2 * float64(e.res.HashCap) / (e.res.HashMs / 1000)
	floodUsers := make([]string, cfg.SmallUsers)
	for i := range floodUsers {
		floodUsers[i] = userName(i)
	}
	i := slices.IndexFunc(cases, func(c benchCase) bool { return c.info.Name == "gateway" })
	if i < 0 {
		return fmt.Errorf("no gateway case for the flood")
	}
	proxied := cases[i]
	flCases := []string{"proxied", "proxied+flood", "flood"}
	e.res.FloodCases = []caseInfo{
		{Name: "proxied", Desc: "gateway, one token, no flood", Command: proxied.info.Command, CPUOf: "gateway Caddy"},
		{Name: "proxied+flood", Desc: fmt.Sprintf("the same while logins arrive at %.1f/s (open loop)", rate), Command: proxied.info.Command, CPUOf: "gateway Caddy"},
		{Name: "flood", Desc: "the login flood alone"},
	}
	logf("login flood at %.1f/s, %d rounds", rate, cfg.FloodRounds)
	for r := 0; r < cfg.FloodRounds; r++ {
		// The hash time moves with the machine's load: measure it again
		// for each round, so that logins/s are set against this round's.
		e.res.FloodHashMs = append(e.res.FloodHashMs, median(hashSamples(6)))
		for k := range flCases {
			name := flCases[(r+k)%len(flCases)]
			switch name {
			case "proxied":
				res, err := e.measure(proxied, r, k)
				if err != nil {
					return err
				}
				res.Case = name
				e.res.FloodRuns = append(e.res.FloodRuns, res)
				logf("flood round %d %-14s %8.0f req/s", r+1, name, res.RPS)
			case "proxied+flood":
				fch := make(chan floodResult, 1)
				ready := make(chan struct{})
				go func() {
					close(ready)
					fch <- flood(smallBase, floodUsers, rate, cfg.Warmup+cfg.Duration)
				}()
				<-ready
				res, err := e.measure(proxied, r, k)
				f := <-fch
				if err != nil {
					return err
				}
				res.Case = name
				e.res.FloodRuns = append(e.res.FloodRuns, res)
				e.res.Floods = append(e.res.Floods, floodRecord{Round: r, WithWrk: true, floodResult: f})
				logf("flood round %d %-14s %8.0f req/s, logins %.1f/s (busy %d, other %d)", r+1, name, res.RPS, f.LoginsPerS, f.Busy, f.Other)
			case "flood":
				f := flood(smallBase, floodUsers, rate, cfg.Duration)
				e.res.Floods = append(e.res.Floods, floodRecord{Round: r, WithWrk: false, floodResult: f})
				logf("flood round %d %-14s logins %.1f/s (busy %d, other %d)", r+1, name, f.LoginsPerS, f.Busy, f.Other)
			}
			time.Sleep(300 * time.Millisecond) // let queued logins drain
		}
	}
	return nil
}

// hashCap is the gateway's default number of concurrent hashes
// (password.NewLimiter with no slots given: half the CPUs, at least one),
// which the bench configuration keeps.
func hashCap() int { return max(1, runtime.NumCPU()/2) }

type benchCase struct {
	info caseInfo
	spec wrkSpec
	pids func() []int
	// runEnv, when set, is called before each wrk run (the warm-up too)
	// for more of the script's environment: what one run uses up.
	runEnv func() ([]string, error)
	// countErrors: a run with failed requests is recorded, its errors
	// counted in the report, instead of stopping the bench. The refresh
	// cases: a forked or revoked session answers 400, and that is a
	// result to show.
	countErrors bool
}

// specForRun is c.spec with the environment of one run added.
func (c benchCase) specForRun() (wrkSpec, error) {
	if c.runEnv == nil {
		return c.spec, nil
	}
	env, err := c.runEnv()
	if err != nil {
		return wrkSpec{}, fmt.Errorf("%s: %w", c.info.Name, err)
	}
	s := c.spec
	s.env = slices.Concat(s.env, env)
	return s, nil
}

// measure runs one case: in the first round a warm-up run, then the measured
// run with the CPU time of the serving processes and of the upstream read
// around it.
func (e *e2e) measure(c benchCase, round, pos int) (caseResult, error) {
	cfg := e.cfg
	if cfg.Warmup > 0 && round == 0 {
		spec, err := c.specForRun()
		if err != nil {
			return caseResult{}, err
		}
		if _, out, err := runWrk(e.wrk, spec, cfg.Threads, cfg.Conns, cfg.Warmup); err != nil {
			return caseResult{}, fmt.Errorf("%s warm-up: %w\n%s", c.info.Name, err, out)
		}
	}
	spec, err := c.specForRun()
	if err != nil {
		return caseResult{}, err
	}
	pids := c.pids()
	cpu0, up0 := cpuOf(pids), cpuOf([]int{e.upstream.pid()})
	gc0, gcCPU0 := e.ps.gcStats(pids)
	w, out, err := runWrk(e.wrk, spec, cfg.Threads, cfg.Conns, cfg.Duration)
	cpu1, up1 := cpuOf(pids), cpuOf([]int{e.upstream.pid()})
	gc1, gcCPU1 := e.ps.gcStats(pids)
	if err != nil {
		return caseResult{}, fmt.Errorf("%s: %w", c.info.Name, err)
	}
	_ = os.WriteFile(filepath.Join(e.logs, fmt.Sprintf("wrk-%s-%s-r%d.txt", e.set.gc.Name, c.info.Name, round)), []byte(out), 0o600)
	if w.Errors() > 0 {
		if !c.countErrors {
			return caseResult{}, fmt.Errorf("%s: %d non-2xx responses and %d socket errors:\n%s", c.info.Name, w.Non2xx, w.SockErrs, out)
		}
		logf("%s: %d errors (non-2xx %d, socket %d, 200 without a successor %d, starved %d)", c.info.Name, w.Errors(), w.Non2xx, w.SockErrs, w.NoSuccessor, w.Starved)
	}
	res := caseResult{Case: c.info.Name, Round: round, Pos: pos, GC: e.set.gc.Name, wrkResult: w, GCs: gc1 - gc0}
	if w.Requests > 0 {
		res.CPUus = (cpu1 - cpu0) / float64(w.Requests) * 1e6
		res.UpstreamUs = (up1 - up0) / float64(w.Requests) * 1e6
		res.GCus = (gcCPU1 - gcCPU0) / float64(w.Requests) * 1e6
	}
	return res, nil
}

// goEnv is the environment of every Go process the bench starts besides
// the upstream, with the collector's settings gc.
func (e *e2e) goEnv(gc []string) []string {
	return append([]string{
		"XDG_DATA_HOME=" + filepath.Join(e.work, "xdg-data"),
		"XDG_CONFIG_HOME=" + filepath.Join(e.work, "xdg-config"),
		// One line on stderr (the process log) per garbage collection,
		// counted per case (procs.gcStats): how often each process
		// collects explains much of its CPU per request.
		"GODEBUG=gctrace=1",
	}, gc...)
}

const caddyGlobal = `{
	admin %s
	auto_https off
	persist_config off
	grace_period 1s
}
`

// The bench configuration sets the gateway's issuer and audience
// explicitly, so that the tokens this program mints and the forward_auth
// service checks agree with it without reading the gateway's defaults.
const (
	benchIssuer   = "crudauth-bench"
	benchAudience = "crudauth-bench-api"
)

// gatewayBlock is the crudauth configuration the targets are about:
// a valid token, a scope rule, the epoch check and the identity headers.
func (e *e2e) gatewayBlock(db string, extra ...string) string {
	return e.gatewayBlockOn("db "+db, extra...)
}

// gatewayBlockOn is gatewayBlock with the line (or block) that names the
// store given whole: "db FILE", or a `store etcd { ... }` block.
func (e *e2e) gatewayBlockOn(storeLine string, extra ...string) string {
	return e.gatewayBlockSigned(storeLine, "secret "+e.secret, extra...)
}

// gatewayBlockSigned is gatewayBlockOn with the line that says how tokens
// are signed given whole: "secret KEY" (HS256), "signing_alg EdDSA", ...
func (e *e2e) gatewayBlockSigned(storeLine, keyLine string, extra ...string) string {
	more := ""
	for _, x := range extra {
		more += "\t\t" + x + "\n"
	}
	return fmt.Sprintf(`	crudauth {
		%s
		%s
		issuer %s
		audience %s
		access_ttl 2h
		refresh_ttl 24h
		refresh body
		default_scopes api:read
		grantable_scopes api:read api:write
		require /api/* api:read
%s	}
`, storeLine, keyLine, benchIssuer, benchAudience, more)
}

func (e *e2e) startCaddy(name, caddyfile string, env []string, waitPort int) (*proc, error) {
	p, err := e.launchCaddy(name, name, caddyfile, env)
	if err != nil {
		return nil, err
	}
	return p, waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", waitPort), p, 30*time.Second)
}

// launchCaddy starts Caddy on caddyfile without waiting for it. The
// process and its log are called name; the report shows the configuration
// under configName.
func (e *e2e) launchCaddy(name, configName, caddyfile string, env []string) (*proc, error) {
	path := filepath.Join(e.work, name+".caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		return nil, err
	}
	e.res.Caddyfiles[configName] = strings.ReplaceAll(caddyfile, e.secret, "<secret>")
	return e.ps.start(name, e.logs, env, e.caddy, "run", "--config", path, "--adapter", "caddyfile")
}

// startUpstream starts the upstream every proxy case talks to. It serves
// every GC setting's rounds, the same for both sides of each ratio, and
// keeps Go's default collector.
func (e *e2e) startUpstream() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if e.upPort, err = freePort(); err != nil {
		return err
	}
	if e.upstream, err = e.ps.start("upstream", e.logs, defaultGC, self, "upstream", "-addr", fmt.Sprintf("127.0.0.1:%d", e.upPort)); err != nil {
		return err
	}
	return waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", e.upPort), e.upstream, 30*time.Second)
}

// startSet starts the compared processes (the forward_auth service and the
// Caddy processes), all with the collector's settings of gc, and makes
// them e.set. A set is stopped before the next starts: the gateway holds
// the databases' bbolt files, which one process at a time can open.
func (e *e2e) startSet(gc gcSetting) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	s := serverSet{gc: gc}
	ports := make([]int, 7)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	s.authPort, s.plainPort, s.fwdPort, s.gwSmallPort, s.gwBigPort, s.plainAAPort = ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	s.gwNoRotatePort = ports[6]
	s.gwAlgPorts = map[string]int{}
	for _, alg := range benchAlgs {
		if s.gwAlgPorts[alg], err = freePort(); err != nil {
			return err
		}
	}
	env := e.goEnv(gc.Env)
	name := func(base string) string { return base + "-" + gc.Name }
	// Start everything, then wait for everything: starts overlap.
	if s.fwd, err = e.ps.start(name("authservice"), e.logs, slices.Concat(env, []string{"BENCH_SECRET=" + e.secret}), self, "fwdauth", "-addr", fmt.Sprintf("127.0.0.1:%d", s.authPort)); err != nil {
		return err
	}
	up := fmt.Sprintf("127.0.0.1:%d", e.upPort)
	site := func(port int, body string) string {
		return fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\tbind 127.0.0.1\n%s}\n", port, body)
	}
	plain := fmt.Sprintf(caddyGlobal, "off") + site(s.plainPort, "\treverse_proxy "+up+"\n")
	if s.plainC, err = e.launchCaddy(name("caddy-plain"), "caddy-plain", plain, env); err != nil {
		return err
	}
	plainAA := fmt.Sprintf(caddyGlobal, "off") + site(s.plainAAPort, "\treverse_proxy "+up+"\n")
	if s.plainAAC, err = e.launchCaddy(name("caddy-plain-aa"), "caddy-plain-aa", plainAA, env); err != nil {
		return err
	}
	gw := fmt.Sprintf(caddyGlobal, "off") +
		site(s.gwSmallPort, e.gatewayBlock(filepath.Join(e.work, "small.db"))+"\treverse_proxy "+up+"\n") +
		site(s.gwBigPort, e.gatewayBlock(filepath.Join(e.work, "big.db"))+"\treverse_proxy "+up+"\n") +
		site(s.gwNoRotatePort, e.gatewayBlock(filepath.Join(e.work, "small.db"), "rotate_refresh off")+"\treverse_proxy "+up+"\n")
	for _, alg := range benchAlgs {
		gw += site(s.gwAlgPorts[alg], e.gatewayBlockSigned("db "+filepath.Join(e.work, "small.db"), "signing_alg "+alg)+"\treverse_proxy "+up+"\n")
	}
	if s.gwC, err = e.launchCaddy(name("caddy-gateway"), "caddy-gateway", gw, env); err != nil {
		return err
	}
	fwd := fmt.Sprintf(caddyGlobal, "off") + site(s.fwdPort, fmt.Sprintf(`	forward_auth 127.0.0.1:%d {
		uri /check
		copy_headers X-User-Id X-User-Name X-User-Scopes
	}
	reverse_proxy %s
`, s.authPort, up))
	if s.fwdC, err = e.launchCaddy(name("caddy-forward-auth"), "caddy-forward-auth", fwd, env); err != nil {
		return err
	}
	e.set = s
	for _, w := range []struct {
		p    *proc
		port int
	}{{s.fwd, s.authPort}, {s.plainC, s.plainPort}, {s.plainAAC, s.plainAAPort}, {s.gwC, s.gwSmallPort}, {s.fwdC, s.fwdPort}} {
		if err := waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", w.port), w.p, 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// stopSet stops the processes of e.set.
func (e *e2e) stopSet() {
	s := &e.set
	for _, p := range []*proc{s.gwC, s.plainC, s.plainAAC, s.fwdC, s.fwd} {
		e.ps.stop(p)
	}
}

// sanity checks that every case answers as it should before timing it:
// 200 for the token (and the first token of each list) every case sends,
// 401 without one or with a forged one, and for the refresh sites a
// refresh that rotates (setting is the index of the GC setting, whose own
// session it spends) and one that does not.
func (e *e2e) sanity(setting int, smallFresh, bigFresh string) error {
	c := httpClient(2)
	call := func(method, url, auth, body, ctype string, want int) ([]byte, error) {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			return b, fmt.Errorf("%s %s: status %d, want %d: %s", method, url, resp.StatusCode, want, b)
		}
		return b, nil
	}
	u := func(port int, path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", port, path) }
	tok := e.oneToken
	static, err := os.ReadFile(e.staticRefresh)
	if err != nil {
		return err
	}
	staticTok, _, _ := strings.Cut(string(static), "\n")
	refreshBody := func(t string) string { return `{"refresh_token":"` + t + `"}` }
	for _, t := range []struct {
		method, url, auth, body, ctype string
		want                           int
	}{
		{"GET", u(e.set.plainPort, "/api/items"), "", "", "", 200},
		{"GET", u(e.set.plainAAPort, "/api/items"), "", "", "", 200},
		{"GET", u(e.set.gwSmallPort, "/api/items"), tok, "", "", 200},
		{"GET", u(e.set.gwSmallPort, "/api/items"), smallFresh, "", "", 200},
		{"GET", u(e.set.gwBigPort, "/api/items"), bigFresh, "", "", 200},
		{"GET", u(e.set.gwSmallPort, "/api/items"), "", "", "", 401},
		{"GET", u(e.set.gwSmallPort, "/api/items"), tok[:len(tok)-4] + "AAAA", "", "", 401},
		{"GET", u(e.set.fwdPort, "/api/items"), tok, "", "", 200},
		{"GET", u(e.set.fwdPort, "/api/items"), "", "", "", 401},
		{"POST", u(e.set.gwNoRotatePort, "/refresh"), "", refreshBody(staticTok), "application/json", 200},
		{"POST", u(e.set.gwNoRotatePort, "/refresh"), "", refreshBody(staticTok), "application/json", 200},
	} {
		if _, err := call(t.method, t.url, t.auth, t.body, t.ctype, t.want); err != nil {
			return fmt.Errorf("sanity check: %w", err)
		}
	}
	// The algorithm sites accept their own tokens and refuse HS256's: the
	// cases measure what they say they measure.
	for _, alg := range benchAlgs {
		port := e.set.gwAlgPorts[alg]
		if _, err := call("GET", u(port, "/api/items"), e.algs[alg].one, "", "", 200); err != nil {
			return fmt.Errorf("sanity check, %s: %w", alg, err)
		}
		if _, err := call("GET", u(port, "/api/items"), tok, "", "", 401); err != nil {
			return fmt.Errorf("sanity check, %s refuses HS256: %w", alg, err)
		}
	}
	// Rotation: the successor works, and so does the access token that
	// came with it (it carries the session's sid).
	if setting >= len(e.sanityRotate) {
		return fmt.Errorf("sanity check: no refresh session left for GC setting %d", setting)
	}
	rt := e.sanityRotate[setting]
	for step := range 2 {
		b, err := call("POST", u(e.set.gwSmallPort, "/refresh"), "", refreshBody(rt), "application/json", 200)
		if err != nil {
			return fmt.Errorf("sanity check, refresh %d: %w", step+1, err)
		}
		var r struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		}
		if err := json.Unmarshal(b, &r); err != nil || r.RefreshToken == "" || r.RefreshToken == rt {
			return fmt.Errorf("sanity check, refresh %d: no new refresh_token in %s (rotation is off?)", step+1, b)
		}
		if _, err := call("GET", u(e.set.gwSmallPort, "/api/items"), r.AccessToken, "", "", 200); err != nil {
			return fmt.Errorf("sanity check, access token of refresh %d: %w", step+1, err)
		}
		rt = r.RefreshToken
	}
	return nil
}

// memory runs a fresh gateway process on db and sends it MemTokens
// requests, each with a new token for the next of users.
func (e *e2e) memory(m *token.Manager, db string, users, sids []string) (memResult, error) {
	cfg := e.cfg
	port, err := freePort()
	if err != nil {
		return memResult{}, err
	}
	adminPort, err := freePort()
	if err != nil {
		return memResult{}, err
	}
	admin := fmt.Sprintf("127.0.0.1:%d", adminPort)
	cf := fmt.Sprintf(caddyGlobal, admin) + fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\tbind 127.0.0.1\n%s\trespond \"ok\" 200\n}\n",
		port, e.gatewayBlock(filepath.Join(e.work, db)))
	p, err := e.startCaddy("caddy-memory-"+strings.TrimSuffix(db, ".db"), cf, e.goEnv(defaultGC), port)
	if err != nil {
		return memResult{}, err
	}
	defer e.ps.stop(p)
	logf("memory: %d distinct tokens over %d users (%s)", cfg.MemTokens, min(cfg.MemTokens, int64(len(users))), db)
	res, err := memLoad(fmt.Sprintf("http://127.0.0.1:%d", port), m, users, sids, cfg.MemTokens, cfg.MemConns, p.pid(), "http://"+admin)
	res.DB = db
	logf("memory: RSS %d -> peak %d KiB (anon %d -> %d) in %.0fs", res.Before.VmRSS, res.Peak.VmRSS,
		res.Before.RssAnon, res.Peak.RssAnon, res.Seconds)
	return res, err
}

// execOut runs bin and returns what it printed, whatever its exit status
// (`wrk -v` prints its version and exits 1).
func execOut(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if len(out) > 0 {
		return string(out), nil
	}
	return "", err
}
