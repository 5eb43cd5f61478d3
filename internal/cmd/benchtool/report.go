package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// goBench is one benchmark's figures, the median over -count runs.
type goBench struct {
	Pkg    string
	Name   string
	Runs   int
	NsOp   float64
	BOp    float64
	Allocs float64
}

var reBench = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+([\d.]+) ns/op(?:\s+([\d.]+) B/op)?(?:\s+([\d.]+) allocs/op)?`)

// parseGoBench reads `go test -bench` output (several packages, -count N).
func parseGoBench(path string) ([]goBench, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	type acc struct {
		pkg           string
		ns, b, allocs []float64
	}
	byName := map[string]*acc{}
	var order []string
	pkg := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "pkg: ") {
			pkg = strings.TrimPrefix(line, "pkg: ")
			continue
		}
		m := reBench.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := pkg + " " + m[1]
		a := byName[key]
		if a == nil {
			a = &acc{pkg: pkg}
			byName[key] = a
			order = append(order, key)
		}
		ns, _ := strconv.ParseFloat(m[3], 64)
		b, _ := strconv.ParseFloat(m[4], 64)
		al, _ := strconv.ParseFloat(m[5], 64)
		a.ns, a.b, a.allocs = append(a.ns, ns), append(a.b, b), append(a.allocs, al)
	}
	var out []goBench
	for _, k := range order {
		a := byName[k]
		out = append(out, goBench{Pkg: a.pkg, Name: strings.SplitN(k, " ", 2)[1], Runs: len(a.ns),
			NsOp: median(a.ns), BOp: median(a.b), Allocs: median(a.allocs)})
	}
	return out, sc.Err()
}

func findBench(bs []goBench, name string) *goBench {
	for i := range bs {
		if bs[i].Name == name {
			return &bs[i]
		}
	}
	return nil
}

type reportInput struct {
	e2e      e2eResult
	benches  []goBench
	mode     string
	machine  map[string]string
	commands string
	minutes  string
	scaleout *scaleoutResult // the etcd phase, when it ran
}

func runReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	e2ePath := fs.String("e2e", "", "e2e.json")
	benchPath := fs.String("gobench", "", "go test -bench output")
	mode := fs.String("mode", "", "quick or full")
	machine := fs.String("machine", "", "file of key: value lines describing the machine")
	commands := fs.String("commands", "", "file with the commands that ran")
	minutes := fs.String("minutes", "", "how long the whole run took")
	out := fs.String("out", "BENCHMARKS.md", "where to write the report")
	scaleoutPath := fs.String("scaleout", "", "scaleout.json of the etcd phase, if it ran")
	_ = fs.Parse(args)
	in := reportInput{mode: *mode, machine: map[string]string{}, minutes: *minutes}
	b, err := os.ReadFile(*e2ePath)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &in.e2e); err != nil {
		return err
	}
	if *scaleoutPath != "" {
		sb, err := os.ReadFile(*scaleoutPath)
		if err != nil {
			return err
		}
		in.scaleout = &scaleoutResult{}
		if err := json.Unmarshal(sb, in.scaleout); err != nil {
			return err
		}
	}
	if in.benches, err = parseGoBench(*benchPath); err != nil {
		return err
	}
	if mb, err := os.ReadFile(*machine); err == nil {
		for _, l := range strings.Split(string(mb), "\n") {
			if k, v, ok := strings.Cut(l, ": "); ok {
				in.machine[k] = v
			}
		}
	}
	if cb, err := os.ReadFile(*commands); err == nil {
		in.commands = string(cb)
	}
	return os.WriteFile(*out, []byte(render(in)), 0o644)
}

// perRound collects, for each round, f of the runs of that round keyed by
// case name.
func perRound(runs []caseResult, f func(byCase map[string]caseResult) (float64, bool)) []float64 {
	rounds := map[int]map[string]caseResult{}
	for _, r := range runs {
		if rounds[r.Round] == nil {
			rounds[r.Round] = map[string]caseResult{}
		}
		rounds[r.Round][r.Case] = r
	}
	keys := make([]int, 0, len(rounds))
	for k := range rounds {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var out []float64
	for _, k := range keys {
		if v, ok := f(rounds[k]); ok {
			out = append(out, v)
		}
	}
	return out
}

func ratioOf(runs []caseResult, num, den string, field func(caseResult) float64) []float64 {
	return perRound(runs, func(m map[string]caseResult) (float64, bool) {
		a, ok1 := m[num]
		b, ok2 := m[den]
		if !ok1 || !ok2 || field(b) == 0 {
			return 0, false
		}
		return field(a) / field(b), true
	})
}

func diffOf(runs []caseResult, a, b string, field func(caseResult) float64) []float64 {
	return perRound(runs, func(m map[string]caseResult) (float64, bool) {
		x, ok1 := m[a]
		y, ok2 := m[b]
		if !ok1 || !ok2 {
			return 0, false
		}
		return field(x) - field(y), true
	})
}

func caseValues(runs []caseResult, name string, field func(caseResult) float64) []float64 {
	var out []float64
	for _, r := range runs {
		if r.Case == name {
			out = append(out, field(r))
		}
	}
	return out
}

// pooledCPU is a case's CPU per request over all its runs: Σ CPU ÷ Σ
// requests. The difference of two such figures is steadier than per-round
// differences, each of which subtracts two noisy ~100 µs figures.
func pooledCPU(runs []caseResult, name string) float64 {
	return pooled(runs, name, func(r caseResult) float64 { return r.CPUus })
}

// pooled is Σ (f × requests) ÷ Σ requests over the runs of one case: a
// per-request figure over all its rounds.
func pooled(runs []caseResult, name string, f func(caseResult) float64) float64 {
	var sum, n float64
	for _, r := range runs {
		if r.Case == name {
			sum += f(r) * float64(r.Requests)
			n += float64(r.Requests)
		}
	}
	if n == 0 {
		return 0
	}
	return sum / n
}

func gcUs(r caseResult) float64 { return r.GCus }

func rps(r caseResult) float64 { return r.RPS }
func p99(r caseResult) float64 { return r.P99us }
func cpu(r caseResult) float64 { return r.CPUus }

func fmtList(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, ", ")
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

// docPath is where the prose about the harness and the code lives; the
// report links to it instead of repeating it.
const docPath = "docs/dev/benchmarks.md"

type target struct {
	what, goal, measured string
	alt                  string // the same figure with Go's default collector on both sides, or ""
	ok                   bool
	doc                  string // anchor in docPath: what limits this target
}

// runsOf returns the runs taken under the GC setting name; with no GC
// settings recorded (an e2e.json of an older harness) every run.
func runsOf(e e2eResult, name string) []caseResult {
	if len(e.GC) == 0 {
		return e.Runs
	}
	var out []caseResult
	for _, r := range e.Runs {
		if r.GC == name {
			out = append(out, r)
		}
	}
	return out
}

func gcLabel(e e2eResult, i int) string {
	if i < len(e.GC) {
		return "`" + strings.Join(e.GC[i].Env, " ") + "`"
	}
	return "the environment's"
}

func render(in reportInput) string {
	e := in.e2e
	cfg := e.Config
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }

	// The headline runs: every compared process with the same fixed
	// memory limit. alt: the same cases with Go's default collector.
	var head, alt []caseResult
	headName, altName := "", ""
	if len(e.GC) > 0 {
		headName = e.GC[0].Name
	}
	if len(e.GC) > 1 {
		altName = e.GC[1].Name
	}
	head = runsOf(e, headName)
	if altName != "" {
		alt = runsOf(e, altName)
	}

	p("# Benchmarks\n\n")
	p("Written by `scripts/bench.sh %s` (`make %s`) on %s UTC; the run took %s minutes. How the figures are taken, why, and what limits each target: [%s](%s).\n\n",
		in.mode, map[string]string{"full": "bench", "quick": "bench-quick"}[in.mode], e.Finished.Format("2006-01-02 15:04"), in.minutes, docPath, docPath)
	if in.mode == "quick" {
		p("> This is a **quick** run (`make bench-quick`): short runs, %d rounds, and a %d-user database standing in for the million-user one. Use `make bench` for the figures of record.\n\n", cfg.Rounds, cfg.BigUsers)
	}
	p("Every end-to-end ratio is to the plain `reverse_proxy` measured in the same round (median of the rounds). **Headline figures:** every compared process (both plain proxies, the gateway, forward_auth's Caddy and its auth service) runs with %s. **Default GC:** the same cases again, every compared process with %s.\n\n",
		gcLabel(e, 0), gcLabel(e, 1))

	p("## Machine\n\n| | |\n|---|---|\n")
	for _, k := range []string{"nproc", "cpu", "kernel", "go", "wrk", "caddy", "code"} {
		if v, ok := in.machine[k]; ok {
			p("| %s | %s |\n", k, v)
		}
	}
	p("| load average (1, 5, 15 min) before / after the end-to-end part | %s / %s |\n\n", e.LoadBefore, e.LoadAfter)

	// --- in-process figures
	hmacB := findBench(in.benches, "BenchmarkBaselineHMAC")
	jwtB := findBench(in.benches, "BenchmarkBaselineGolangJWTParse")
	rep := findBench(in.benches, "BenchmarkServeHTTPRepeatedToken")
	fresh := findBench(in.benches, "BenchmarkServeHTTPFreshToken")
	refreshB := findBench(in.benches, "BenchmarkRefreshEndpoint")
	tokenB := findBench(in.benches, "BenchmarkTokenEndpoint")

	// --- e2e figures
	ratioFig := func(num, den string, field func(caseResult) float64) (string, float64, string) {
		r := ratioOf(head, num, den, field)
		a := ""
		if alt != nil {
			ra := ratioOf(alt, num, den, field)
			a = fmt.Sprintf("%.3f (rounds: %s)", median(ra), fmtList(ra, "%.2f"))
		}
		return fmt.Sprintf("%.3f (rounds: %s)", median(r), fmtList(r, "%.2f")), median(r), a
	}
	fwdRatio := ratioOf(head, "forward_auth", "plain", rps)
	addedCPU := diffOf(head, "gateway", "plain", cpu)
	bigVsSmallCPU := diffOf(head, "gateway_fresh_big", "gateway_fresh", cpu)

	capacity := float64(e.HashCap) / (e.HashMs / 1000)
	// Each flood round is set against the single-hash time measured at its
	// start (the hash time moves with the machine's load).
	roundCap := func(round int) float64 {
		if round < len(e.FloodHashMs) && e.FloodHashMs[round] > 0 {
			return float64(e.HashCap) / (e.FloodHashMs[round] / 1000)
		}
		return capacity
	}
	var loginsWith, loginsAlone []float64
	for _, f := range e.Floods {
		if f.WithWrk {
			loginsWith = append(loginsWith, f.LoginsPerS/roundCap(f.Round))
		} else {
			loginsAlone = append(loginsAlone, f.LoginsPerS/roundCap(f.Round))
		}
	}
	floodKeep := ratioOf(e.FloodRuns, "proxied+flood", "proxied", rps)
	loginRatio := median(e.LoginBigMs) / median(e.LoginSmallMs)
	grow := func(m memResult) (rss, anon, file float64) {
		return float64(m.Peak.VmRSS-m.Before.VmRSS) / 1024, float64(m.Peak.RssAnon-m.Before.RssAnon) / 1024,
			float64(m.Peak.RssFile-m.Before.RssFile) / 1024
	}
	memGrowMB, memAnonMB, memFileMB := grow(e.Mem)
	usersGrowMB, usersAnonMB, usersFileMB := grow(e.MemUsers)
	bigName := fmt.Sprintf("%d users", cfg.BigUsers)

	var ts []target
	add := func(t target) { ts = append(ts, t) }
	m, v, a := ratioFig("gateway", "plain", rps)
	add(target{what: "proxied throughput, one token", goal: "≥ 0.95 × plain reverse_proxy", measured: m, alt: a, ok: v >= 0.95, doc: "throughput-one-token"})
	m, v, a = ratioFig("gateway_fresh", "plain_lua", rps)
	add(target{what: "proxied throughput, a different token per request", goal: "≥ 0.95 × plain reverse_proxy (same Lua driver)", measured: m, alt: a, ok: v >= 0.95, doc: "throughput-fresh-tokens"})
	// The signing algorithms: a token seen before costs the same whatever
	// signed it; a new one costs its signature check. Added only when the
	// run has the cases (an e2e.json from before them has not).
	if len(ratioOf(head, algCaseName("gateway", "EdDSA"), "plain", rps)) > 0 {
		for _, alg := range benchAlgs {
			m, v, a = ratioFig(algCaseName("gateway", alg), "plain", rps)
			add(target{what: "proxied throughput, one token, signing with " + alg, goal: "≥ 0.95 × plain reverse_proxy", measured: m, alt: a, ok: v >= 0.95, doc: "throughput-by-signing-algorithm"})
		}
		m, v, a = ratioFig(algCaseName("gateway_fresh", "EdDSA"), "plain_lua", rps)
		add(target{what: "proxied throughput, a different token per request, signing with EdDSA", goal: "≥ 0.6 × plain reverse_proxy (same Lua driver)", measured: m, alt: a, ok: v >= 0.6, doc: "throughput-by-signing-algorithm"})
		m, _, a = ratioFig(algCaseName("gateway_fresh", "ES256"), "plain_lua", rps)
		add(target{what: "proxied throughput, a different token per request, signing with ES256 (reported, no target)", goal: "—", measured: m, alt: a, ok: true, doc: "throughput-by-signing-algorithm"})
	}
	m, v, a = ratioFig("gateway", "plain", p99)
	add(target{what: "p99 latency, one token", goal: "≤ 1.10 × plain reverse_proxy", measured: m, alt: a, ok: v <= 1.10, doc: "p99-latency"})
	m, v, a = ratioFig("gateway_fresh", "plain_lua", p99)
	add(target{what: "p99 latency, fresh tokens", goal: "≤ 1.10 × plain reverse_proxy (same Lua driver)", measured: m, alt: a, ok: v <= 1.10, doc: "p99-latency"})
	m, v, a = ratioFig("plain_aa", "plain", rps)
	add(target{what: "A/A: a second plain reverse_proxy, throughput (no target: the noise floor)", goal: "—", measured: m, alt: a, ok: true, doc: ""})
	m, v, a = ratioFig("plain_aa", "plain", p99)
	add(target{what: "A/A: a second plain reverse_proxy, p99 (no target: the noise floor)", goal: "—", measured: m, alt: a, ok: true, doc: ""})
	cpuFig := func(runs []caseResult) (string, float64) {
		added := pooledCPU(runs, "gateway") - pooledCPU(runs, "plain")
		gcGw, gcPlain := pooled(runs, "gateway", gcUs), pooled(runs, "plain", gcUs)
		return fmt.Sprintf("%.1f µs (gateway %.1f − plain %.1f µs/request, Σ CPU ÷ Σ requests; fresh tokens %.1f µs); GC: gateway %.1f, plain %.1f µs/request; without the collectors %.1f µs",
			added, pooledCPU(runs, "gateway"), pooledCPU(runs, "plain"),
			pooledCPU(runs, "gateway_fresh")-pooledCPU(runs, "plain_lua"), gcGw, gcPlain,
			(pooledCPU(runs, "gateway")-gcGw)-(pooledCPU(runs, "plain")-gcPlain)), added
	}
	cm, cv := cpuFig(head)
	cm += fmt.Sprintf("; per-round differences: %s", fmtList(addedCPU, "%.1f"))
	ca := ""
	if alt != nil {
		ca, _ = cpuFig(alt)
	}
	add(target{what: "added gateway CPU per request, repeated token", goal: "≤ 10 µs", measured: cm, alt: ca, ok: cv <= 10, doc: "added-cpu-per-request"})
	// The in-process targets are absolute figures from a quiet machine
	// where the bare HMAC took 0.8 µs and golang-jwt's parse 9.2 µs. On a
	// shared machine both baselines are slower by a factor that changes
	// from run to run, so each target is also scaled by its baseline of
	// the same run, and the verdict is on the scaled target.
	hmacScale, jwtScale := hmacNs(hmacB)/800, jwtNs(jwtB)/9200
	noisy := ""
	if hmacScale > 4 || jwtScale > 4 || hmacScale/jwtScale > 2 || jwtScale/hmacScale > 2 {
		noisy = " (**the baselines ran more than 4 times slower than on a quiet machine, or disagree with each other by more than 2×: the machine was too busy for this verdict to mean much; re-run**)"
	}
	if rep != nil {
		lim := 3000 * hmacScale
		add(target{what: "in-process check, repeated token", goal: "≤ 3 µs and ≤ 10 allocs",
			measured: fmt.Sprintf("%.2f µs, %.0f allocs, %.0f B; %.2f × this run's bare HMAC (%.2f µs, vs 0.8 µs quiet), so the target scales to %.2f µs%s", rep.NsOp/1000, rep.Allocs, rep.BOp, rep.NsOp/hmacNs(hmacB), hmacNs(hmacB)/1000, lim/1000, noisy),
			ok:       rep.NsOp <= lim && rep.Allocs <= 10, doc: "in-process-check-repeated-token"})
	}
	if fresh != nil {
		lim := 12000 * jwtScale
		add(target{what: "in-process check, new token", goal: "≤ 12 µs",
			measured: fmt.Sprintf("%.2f µs, %.0f allocs; %.2f × this run's golang-jwt parse (%.2f µs, vs 9.2 µs quiet), so the target scales to %.2f µs%s", fresh.NsOp/1000, fresh.Allocs, fresh.NsOp/jwtNs(jwtB), jwtNs(jwtB)/1000, lim/1000, noisy),
			ok:       fresh.NsOp <= lim, doc: "in-process-check-new-token"})
	}
	add(target{what: fmt.Sprintf("resident memory (VmRSS) over %d distinct tokens (%d users)", e.Mem.Tokens, e.Mem.DistinctIDs), goal: "grows < 50 MB",
		measured: fmt.Sprintf("%+.1f MB: anonymous (heap, caches) %+.1f MB, file-backed (the bbolt mmap) %+.1f MB", memGrowMB, memAnonMB, memFileMB),
		ok:       memGrowMB < 50, doc: "memory-distinct-tokens"})
	add(target{what: fmt.Sprintf("resident memory (VmRSS) over %d distinct tokens for %d distinct users", e.MemUsers.Tokens, e.MemUsers.DistinctIDs), goal: "grows < 50 MB",
		measured: fmt.Sprintf("%+.1f MB: anonymous (heap, caches) %+.1f MB, file-backed (the bbolt mmap) %+.1f MB", usersGrowMB, usersAnonMB, usersFileMB),
		ok:       usersGrowMB < 50, doc: "memory-distinct-users"})
	// A refresh that fails (a 400 from a forked or revoked session, a
	// chain the load generator lost) is fast and would flatter the
	// throughput: a run with any does not meet the target.
	refreshFailures := func(name string) (string, bool) {
		var bad, all int64
		for _, r := range head {
			if r.Case == name {
				bad += r.Errors()
				all += r.Requests
			}
		}
		return fmt.Sprintf("; failed requests %d of %d", bad, all), bad == 0
	}
	m, v, a = ratioFig("refresh", "plain", rps)
	fails, clean := refreshFailures("refresh")
	add(target{what: "/refresh throughput with rotation (each refresh a durable, group-committed write)", goal: "≥ 0.5 × plain reverse_proxy, no failed refresh",
		measured: m + fails, alt: a, ok: v >= 0.5 && clean, doc: "refresh-throughput-with-rotation"})
	m, _, a = ratioFig("refresh", "plain", p99)
	add(target{what: "/refresh p99 latency with rotation, ratio to plain reverse_proxy (reported, no target)", goal: "—",
		measured: fmt.Sprintf("%s; median p99 %.2f ms (plain %.2f ms)", m, median(caseValues(head, "refresh", p99))/1000, median(caseValues(head, "plain", p99))/1000),
		alt:      a, ok: true})
	m, v, a = ratioFig("refresh_norotate", "plain", rps)
	fails, clean = refreshFailures("refresh_norotate")
	add(target{what: "/refresh throughput, `rotate_refresh off`", goal: "≥ 1.0 × plain reverse_proxy, no failed refresh",
		measured: m + fails, alt: a, ok: v >= 1.0 && clean, doc: "refresh-throughput"})
	loginsMeasured := func(xs []float64) string {
		return fmt.Sprintf("%.2f (rounds: %s); cap %d, one argon2.IDKey per round %s ms → %s logins/s", median(xs), fmtList(xs, "%.2f"),
			e.HashCap, fmtList(e.FloodHashMs, "%.1f"), fmtList(capsOf(e.FloodHashMs, e.HashCap), "%.1f"))
	}
	add(target{what: "logins/s, login flood at 2× capacity (no other traffic)", goal: "≥ 0.9 × cap ÷ one argon2.IDKey",
		measured: loginsMeasured(loginsAlone), ok: median(loginsAlone) >= 0.9, doc: "logins-per-second"})
	add(target{what: "logins/s, the same flood while proxied traffic runs", goal: "≥ 0.9 × cap ÷ one argon2.IDKey",
		measured: loginsMeasured(loginsWith), ok: median(loginsWith) >= 0.9, doc: "logins-per-second-with-proxied-traffic"})
	add(target{what: "proxied throughput during a login flood at 2× hashing capacity", goal: "≥ 0.5 × without the flood",
		measured: fmt.Sprintf("%.3f (rounds: %s)", median(floodKeep), fmtList(floodKeep, "%.2f")), ok: median(floodKeep) >= 0.5,
		doc: "proxied-throughput-during-a-login-flood"})
	add(target{what: fmt.Sprintf("login latency, %s vs %d users", bigName, cfg.SmallUsers), goal: "within 5 %",
		measured: fmt.Sprintf("%.3f (medians %.1f ms vs %.1f ms, %d logins each)", loginRatio, median(e.LoginBigMs), median(e.LoginSmallMs), len(e.LoginBigMs)),
		ok:       loginRatio <= 1.05, doc: "login-latency-and-database-size"})
	m, v, a = ratioFig("gateway_fresh_big", "gateway_fresh", rps)
	add(target{what: fmt.Sprintf("proxied throughput, %s vs %d users (a different token and user per request)", bigName, cfg.SmallUsers), goal: "≥ 0.95 (within 5 %)",
		measured: m + fmt.Sprintf("; CPU/request %+.1f µs", median(bigVsSmallCPU)), alt: a, ok: v >= 0.95, doc: "throughput-and-database-size"})

	p("## Targets\n\n| target | goal | headline: %s (median of rounds) | | default GC: %s |\n|---|---|---|---|---|\n", gcLabel(e, 0), gcLabel(e, 1))
	for _, t := range ts {
		verd := verdict(t.ok)
		if t.goal == "—" {
			verd = ""
		}
		alt := t.alt
		if alt == "" {
			alt = "—"
		}
		p("| %s | %s | %s | %s | %s |\n", t.what, t.goal, t.measured, verd, alt)
	}
	p("\nThe verdicts are on the headline column. The memory rows ran under %s, the logins and the flood under %s (see %s). `forward_auth` to a service doing the same token check reaches **%.2f** of plain (rounds: %s).\n\n",
		memGCLabel(e), floodGCLabel(e), docPath, median(fwdRatio), fmtList(fwdRatio, "%.2f"))
	notMet := false
	for _, t := range ts {
		if !t.ok {
			if !notMet {
				p("### Targets not met\n\n")
				notMet = true
			}
			p("- **%s**: %s. What limits it: [%s#%s](%s#%s).\n", t.what, t.measured, docPath, t.doc, docPath, t.doc)
		}
	}
	if notMet {
		p("\n")
	}

	// --- end-to-end table
	p("## End-to-end (wrk)\n\n")
	p("%d rounds per GC setting; each case once per round for %s with `wrk -t%d -c%d --latency`, the starting case rotated by one each round, an unrecorded %s warm-up before a case's first round. Each compared configuration is its own process; CPU is utime+stime from `/proc/<pid>/stat` per completed request; GC from `GODEBUG=gctrace=1`.\n\n",
		cfg.Rounds, cfg.Duration, cfg.Threads, cfg.Conns, cfg.Warmup)
	p("| case | median req/s | ratio to plain | ratio, default GC | median p99 | p99 ratio | p99 ratio, default GC | CPU µs/req | of which GC | GC cycles/s | GC cycles/s, default GC | upstream CPU µs/req | failed requests, all rounds |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	gcRate := func(r caseResult) float64 { return float64(r.GCs) / cfg.Duration.Seconds() }
	for _, c := range e.Cases {
		base := "plain"
		if strings.HasPrefix(c.Name, "gateway_fresh") || c.Name == "plain_lua" {
			base = "plain_lua"
		}
		altR, altP, altGC := "—", "—", "—"
		if alt != nil {
			altR = fmt.Sprintf("%.3f", median(ratioOf(alt, c.Name, base, rps)))
			altP = fmt.Sprintf("%.2f", median(ratioOf(alt, c.Name, base, p99)))
			altGC = fmt.Sprintf("%.1f", median(caseValues(alt, c.Name, gcRate)))
		}
		var failed int64
		for _, r := range e.Runs {
			if r.Case == c.Name {
				failed += r.Errors()
			}
		}
		p("| `%s`: %s | %.0f | %.3f (vs `%s`) | %s | %.2f ms | %.2f | %s | %.1f | %.1f | %.1f | %s | %.1f | %d |\n", c.Name, c.Desc,
			median(caseValues(head, c.Name, rps)), median(ratioOf(head, c.Name, base, rps)), base, altR,
			median(caseValues(head, c.Name, p99))/1000, median(ratioOf(head, c.Name, base, p99)), altP,
			median(caseValues(head, c.Name, cpu)), median(caseValues(head, c.Name, gcUs)),
			median(caseValues(head, c.Name, gcRate)), altGC,
			median(caseValues(head, c.Name, func(r caseResult) float64 { return r.UpstreamUs })), failed)
	}
	p("\nFresh-token cases: %d tokens cycling against a verified-token cache of %d; `gateway_fresh_big` spreads them over %d users of the %s database against an AuthState cache of %d.\n\n",
		cfg.ListLen, token.DefaultCacheSize, min(cfg.ListLen, cfg.BigUsers), bigName, bolt.DefaultCacheSize)

	p("<details><summary>Every run</summary>\n\n| GC | round | pos | case | req/s | p50 | p99 | CPU µs/req | GC cycles | requests | failed |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range e.Runs {
		p("| %s | %d | %d | %s | %.0f | %.2f ms | %.2f ms | %.1f | %d | %d | %d |\n", r.GC, r.Round+1, r.Pos+1, r.Case, r.RPS, r.P50us/1000, r.P99us/1000, r.CPUus, r.GCs, r.Requests, r.Errors())
	}
	p("\n</details>\n\nFailed requests: non-2xx answers and socket errors as wrk counts them, and for the refresh cases 200s that carried no successor and requests sent with no token left (`wrk/refresh.lua`).\n\n")

	// --- logins
	p("## Logins and the login flood\n\n")
	p("Under %s. Hashing cap: %d (the default `max_concurrent_hashes`, half the CPUs). One `argon2.IDKey` (golang.org/x/crypto; %s), timed in the benchmark program: median **%.1f ms** of %d timings interleaved with the serial logins (samples: %s ms). Capacity = cap ÷ that = **%.1f logins/s**; the flood offers twice that, open loop, over %d users. Each flood round is divided by the capacity from timings taken at its start.\n\n",
		floodGCLabel(e), e.HashCap, e.HashParams, e.HashMs, len(e.HashSamplesMs), fmtList(e.HashSamplesMs, "%.0f"), capacity, cfg.SmallUsers)
	p("| round | one IDKey | capacity/s | with proxied traffic | offered/s | logins/s (200 within the window) | ÷ capacity | 503 busy | 429 | other | median login latency |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range e.Floods {
		hm := e.HashMs
		if f.Round < len(e.FloodHashMs) {
			hm = e.FloodHashMs[f.Round]
		}
		p("| %d | %.1f ms | %.1f | %v | %.1f | %.1f | %.2f | %d | %d | %d | %.0f ms |\n", f.Round+1, hm, roundCap(f.Round), f.WithWrk, f.Rate, f.LoginsPerS, f.LoginsPerS/roundCap(f.Round), f.Busy, f.Throttled, f.Other, f.OKMedianMs)
	}
	p("\nProxied traffic (gateway, one token) with and without the flood, interleaved:\n\n| round | without flood req/s | with flood req/s | ratio | p99 without | p99 with |\n|---|---|---|---|---|---|\n")
	for round := 0; round < cfg.FloodRounds; round++ {
		var a, b *caseResult
		for i := range e.FloodRuns {
			r := &e.FloodRuns[i]
			if r.Round == round && r.Case == "proxied" {
				a = r
			}
			if r.Round == round && r.Case == "proxied+flood" {
				b = r
			}
		}
		if a != nil && b != nil {
			p("| %d | %.0f | %.0f | %.2f | %.2f ms | %.2f ms |\n", round+1, a.RPS, b.RPS, b.RPS/a.RPS, a.P99us/1000, b.P99us/1000)
		}
	}
	p("\nSerial logins (one at a time), alternating between the %d-user and the %s database: medians %.1f ms and %.1f ms.\n\n", cfg.SmallUsers, bigName, median(e.LoginSmallMs), median(e.LoginBigMs))

	// --- databases
	p("## Databases\n\n| database | users | how filled | single-user CreateUser | whole fill | file | sessions (`CreateSession`, one per user, and on the small one the refresh cases') |\n|---|---|---|---|---|---|---|\n")
	for _, k := range []string{"small", "big"} {
		f := e.Fill[k]
		p("| %s | %d | %s | %.1f ms/user (the last %d users, into the filled database) | %.1f s | %.0f MB | %d in %.1f s |\n", k, f.Users, fillMethod(f.Method), f.CreateUserMs, f.SingleUsers, f.Seconds, f.FileMB, f.Sessions, f.SessionSeconds)
	}
	if f := e.Fill["big"]; f.CreateUserMs > 0 {
		p("\nAt the single-user rate, %d users through `CreateUser` would take about %.0f minutes.\n", f.Users, f.CreateUserMs*float64(f.Users)/60000)
	}
	p("\n")

	// --- memory
	p("## Memory\n\nA fresh gateway process per run, under %s; %d warm-up requests with one token, then %d requests, each with a newly minted token, over %d keep-alive connections, 16 pipelined on each. Resident memory from `/proc/<pid>/status` every second; heap in use from Caddy's admin `/debug/vars`.\n\n",
		memGCLabel(e), 2000, e.Mem.Tokens, cfg.MemConns)
	for _, m := range []struct {
		title string
		r     memResult
	}{{fmt.Sprintf("%d distinct tokens, %d users", e.Mem.Tokens, e.Mem.DistinctIDs), e.Mem},
		{fmt.Sprintf("%d distinct tokens, %d distinct users", e.MemUsers.Tokens, e.MemUsers.DistinctIDs), e.MemUsers}} {
		r := m.r
		p("### %s (`%s`)\n\n", m.title, r.DB)
		p("| | VmRSS | RssAnon | RssFile | heap in use |\n|---|---|---|---|---|\n")
		p("| before | %.1f MB | %.1f MB | %.1f MB | %.1f MB |\n", kib(r.Before.VmRSS), kib(r.Before.RssAnon), kib(r.Before.RssFile), float64(r.HeapBefore)/(1<<20))
		p("| peak | %.1f MB | %.1f MB | %.1f MB | |\n", kib(r.Peak.VmRSS), kib(r.Peak.RssAnon), kib(r.Peak.RssFile))
		p("| after | %.1f MB | %.1f MB | %.1f MB | %.1f MB |\n", kib(r.After.VmRSS), kib(r.After.RssAnon), kib(r.After.RssFile), float64(r.HeapAfter)/(1<<20))
		p("\n%d requests in %.0f s.\n\n", r.Tokens, r.Seconds)
		if len(r.Samples) > 0 {
			p("<details><summary>Samples</summary>\n\n| tokens done | VmRSS MB | RssAnon MB | RssFile MB |\n|---|---|---|---|\n")
			step := max(1, len(r.Samples)/20)
			for i, s := range r.Samples {
				if i%step == 0 || i == len(r.Samples)-1 {
					p("| %d | %.1f | %.1f | %.1f |\n", s.Done, kib(s.VmRSS), kib(s.RssAnon), kib(s.RssFile))
				}
			}
			p("\n</details>\n\n")
		}
	}

	if in.scaleout != nil {
		renderScaleout(p, in.scaleout)
	}

	// --- go benchmarks
	p("## In-process (Go benchmarks, `-benchmem`)\n\n")
	p("Median of the runs of each benchmark; ratios to `BenchmarkBaselineHMAC` and `BenchmarkBaselineGolangJWTParse` of the same run (0.8 µs and 9.2 µs on a quiet machine).\n\n")
	p("| package | benchmark | runs | ns/op | B/op | allocs/op | ÷ HMAC | ÷ golang-jwt parse |\n|---|---|---|---|---|---|---|---|\n")
	for _, bn := range in.benches {
		p("| %s | %s | %d | %s | %.0f | %.0f | %.2f | %.2f |\n", strings.TrimPrefix(bn.Pkg, "github.com/crudauth/caddy-crudauth/"), strings.TrimPrefix(bn.Name, "Benchmark"), bn.Runs,
			fmtNs(bn.NsOp), bn.BOp, bn.Allocs, bn.NsOp/hmacNs(hmacB), bn.NsOp/jwtNs(jwtB))
	}
	if tokenB != nil && refreshB != nil {
		p("\n`/token` costs %.1f ms in-process (the argon2id hash); `/refresh` %.1f µs.\n", tokenB.NsOp/1e6, refreshB.NsOp/1000)
	}
	p("\n")

	// --- commands
	p("## Commands\n\n```sh\n%s```\n\nwrk, per case (tokens elided; `BENCH_TOKENS` names a file of pre-minted tokens, one a line):\n\n```sh\n", in.commands)
	for _, c := range e.Cases {
		p("# %s\n%s\n", c.Name, c.Command)
	}
	p("```\n\nCaddy configurations (the same under each GC setting; ports are picked free at each start, the secret is random per run):\n\n")
	names := make([]string, 0, len(e.Caddyfiles))
	for k := range e.Caddyfiles {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		p("<details><summary>%s</summary>\n\n```caddyfile\n%s```\n\n</details>\n\n", k, e.Caddyfiles[k])
	}
	return w.String()
}

