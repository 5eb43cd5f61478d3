package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rotatingServer answers POST /refresh as the gateway does with rotation
// on and no reuse grace: a token "SID.GEN" of the session's current
// generation is spent and "SID.GEN+1" returned; any other is refused with
// 400, and counted.
type rotatingServer struct {
	mu      sync.Mutex
	gen     map[string]int
	ok      int
	refused int
}

func (s *rotatingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	sid, g, _ := strings.Cut(body.RefreshToken, ".")
	gen, err := strconv.Atoi(g)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, known := s.gen[sid]
	if err != nil || !known || gen != cur {
		s.refused++
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	s.gen[sid] = cur + 1
	s.ok++
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":"x","token_type":"bearer","refresh_token":"%s.%d"}`+"\n", sid, cur+1)
}

// TestRefreshScriptRotates: wrk/refresh.lua with BENCH_ROTATE=1 presents
// every token once and always the newest of its session, however wrk
// interleaves its connections: a server that refuses any other token sees
// no refusal, and the script reports no broken chain. (Replaying tokens,
// as a script without the pool does, is refused at once.)
func TestRefreshScriptRotates(t *testing.T) {
	wrkBin, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk is not installed (apt-get install wrk)")
	}
	dir := t.TempDir()
	scripts, err := writeLuaScripts(dir)
	if err != nil {
		t.Fatal(err)
	}
	const threads, conns, sessions = 2, 8, 16
	srv := &rotatingServer{gen: map[string]int{}}
	var toks []string
	for i := range sessions {
		sid := fmt.Sprintf("s%02d", i)
		srv.gen[sid] = 1
		toks = append(toks, sid+".1")
	}
	tokFile := filepath.Join(dir, "tokens.txt")
	if err := writeLines(tokFile, toks); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	spec := wrkSpec{url: ts.URL + "/refresh", script: filepath.Join(scripts, "refresh.lua"),
		env: []string{"BENCH_ROTATE=1", fmt.Sprintf("BENCH_THREADS=%d", threads), "BENCH_REFRESH_TOKENS=" + tokFile}}
	res, out, err := runWrk(wrkBin, spec, threads, conns, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.refused > 0 || res.Errors() > 0 {
		t.Errorf("server refused %d tokens (and accepted %d); wrk errors %d (non-2xx %d, no successor %d, starved %d):\n%s",
			srv.refused, srv.ok, res.Errors(), res.Non2xx, res.NoSuccessor, res.Starved, out)
	}
	if srv.ok < 100 {
		t.Errorf("only %d refreshes in a second:\n%s", srv.ok, out)
	}
	if !strings.Contains(out, "refresh chains:") {
		t.Errorf("the script printed no chain summary:\n%s", out)
	}
}
