package main

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// percentile is the nearest-rank percentile p (0 < p ≤ 100) of xs: the
// smallest value with at least p percent of the values at or below it.
// 0 for no values.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	k := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(k, 1), len(s))-1]
}

// revocationMs is every gateway's propagation time of every revocation,
// in ms; a gateway that already refused the token when the acknowledgement
// arrived counts 0.
func revocationMs(revs []revocation) []float64 {
	var out []float64
	for _, r := range revs {
		for _, ms := range r.Ms {
			out = append(out, max(ms, 0))
		}
	}
	return out
}

// revocationOf is gateway i's (0: B) propagation times.
func revocationOf(revs []revocation, i int) []float64 {
	var out []float64
	for _, r := range revs {
		if i < len(r.Ms) {
			out = append(out, max(r.Ms[i], 0))
		}
	}
	return out
}

// revocationFromSent is every gateway's time from the revocation request
// sent to A to its first 401, in ms.
func revocationFromSent(revs []revocation) []float64 {
	var out []float64
	for _, r := range revs {
		for _, ms := range r.Ms {
			out = append(out, max(ms+r.AckMs, 0))
		}
	}
	return out
}

func revocationTimeouts(revs []revocation) int {
	n := 0
	for _, r := range revs {
		n += r.TimedOut
	}
	return n
}

// floodRatios are, per flood round, etcd's logins/s over bbolt's, and
// each side's over the capacity of that round (hashing cap ÷ one IDKey).
func floodRatios(s *scaleoutResult) (ratio, bolt, etcd []float64) {
	for r := range s.Config.FloodRounds {
		var b, e *sideFlood
		for i := range s.Flood {
			f := &s.Flood[i]
			if f.Round != r {
				continue
			}
			if f.Side == sideBolt {
				b = f
			} else if f.Side == sideEtcd {
				e = f
			}
		}
		if b == nil || e == nil || r >= len(s.Hash) || s.Hash[r] <= 0 {
			continue
		}
		capacity := float64(s.Cap) / (s.Hash[r] / 1000)
		bolt, etcd = append(bolt, b.LoginsPerS/capacity), append(etcd, e.LoginsPerS/capacity)
		if b.LoginsPerS > 0 {
			ratio = append(ratio, e.LoginsPerS/b.LoginsPerS)
		}
	}
	return ratio, bolt, etcd
}

// scaleoutTargets are the etcd phase's goals and what it measured.
func scaleoutTargets(s *scaleoutResult) []target {
	var ts []target
	ratio := func(num, den string) (string, float64) {
		r := ratioOf(s.Runs, num, den, rps)
		return fmt.Sprintf("%.3f (rounds: %s)", median(r), fmtList(r, "%.2f")), median(r)
	}
	for i := range s.Config.Gateways {
		m, v := ratio(etcdCase(i), caseBolt)
		ts = append(ts, target{what: fmt.Sprintf("proxied throughput, gateway %c on etcd, one token", 'A'+i), goal: "≥ 0.95 × the bbolt gateway",
			measured: m, ok: v >= 0.95})
	}
	m, v := ratio(caseEtcdFresh, caseBoltFresh)
	ts = append(ts, target{what: "proxied throughput, gateway A on etcd, a different token per request", goal: "≥ 0.95 × the bbolt gateway (same Lua driver)",
		measured: m, ok: v >= 0.95})
	lr, lb, le := floodRatios(s)
	ts = append(ts, target{what: "logins/s, login flood at 2× capacity, gateway A on etcd", goal: "≥ 0.9 × the bbolt gateway",
		measured: fmt.Sprintf("%.3f (rounds: %s); ÷ capacity: etcd %s, bbolt %s", median(lr), fmtList(lr, "%.2f"), fmtList(le, "%.2f"), fmtList(lb, "%.2f")),
		ok:       len(lr) > 0 && median(lr) >= 0.9})
	var bad, all int64
	for _, r := range s.Runs {
		if r.Case == caseEtcdRefresh || r.Case == caseBoltRefresh {
			bad += r.Errors()
			all += r.Requests
		}
	}
	m, _ = ratio(caseEtcdRefresh, caseBoltRefresh)
	ts = append(ts, target{what: "/refresh with rotation, gateway A on etcd (reported, no target)", goal: "—",
		measured: fmt.Sprintf("%s; median %.0f vs %.0f refreshes/s, p99 %.2f vs %.2f ms; failed requests %d of %d", m,
			median(caseValues(s.Runs, caseEtcdRefresh, rps)), median(caseValues(s.Runs, caseBoltRefresh, rps)),
			median(caseValues(s.Runs, caseEtcdRefresh, p99))/1000, median(caseValues(s.Runs, caseBoltRefresh, p99))/1000, bad, all),
		ok: bad == 0})
	ms := revocationMs(s.Revs)
	to := revocationTimeouts(s.Revs)
	ts = append(ts, target{what: fmt.Sprintf("revocation through gateway A refused by the other gateways (%d revocations × %d gateways)", len(s.Revs), max(s.Config.Gateways-1, 0)),
		goal: "p99 ≤ 100 ms",
		measured: fmt.Sprintf("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; not refused within %v: %d", percentile(ms, 50), percentile(ms, 90),
			percentile(ms, 99), percentile(ms, 100), revokeGiveUpTime, to),
		ok: len(ms) > 0 && to == 0 && percentile(ms, 99) <= 100})
	b := s.Big
	ts = append(ts, target{what: fmt.Sprintf("a new gateway on a prefix of %d users (reported, no target)", b.Users), goal: "—",
		measured: fmt.Sprintf("first authenticated answer %.1f s after the start; VmRSS %.0f MB (anonymous %.0f MB), heap in use %.0f MB",
			b.FirstSeconds, kib(b.Mem.VmRSS), kib(b.Mem.RssAnon), float64(b.HeapInuse)/(1<<20)),
		ok: b.FirstSeconds > 0})
	return ts
}

