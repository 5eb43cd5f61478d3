package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPercentile: nearest rank, so that a p99 over 400 values is the
// fourth largest and never a value between two measured ones.
func TestPercentile(t *testing.T) {
	xs := make([]float64, 400)
	for i := range xs {
		xs[i] = float64(400 - i) // 400 ... 1, unsorted on purpose
	}
	for _, tc := range []struct{ p, want float64 }{{50, 200}, {90, 360}, {99, 396}, {100, 400}, {0.1, 1}} {
		if got := percentile(xs, tc.p); got != tc.want {
			t.Errorf("percentile(1..400, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if xs[0] != 400 {
		t.Errorf("percentile sorted its argument")
	}
	if got := percentile(nil, 99); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
	if got := percentile([]float64{7}, 99); got != 7 {
		t.Errorf("percentile of one value = %v", got)
	}
}

// scaleoutFixture is a phase in which the etcd gateways reach ratio ×
// the bbolt gateway's throughput and revocations propagate in revMs.
func scaleoutFixture(ratio float64, revMs []float64, timedOut int) *scaleoutResult {
	s := &scaleoutResult{
		Config:   scaleoutConfig{Mode: "quick", Rounds: 3, Duration: 2 * time.Second, Gateways: 3, Members: 3, FloodRounds: 2, Users: 1000, PollEvery: time.Millisecond},
		Started:  time.Now().Add(-2 * time.Minute),
		Finished: time.Now(),
		GC:       gcSettings("300MiB")[0],
		Cap:      1,
		Hash:     []float64{25, 25}, // capacity 40/s
	}
	for _, n := range []string{caseBolt, etcdCase(0), etcdCase(1), etcdCase(2), caseBoltFresh, caseEtcdFresh, caseBoltRefresh, caseEtcdRefresh} {
		s.Cases = append(s.Cases, caseInfo{Name: n})
	}
	for r := range 3 {
		add := func(name string, rate float64) {
			s.Runs = append(s.Runs, caseResult{Case: name, Round: r, wrkResult: wrkResult{RPS: rate, P99us: 2000, Requests: int64(2 * rate)}})
		}
		add(caseBolt, 4000)
		add(caseBoltFresh, 5000)
		add(caseBoltRefresh, 1000)
		for i := range 3 {
			add(etcdCase(i), 4000*ratio)
		}
		add(caseEtcdFresh, 5000*ratio)
		add(caseEtcdRefresh, 300)
	}
	for r := range 2 {
		s.Flood = append(s.Flood,
			sideFlood{Round: r, Side: sideBolt, floodResult: floodResult{LoginsPerS: 36}},
			sideFlood{Round: r, Side: sideEtcd, floodResult: floodResult{LoginsPerS: 34}})
	}
	for i := 0; i < len(revMs); i += 2 {
		s.Revs = append(s.Revs, revocation{AckMs: 10, Ms: revMs[i : i+2]})
	}
	if timedOut > 0 {
		s.Revs = append(s.Revs, revocation{AckMs: 10, Ms: []float64{1}, TimedOut: timedOut})
	}
	s.Big = bigGateway{Users: 50000, Sessions: 50000, FirstSeconds: 4, OpenSeconds: 3.3, HeapBytes: 50000 * 300,
		Mem: memStatus{VmRSS: 100 << 10, RssAnon: 50 << 10}, MemGC: defaultGC}
	s.LoginMs = map[string][]float64{sideBolt: {30, 31, 32}, sideEtcd: {40, 41, 42}}
	s.LoginHashMs = []float64{25, 26, 27}
	s.Migrate = migrateResult{Command: "caddy crudauth migrate", Users: 1000, Sessions: 1000, Seconds: 10}
	return s
}

// rowOf returns the cells of the section's target row that starts with
// what.
func rowOf(t *testing.T, report, what string) []string {
	t.Helper()
	for line := range strings.Lines(report) {
		if strings.HasPrefix(line, "| "+what) {
			return strings.Split(strings.TrimSpace(line), " | ")
		}
	}
	t.Fatalf("no row %q in:\n%s", what, report)
	return nil
}

func renderSection(s *scaleoutResult) string {
	var w strings.Builder
	renderScaleout(func(f string, a ...any) { w.WriteString(fmt.Sprintf(f, a...)) }, s)
	return w.String()
}

// TestScaleoutSection: the section is called "Several gateways on etcd",
// judges every gateway's throughput against 0.95 × the bbolt gateway of
// the same rounds, logins against 0.9 × bbolt's, revocations on their
// p99 (and not met when a gateway never refused a token), says that one
// gateway is measured at a time, and extrapolates the migration.
func TestScaleoutSection(t *testing.T) {
	revs := make([]float64, 400)
	for i := range revs {
		revs[i] = float64(i%100) / 10 // 0 .. 9.9 ms
	}
	for _, tc := range []struct {
		name        string
		ratio       float64
		revs        []float64
		timedOut    int
		tput, revok string
	}{
		{"met", 0.97, revs, 0, "**met**", "**met**"},
		{"slow gateways", 0.90, revs, 0, "**not met**", "**met**"},
		{"slow revocations", 0.97, append(append([]float64(nil), revs[:396]...), 150, 150, 150, 150, 150, 150), 0, "**met**", "**not met**"},
		{"a revocation never seen", 0.97, revs, 1, "**met**", "**not met**"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := renderSection(scaleoutFixture(tc.ratio, tc.revs, tc.timedOut))
			if !strings.HasPrefix(out, "## Several gateways on etcd\n") {
				t.Errorf("section starts %q", out[:min(len(out), 40)])
			}
			if !strings.Contains(out, "one gateway is measured at a time while the other gateways stay up and idle") {
				t.Errorf("the section does not say how the gateways were measured")
			}
			for i, g := range []string{"A", "B", "C"} {
				row := rowOf(t, out, "proxied throughput, gateway "+g+" on etcd, one token")
				if !strings.HasPrefix(row[2], fmt.Sprintf("%.3f", tc.ratio)) || row[3] != tc.tput+" |" && row[3] != tc.tput {
					t.Errorf("gateway %d: cell %q, verdict %q; want %.3f, %s", i, row[2], row[3], tc.ratio, tc.tput)
				}
			}
			lg := rowOf(t, out, "logins/s, login flood at 2× capacity, gateway A on etcd")
			if !strings.HasPrefix(lg[2], "0.944") || !strings.Contains(lg[3], "**met**") {
				t.Errorf("logins: %q %q; want 0.944 (34 ÷ 36), met", lg[2], lg[3])
			}
			rv := rowOf(t, out, "revocation through gateway A refused by the other gateways")
			if !strings.Contains(rv[3], tc.revok) {
				t.Errorf("revocation verdict %q, want %s (cell %q)", rv[3], tc.revok, rv[2])
			}
			if tc.name == "met" && !strings.Contains(rv[2], "p99 9.80 ms") {
				t.Errorf("revocation cell %q, want p99 9.80 ms", rv[2])
			}
			rf := rowOf(t, out, "/refresh with rotation, gateway A on etcd")
			if !strings.HasPrefix(rf[2], "0.300") {
				t.Errorf("refresh cell %q, want 0.300", rf[2])
			}
			// 1000 sessions (+25 user transactions) in 10 s; 50000 users
			// with a session each is 50 times that: about 8 minutes.
			if !strings.Contains(out, "about **8 minutes** (extrapolated)") {
				t.Errorf("no migration estimate of 8 minutes in:\n%s", out)
			}
			if !strings.Contains(out, "median **31.0 ms** on bbolt, **41.0 ms** on etcd") {
				t.Errorf("no serial login medians in the section")
			}
			if !strings.Contains(out, "**300 B per user**") {
				t.Errorf("no per-user memory of 300 B")
			}
		})
	}
}

// TestReportWithoutScaleout: a run without the etcd phase renders
// without its section; with it, the section sits in the report.
func TestReportWithoutScaleout(t *testing.T) {
	e := e2eResult{Config: e2eConfig{Mode: "quick", Rounds: 3, Duration: 2 * time.Second}, Finished: time.Now(), GC: gcSettings("300MiB")}
	if out := render(reportInput{e2e: e, mode: "quick", machine: map[string]string{}}); strings.Contains(out, "Several gateways on etcd") {
		t.Errorf("a report without the etcd phase has its section")
	}
	out := render(reportInput{e2e: e, mode: "quick", machine: map[string]string{}, scaleout: scaleoutFixture(0.97, []float64{1, 2}, 0)})
	if !strings.Contains(out, "\n## Several gateways on etcd\n") {
		t.Errorf("the etcd phase's section is missing from the report")
	}
}