func settingLabel(e e2eResult, name string) string {
	for i, g := range e.GC {
		if g.Name == name {
			return gcLabel(e, i)
		}
	}
	if name == "default" {
		return "`" + strings.Join(defaultGC, " ") + "`"
	}
	return "the environment's GC settings"
}

func floodGCLabel(e e2eResult) string { return settingLabel(e, e.FloodGC) }
func memGCLabel(e e2eResult) string   { return settingLabel(e, e.MemGC) }

func capsOf(hashMs []float64, hashCap int) []float64 {
	out := make([]float64, len(hashMs))
	for i, h := range hashMs {
		if h > 0 {
			out[i] = float64(hashCap) / (h / 1000)
		}
	}
	return out
}

func kib(v int64) float64 { return float64(v) / 1024 }

func fmtNs(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.0f", ns)
	case ns >= 100:
		return fmt.Sprintf("%.0f", ns)
	}
	return fmt.Sprintf("%.1f", ns)
}

func hmacNs(b *goBench) float64 {
	if b == nil || b.NsOp == 0 {
		return 800
	}
	return b.NsOp
}

func jwtNs(b *goBench) float64 {
	if b == nil || b.NsOp == 0 {
		return 9200
	}
	return b.NsOp
}

func fillMethod(m string) string {
	switch m {
	case "CreateUsers":
		return "`CreateUsers`, 20000 users per transaction, in ID order (pages packed full, as `bbolt compact` leaves them), then 100 users through `CreateUser` with generated IDs"
	}
	return m
}
