package main

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

func httpClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			DisableCompression:  true,
		},
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// hashSamples times n calls of golang.org/x/crypto/argon2.IDKey with the
// gateway's default parameters, in this process, nothing else running: the
// baseline of the logins target. One call first, untimed, so that the
// timed ones find the 19 MiB of working memory already faulted in, as a
// running gateway does. Each timed call starts after a collection, with the
// collector off until it returns, so that what is timed is the hash (its
// allocation included) and not a collection of this process's token lists.
func hashSamples(n int) []float64 {
	p := password.DefaultParams
	salt := make([]byte, p.SaltLen)
	_, _ = rand.Read(salt)
	pw := []byte(benchPassword)
	old := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(old)
	_ = argon2.IDKey(pw, salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	ms := make([]float64, n)
	for i := range ms {
		runtime.GC()
		t := time.Now()
		_ = argon2.IDKey(pw, salt, p.Time, p.Memory, p.Threads, p.KeyLen)
		ms[i] = float64(time.Since(t).Microseconds()) / 1000
	}
	runtime.GC()
	return ms
}

// checkMemLimit refuses a GOMEMLIMIT that leaves too little room: with
// GOGC=off a process collects only when its heap nears the limit, so the
// limit must hold the gateway's caches and the argon2 working memory of
// every hashing slot with room to spare, or the gateway would collect
// far more often than the plain proxy, the bias the limit is there to
// remove. See docs/dev/benchmarks.md.
func checkMemLimit(limit string, slots int) error {
	mib, err := parseMiB(limit)
	if err != nil {
		return err
	}
	const caches = 64 // MiB: the gateway's heap with full caches, measured by the memory runs
	argon := float64(slots) * float64(password.DefaultParams.Memory) / 1024
	if need := caches + argon; 2*need > mib {
		return fmt.Errorf("-gomemlimit %s: the gateway may hold %.0f MiB (caches %d MiB, argon2 %d × %.0f MiB), more than half the limit; raise it to at least %.0fMiB",
			limit, need, caches, slots, argon/float64(slots), 2*need)
	}
	return nil
}

// parseMiB reads a GOMEMLIMIT value with a MiB or GiB suffix.
func parseMiB(s string) (float64, error) {
	for suffix, mult := range map[string]float64{"MiB": 1, "GiB": 1024} {
		if v, ok := strings.CutSuffix(s, suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil && f > 0 {
				return f * mult, nil
			}
		}
	}
	return 0, fmt.Errorf("gomemlimit %q: want a number of MiB or GiB, like 300MiB", s)
}

// login does one POST /token and returns the status.
func login(c *http.Client, base, user string) (int, error) {
	form := url.Values{"username": {user}, "password": {benchPassword}}.Encode()
	resp, err := c.Post(base+"/token", "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// floodResult is one login flood: an open-loop sender at a fixed rate.
type floodResult struct {
	Rate       float64 `json:"rate"` // offered logins/s
	Seconds    float64 `json:"seconds"`
	Sent       int64   `json:"sent"`
	OK         int64   `json:"ok"`           // 200, completed within the window
	OKLate     int64   `json:"ok_late"`      // 200 after the window closed
	Busy       int64   `json:"busy"`         // 503 (no hashing slot in time)
	Throttled  int64   `json:"throttled"`    // 429
	Other      int64   `json:"other"`        // anything else, errors included
	LoginsPerS float64 `json:"logins_per_s"` // OK / Seconds
	OKMedianMs float64 `json:"ok_median_ms"`
}

// flood sends logins at rate per second for d, each on its own goroutine,
// regardless of answers (open loop), spread over users.
func flood(base string, users []string, rate float64, d time.Duration) floodResult {
	c := httpClient(256)
	defer c.CloseIdleConnections()
	res := floodResult{Rate: rate, Seconds: d.Seconds()}
	var mu sync.Mutex
	var okMs []float64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	interval := time.Duration(float64(time.Second) / rate)
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(end) {
			break
		}
		time.Sleep(time.Until(at))
		res.Sent++
		wg.Add(1)
		go func(user string) {
			defer wg.Done()
			t := time.Now()
			status, err := login(c, base, user)
			done := time.Now()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				res.Other++
			case status == http.StatusOK && done.Before(end):
				res.OK++
				okMs = append(okMs, float64(done.Sub(t).Microseconds())/1000)
			case status == http.StatusOK:
				res.OKLate++
			case status == http.StatusServiceUnavailable:
				res.Busy++
			case status == http.StatusTooManyRequests:
				res.Throttled++
			default:
				res.Other++
			}
		}(users[i%len(users)])
	}
	wg.Wait()
	res.LoginsPerS = float64(res.OK) / d.Seconds()
	res.OKMedianMs = median(okMs)
	return res
}

// memResult is the resident memory of the gateway before and while it sees
// n distinct tokens.
type memResult struct {
	DB          string      `json:"db"`
	Tokens      int64       `json:"tokens"`
	DistinctIDs int64       `json:"distinct_users"`
	Errors      int64       `json:"errors"`
	Seconds     float64     `json:"seconds"`
	Before      memStatus   `json:"before"`
	Peak        memStatus   `json:"peak"` // each field's own maximum
	After       memStatus   `json:"after"`
	Samples     []memSample `json:"samples"`
	HeapBefore  uint64      `json:"heap_inuse_before"`
	HeapAfter   uint64      `json:"heap_inuse_after"`
}

type memSample struct {
	Done int64 `json:"done"`
	memStatus
}

// memLoad sends n requests, each with a token minted just before it for
// users[(i*stride) % len(users)] and that user's session in sids, so that
// tokens (and, up to len(users), users) are all distinct, and samples pid's
// memory as it goes.
func memLoad(base string, m *token.Manager, users, sids []string, n int64, conns, pid int, adminURL string) (memResult, error) {
	c := httpClient(conns)
	defer c.CloseIdleConnections()
	res := memResult{Tokens: n, DistinctIDs: min(n, int64(len(users)))}
	// warm: one token, enough requests to size pools and buffers
	one, _, err := m.IssueAccess(token.Subject{UserID: users[0], SessionID: sids[0], Scopes: scope.MustNew("api:read")})
	if err != nil {
		return res, err
	}
	for i := 0; i < 2000; i++ {
		if err := getOK(c, base, one); err != nil {
			return res, err
		}
	}
	time.Sleep(500 * time.Millisecond)
	if res.Before, err = readMem(pid); err != nil {
		return res, err
	}
	res.HeapBefore = heapInuse(adminURL)

	const stride int64 = 104729 // prime: coprime to any user count we use that it does not divide
	var next, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := make(chan struct{})
	var sampMu sync.Mutex
	sample := func() {
		ms, err := readMem(pid)
		if err != nil {
			return
		}
		sampMu.Lock()
		res.Samples = append(res.Samples, memSample{Done: min(next.Load(), n), memStatus: ms})
		res.Peak.VmRSS = max(res.Peak.VmRSS, ms.VmRSS)
		res.Peak.RssAnon = max(res.Peak.RssAnon, ms.RssAnon)
		res.Peak.RssFile = max(res.Peak.RssFile, ms.RssFile)
		sampMu.Unlock()
	}
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sample()
			}
		}
	}()
	hostport := strings.TrimPrefix(base, "http://")
	var firstErr atomic.Value
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pipeline(hostport, m, users, sids, n, &next, stride); err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	res.Seconds = time.Since(start).Seconds()
	res.Errors = errs.Load()
	sample()
	res.After, _ = readMem(pid)
	res.HeapAfter = heapInuse(adminURL)
	if res.Errors > 0 {
		return res, fmt.Errorf("%d connections of the memory run failed, first: %v", res.Errors, firstErr.Load())
	}
	return res, nil
}

