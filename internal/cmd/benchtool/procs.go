package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process: a Caddy, the upstream, the auth service.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// procs tracks every child so that all of them are stopped on the way out,
// whatever the way out is.
type procs struct {
	mu   sync.Mutex
	list []*proc
}

func (ps *procs) start(name, logDir string, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	// Die with us even if we are killed without a chance to clean up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); lf.Close(); close(p.done) }()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// stop ends p: SIGTERM, then SIGKILL after a grace period.
func (ps *procs) stop(p *proc) {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (ps *procs) stopAll() {
	ps.mu.Lock()
	list := append([]*proc(nil), ps.list...)
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		ps.stop(list[i])
	}
}

// gcStats returns how many garbage collections the processes with these
// pids have logged so far, and the CPU seconds those collections took
// (GODEBUG=gctrace=1 writes one line per collection to stderr, see
// e2e.goEnv: "gc N @Ts P%: a+b+c ms clock, d+e/f/g+h ms cpu, ..."; the
// cpu figures are the stop-the-world phases, the mark assists, the
// background and idle mark workers: all CPU the process spent collecting).
func (ps *procs) gcStats(pids []int) (n int, cpuSeconds float64) {
	ps.mu.Lock()
	list := append([]*proc(nil), ps.list...)
	ps.mu.Unlock()
	for _, p := range list {
		if !slices.Contains(pids, p.pid()) {
			continue
		}
		b, err := os.ReadFile(p.log)
		if err != nil {
			continue
		}
		for line := range bytes.Lines(b) {
			if !bytes.HasPrefix(line, []byte("gc ")) {
				continue
			}
			n++
			cpuSeconds += gcLineCPU(string(line)) / 1000
		}
	}
	return n, cpuSeconds
}

// gcLineCPU returns the sum of the "ms cpu" figures of a gctrace line, in
// milliseconds (0 when the line has none).
func gcLineCPU(line string) float64 {
	end := strings.Index(line, " ms cpu")
	if end < 0 {
		return 0
	}
	start := strings.LastIndex(line[:end], ", ") + 2
	total := 0.0
	for _, f := range strings.FieldsFunc(line[start:end], func(r rune) bool { return r == '+' || r == '/' }) {
		if v, err := strconv.ParseFloat(f, 64); err == nil {
			total += v
		}
	}
	return total
}

// tail returns the end of p's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// freePort returns a loopback TCP port nobody listens on right now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP waits until url answers at all (any status).
func waitHTTP(url string, p *proc, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited while starting:\n%s", p.name, p.tail())
		default:
		}
		resp, err := c.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer on %s within %s:\n%s", p.name, url, timeout, p.tail())
}

var clkTck = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}()

// cpuSeconds is the user+system CPU time the process has used, all threads,
// from /proc/<pid>/stat (fields 14 and 15, in clock ticks).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return (ut + st) / clkTck, nil
}

func cpuOf(pids []int) float64 {
	var sum float64
	for _, pid := range pids {
		if s, err := cpuSeconds(pid); err == nil {
			sum += s
		}
	}
	return sum
}

// memStatus is the resident memory of a process from /proc/<pid>/status, in
// KiB: VmRSS = RssAnon (heap, stacks) + RssFile (mapped files: the bbolt
// mmap, the binary) + RssShmem.
type memStatus struct {
	VmRSS   int64 `json:"vm_rss_kib"`
	RssAnon int64 `json:"rss_anon_kib"`
	RssFile int64 `json:"rss_file_kib"`
}

func readMem(pid int) (memStatus, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, err
	}
	defer f.Close()
	var m memStatus
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			m.VmRSS = v
		case "RssAnon:":
			m.RssAnon = v
		case "RssFile:":
			m.RssFile = v
		}
	}
	return m, sc.Err()
}
