package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run printed.
type wrkResult struct {
	Requests int64   `json:"requests"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	Non2xx   int64   `json:"non2xx"`
	SockErrs int64   `json:"socket_errors"`
	// From the refresh script (wrk/refresh.lua): 200s that carried no
	// successor although rotation is on, and requests sent with no token
	// left in the thread's pool. Each is a broken chain.
	NoSuccessor int64 `json:"no_successor,omitempty"`
	Starved     int64 `json:"starved,omitempty"`
}

// Errors is every request of the run that did not do what it should: a
// non-2xx answer, a socket error, a broken refresh chain.
func (r wrkResult) Errors() int64 { return r.Non2xx + r.SockErrs + r.NoSuccessor + r.Starved }

type wrkSpec struct {
	url     string
	script  string   // Lua script, or ""
	env     []string // for the script
	headers []string // -H values
}

func (s wrkSpec) args(threads, conns int, d time.Duration) []string {
	a := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", max(1, int(d.Round(time.Second)/time.Second))), "--latency", "--timeout", "5s"}
	if s.script != "" {
		a = append(a, "-s", s.script)
	}
	for _, h := range s.headers {
		a = append(a, "-H", h)
	}
	return append(a, s.url)
}

// commandLine is the wrk command as a person would type it (tokens elided).
func (s wrkSpec) commandLine(threads, conns int, d time.Duration) string {
	var b strings.Builder
	for _, e := range s.env {
		k, v, _ := strings.Cut(e, "=")
		if k == "BENCH_REFRESH" {
			v = "<refresh token>"
		}
		if k == "BENCH_TOKENS" {
			v = "<token list>"
		}
		if k == "BENCH_REFRESH_TOKENS" {
			v = "<refresh token list, one session each>"
		}
		fmt.Fprintf(&b, "%s=%s ", k, v)
	}
	b.WriteString("wrk")
	for _, a := range s.args(threads, conns, d) {
		if strings.HasPrefix(a, "Authorization: Bearer ") {
			a = "'Authorization: Bearer <token>'"
		} else if strings.ContainsAny(a, " ") {
			a = "'" + a + "'"
		}
		b.WriteString(" " + a)
	}
	return b.String()
}

func runWrk(bin string, s wrkSpec, threads, conns int, d time.Duration) (wrkResult, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, s.args(threads, conns, d)...)
	cmd.Env = append(os.Environ(), s.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, string(out), fmt.Errorf("wrk: %v\n%s", err, out)
	}
	r, err := parseWrk(string(out))
	return r, string(out), err
}

var (
	reReqs   = regexp.MustCompile(`(\d+) requests in ([\d.]+)(us|ms|s|m),`)
	reRPS    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reLat    = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	reNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reSock   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reChains = regexp.MustCompile(`refresh chains: non-200 (\d+), 200 without a successor (\d+), starved (\d+)`)
)

func unitSeconds(v float64, unit string) float64 {
	switch unit {
	case "us":
		return v / 1e6
	case "ms":
		return v / 1e3
	case "m":
		return v * 60
	}
	return v
}

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := reReqs.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no request count in wrk output:\n%s", out)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	v, _ := strconv.ParseFloat(m[2], 64)
	r.Seconds = unitSeconds(v, m[3])
	if m := reRPS.FindStringSubmatch(out); m != nil {
		r.RPS, _ = strconv.ParseFloat(m[1], 64)
	}
	for _, m := range reLat.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		us := unitSeconds(v, m[3]) * 1e6
		if m[1] == "50" {
			r.P50us = us
		} else {
			r.P99us = us
		}
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reSock.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.SockErrs += n
		}
	}
	if m := reChains.FindStringSubmatch(out); m != nil {
		r.NoSuccessor, _ = strconv.ParseInt(m[2], 10, 64)
		r.Starved, _ = strconv.ParseInt(m[3], 10, 64)
	}
	if r.P99us == 0 {
		return r, fmt.Errorf("no latency distribution in wrk output:\n%s", out)
	}
	return r, nil
}