// pipeline sends requests on one keep-alive connection, depth at a time
// (HTTP/1.1 pipelining: Go's client does not pipeline, and one round trip
// per request would make the client, not the gateway, the bottleneck). Each
// request carries a token minted just before it.
func pipeline(hostport string, m *token.Manager, users, sids []string, n int64, next *atomic.Int64, stride int64) error {
	const depth = 16
	conn, err := net.Dial("tcp", hostport)
	if err != nil {
		return err
	}
	defer conn.Close()
	bw := bufio.NewWriterSize(conn, 64<<10)
	br := bufio.NewReaderSize(conn, 64<<10)
	sc := scope.MustNew("api:read")
	for {
		k := 0
		for ; k < depth; k++ {
			i := next.Add(1) - 1
			if i >= n {
				break
			}
			k := (i * stride) % int64(len(users))
			tok, _, err := m.IssueAccess(token.Subject{UserID: users[k], SessionID: sids[k], Scopes: sc})
			if err != nil {
				return err
			}
			fmt.Fprintf(bw, "GET /api/items HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", hostport, tok)
		}
		if k == 0 {
			return nil
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		for j := 0; j < k; j++ {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET /api/items: status %d", resp.StatusCode)
			}
		}
		if k < depth {
			return nil
		}
	}
}

func getOK(c *http.Client, base, tok string) error {
	req, _ := http.NewRequest(http.MethodGet, base+"/api/items", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /api/items: status %d", resp.StatusCode)
	}
	return nil
}

// heapInuse reads memstats.HeapInuse from Caddy's admin /debug/vars.
func heapInuse(adminURL string) uint64 {
	if adminURL == "" {
		return 0
	}
	resp, err := http.Get(adminURL + "/debug/vars")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var v struct {
		Memstats struct {
			HeapInuse uint64 `json:"HeapInuse"`
		} `json:"memstats"`
	}
	if json.NewDecoder(resp.Body).Decode(&v) != nil {
		return 0
	}
	return v.Memstats.HeapInuse
}