// renderScaleout writes the section of the etcd phase.
func renderScaleout(p func(string, ...any), s *scaleoutResult) {
	cfg := s.Config
	p("## Several gateways on etcd\n\n")
	p("Written by `benchtool scaleout -mode %s` (run by `scripts/bench.sh` after the end-to-end part); the phase took **%.1f minutes**. A cluster of %d etcd members (`%s`, Debian's `etcd-server`) on this machine, data on the same disk as the bbolt file, and %d gateways (Caddy processes, `bin/caddy`) on one prefix. The baseline of every ratio is **one gateway on bbolt measured in the same run**, same configuration but for the store, same wrk script, all with %s. With two cores, **one gateway is measured at a time while the other gateways stay up and idle** (their watches open); the %d cases run once per round for %s, %d rounds, the starting case rotated each round. Method: [%s#the-etcd-phase](%s#the-etcd-phase).\n\n",
		cfg.Mode, s.Finished.Sub(s.Started).Minutes(), cfg.Members, s.EtcdVer, cfg.Gateways, "`"+strings.Join(s.GC.Env, " ")+"`",
		len(s.Cases), cfg.Duration, cfg.Rounds, docPath, docPath)

	p("| target | goal | measured | |\n|---|---|---|---|\n")
	for _, t := range scaleoutTargets(s) {
		verd := verdict(t.ok)
		if t.goal == "—" {
			verd = ""
		}
		p("| %s | %s | %s | %s |\n", t.what, t.goal, t.measured, verd)
	}

	p("\n### Throughput, per case\n\n| case | median req/s | ratio to its bbolt case | median p99 | CPU µs/req | failed requests |\n|---|---|---|---|---|---|\n")
	for _, c := range s.Cases {
		base := caseBolt
		switch c.Name {
		case caseEtcdFresh, caseBoltFresh:
			base = caseBoltFresh
		case caseEtcdRefresh, caseBoltRefresh:
			base = caseBoltRefresh
		}
		var failed int64
		for _, r := range s.Runs {
			if r.Case == c.Name {
				failed += r.Errors()
			}
		}
		p("| `%s`: %s | %.0f | %.3f | %.2f ms | %.1f | %d |\n", c.Name, c.Desc, median(caseValues(s.Runs, c.Name, rps)),
			median(ratioOf(s.Runs, c.Name, base, rps)), median(caseValues(s.Runs, c.Name, p99))/1000,
			median(caseValues(s.Runs, c.Name, cpu)), failed)
	}

	p("\n### Logins\n\nThe e2e phase's login flood (open loop at twice the hashing capacity, %d users, no other traffic) against the bbolt gateway and gateway A in turn, the first side alternating; one `argon2.IDKey` timed at the start of each round (hashing cap %d).\n\n| round | one IDKey | offered/s | bbolt logins/s | etcd logins/s | etcd ÷ bbolt | 503 busy (bbolt / etcd) | other (bbolt / etcd) |\n|---|---|---|---|---|---|---|---|\n",
		cfg.Users, s.Cap)
	for r := range cfg.FloodRounds {
		var b, e sideFlood
		for _, f := range s.Flood {
			if f.Round == r && f.Side == sideBolt {
				b = f
			} else if f.Round == r && f.Side == sideEtcd {
				e = f
			}
		}
		h := 0.0
		if r < len(s.Hash) {
			h = s.Hash[r]
		}
		ratio := 0.0
		if b.LoginsPerS > 0 {
			ratio = e.LoginsPerS / b.LoginsPerS
		}
		p("| %d | %.1f ms | %.1f | %.1f | %.1f | %.2f | %d / %d | %d / %d |\n", r+1, h, b.Rate, b.LoginsPerS, e.LoginsPerS, ratio, b.Busy, e.Busy, b.Other, e.Other)
	}

	if len(s.LoginMs) > 0 {
		p("\nSerial logins, one at a time, alternating sides (%d each): median **%.1f ms** on bbolt, **%.1f ms** on etcd; one `argon2.IDKey` timed between them: median %.1f ms. Under the flood the etcd side pays for two things the bbolt side does not: the hashing slot is also held for the throttle's second check and the user's lookup, linearizable reads through the leader instead of local ones; and every attempt, those answered 503 included, reads the throttle from the cluster, while every login's session is a raft write that the three members, on the same two cores as the gateway's hash, commit and send to every gateway. This run does not separate the two.\n",
			len(s.LoginMs[sideEtcd]), median(s.LoginMs[sideBolt]), median(s.LoginMs[sideEtcd]), median(s.LoginHashMs))
	}

	p("\n### Revocation propagation\n\n%d users revoked one at a time through gateway A's admin API (`POST /crudauth/users/<name>/revoke`); for each, one poller per other gateway sent the user's token every %v (each poll a full proxied request) from before the revocation until it got 401. The time is from the admin API's answer to the first 401; 0 when the gateway already refused the token by then. The admin call itself (an etcd transaction for the epoch, one for the sessions, each waiting for A's own cache) took a median %.2f ms.\n\n| gateway | revocations | p50 | p90 | p99 | max | not refused within %v |\n|---|---|---|---|---|---|---|\n",
		len(s.Revs), cfg.PollEvery, median(revAck(s.Revs)), revokeGiveUpTime)
	for i := range max(cfg.Gateways-1, 0) {
		xs := revocationOf(s.Revs, i)
		p("| %c | %d | %.2f ms | %.2f ms | %.2f ms | %.2f ms | |\n", 'B'+i, len(xs), percentile(xs, 50), percentile(xs, 90), percentile(xs, 99), percentile(xs, 100))
	}
	all := revocationMs(s.Revs)
	p("| all | %d | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %d |\n", len(all), percentile(all, 50), percentile(all, 90), percentile(all, 99), percentile(all, 100), revocationTimeouts(s.Revs))
	sent := revocationFromSent(s.Revs)
	p("| all, timed from the request to A instead (the write included) | %d | %.2f ms | %.2f ms | %.2f ms | %.2f ms | |\n", len(sent), percentile(sent, 50), percentile(sent, 90), percentile(sent, 99), percentile(sent, 100))
	p("\nA revocation is two transactions (the epoch bump, then the end of the sessions), and the first already refuses the token; the acknowledgement comes after both, each having waited for A's own cache. The other gateways' watches deliver each transaction about when A's does, so by the acknowledgement they have mostly refused the token already (0 above).\n")

	p("\n### Rates of the store operations\n\nThe etcd store package driven from the bench program against the same cluster, on a prefix of its own with %d users, each operation for %s at each concurrency; every call is the store's own transaction and waits, as in a gateway, until its handle's cache has applied it. The gateways were stopped by then.\n\n| operation | concurrent callers | calls/s | mean latency | errors |\n|---|---|---|---|---|\n",
		cfg.Users, cfg.RawDuration)
	for _, r := range s.Raw {
		p("| %s | %d | %.0f | %.2f ms | %d |\n", r.Op, r.Conc, r.PerS, r.MeanMs, r.Errors)
	}
	z := s.Sizes
	p("\nMean record sizes (key + value) on that prefix: user %.0f B, its name index %.0f B, session %.0f B. Each put reaches every watcher of the prefix as a watch event of %.0f B (user) or %.0f B (session), protobuf-encoded, before gRPC framing.\n\n",
		z.UserKV, z.NameKV, z.SessionKV, z.UserEvent, z.SessionEvent)

	b := s.Big
	p("### A new gateway on %d users\n\n", b.Users)
	mig := s.Migrate
	if mig.Sessions > 0 && mig.Seconds > 0 {
		est := mig.Seconds * float64(b.Sessions+b.Users/40) / float64(mig.Sessions+mig.Users/40)
		p("**Loading.** `%s` copied %d users and %d sessions in %.1f s: users go 40 to a transaction, sessions one each (`CreateSession`, a read and a transaction), one at a time. At that rate %d users with a session each would take about **%.0f minutes** (extrapolated). `etcd.LoadEmpty`, the store package's loader for an empty prefix (%d users or %d sessions per transaction, etcd's limit being %d operations; each key created only if absent; %d transactions in flight), wrote them in **%.1f s** (measured).\n\n",
			mig.Command, mig.Users, mig.Sessions, mig.Seconds, b.Users, est/60, b.LoadTxnOps/2, b.LoadTxnOps, b.LoadTxnOps, b.LoadParallel, b.LoadSeconds)
	}
	var etcdRSS float64
	for _, m := range b.EtcdMem {
		etcdRSS += kib(m.VmRSS)
	}
	p("| | |\n|---|---|\n")
	p("| a new Caddy (`%s`, `dial_timeout %s`, the default: each request of the start is bounded, not the whole load), from its start to its first 200 to an authenticated request | **%.1f s** (first answer of any kind after %.1f s: Caddy listens once the store is provisioned) |\n", strings.Join(b.MemGC, " "), bigDialTimeout, b.FirstSeconds, b.ListenSeconds)
	p("| of which the full load of the AuthState cache, timed alone (`etcd.Open` in the bench program) | %.1f s; its first AuthState answered after %.1f s (a load longer than `max_staleness` leaves the cache unconfirmed until the watch confirms it) |\n", b.OpenSeconds, b.ReadySeconds)
	p("| the new gateway's memory after its first request | VmRSS %.0f MB, anonymous %.0f MB, heap in use %.0f MB |\n", kib(b.Mem.VmRSS), kib(b.Mem.RssAnon), float64(b.HeapInuse)/(1<<20))
	if b.Users > 0 {
		p("| live heap the loaded cache adds (bench program, after a collection) | %.0f MB, **%.0f B per user** with one session |\n", float64(b.HeapBytes)/(1<<20), float64(b.HeapBytes)/float64(b.Users))
	}
	p("| etcd, all %d members: data directories; resident memory | %.0f MB; %.0f MB |\n\n", len(b.EtcdMem), float64(b.EtcdDBBytes)/(1<<20), etcdRSS)
	if b.FirstSeconds > 0 {
		p("The cache load is %.0f %% of the time to the first answer: the new gateway reads every user and session key of the prefix, page by page, and decodes each user record before it serves anything.\n\n", 100*b.OpenSeconds/b.FirstSeconds)
	}

	p("<details><summary>Commands and configurations of the etcd phase</summary>\n\n```sh\n")
	for _, c := range s.Cases {
		p("# %s\n%s\n", c.Name, c.Command)
	}
	p("```\n\n")
	names := make([]string, 0, len(s.Files))
	for k := range s.Files {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		p("%s:\n\n```caddyfile\n%s```\n\n", k, s.Files[k])
	}
	p("</details>\n\n")
}

func revAck(revs []revocation) []float64 {
	out := make([]float64, len(revs))
	for i, r := range revs {
		out[i] = r.AckMs
	}
	return out
}
