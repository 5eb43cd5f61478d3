package caddymodule

// Integration tests of sessions at the gateway: rotation of refresh tokens
// with reuse detection, logout, and the signed-in user's session list. Same
// rules as integration_test.go: a real Caddy on fixed ports, a recording
// backend, nothing in parallel.

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// sessionMode is one way a client holds its refresh token.
type sessionMode struct {
	name string
	mode string // the refresh subdirective's value
}

var sessionModes = []sessionMode{{"cookie", "cookie"}, {"body", "body"}}

func (m sessionMode) cookie() bool { return m.mode == "cookie" }

// auth is a crudauth block for m with extra lines.
func (m sessionMode) auth(extra string) string {
	return "\n\t\trefresh " + m.mode + "\n\t\tdefault_scopes read\n\t\tgrantable_scopes read write\n\t\t" + extra
}

// refresh posts rt to /refresh the way a client in mode m does.
func (m sessionMode) refresh(t *testing.T, g *gateway, rt string, hdr ...string) *response {
	t.Helper()
	if m.cookie() {
		return g.refreshCookie(t, rt, hdr...)
	}
	return g.refreshJSON(t, rt, hdr...)
}

// logout posts rt to /logout the way a client in mode m does: a browser
// sends the logout cookie, the one cookie scoped to /logout.
func (m sessionMode) logout(t *testing.T, g *gateway, rt string, hdr ...string) *response {
	t.Helper()
	if m.cookie() {
		return g.do(t, http.MethodPost, "/logout", nil, append([]string{"Cookie", DefaultCookieName + "_logout=" + rt}, hdr...)...)
	}
	b, _ := json.Marshal(map[string]string{"refresh_token": rt})
	return g.do(t, http.MethodPost, "/logout", strings.NewReader(string(b)),
		append([]string{"Content-Type", "application/json"}, hdr...)...)
}

// successor returns the refresh token a 200 refresh response hands out,
// from the cookie or the body as m says; "" when it hands out none.
func (m sessionMode) successor(t *testing.T, r *response) string {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("refresh: %s", r)
	}
	body := r.json(t)
	rt, inBody := body["refresh_token"].(string)
	c := refreshCookieSet(t, r)
	if m.cookie() {
		if inBody {
			t.Errorf("cookie mode put the refresh token in the body: %s", r)
		}
		if c == nil {
			return ""
		}
		return c.Value
	}
	if c != nil {
		t.Errorf("body mode set a refresh cookie: %q", r.header.Values("Set-Cookie"))
	}
	return rt
}

// refreshCookieSet returns the refresh cookie a response sets at / with a
// value, nil when there is none (a cookie cleared at /refresh, the path an
// earlier version used, is not it).
func refreshCookieSet(t *testing.T, r *response) *http.Cookie {
	t.Helper()
	var found *http.Cookie
	for _, line := range r.header.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			t.Fatalf("bad Set-Cookie %q: %v", line, err)
		}
		if c.Name == DefaultCookieName && c.Path == "/refresh" && c.Value != "" {
			if found != nil {
				t.Errorf("the refresh cookie is set twice: %q", r.header.Values("Set-Cookie"))
			}
			found = c
		}
	}
	return found
}

// wantCookieCleared asserts that r clears the refresh cookie and the
// logout cookie with the attributes they were set with, and Max-Age=0.
func wantCookieCleared(t *testing.T, r *response) {
	t.Helper()
	for name, path := range map[string]string{DefaultCookieName: "/refresh", DefaultCookieName + "_logout": "/logout"} {
		cleared := false
		for _, line := range r.header.Values("Set-Cookie") {
			c, err := http.ParseSetCookie(line)
			if err != nil || c.Name != name || c.Path != path {
				continue
			}
			if c.Value != "" || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Domain != "" ||
				!strings.Contains(line, "Max-Age=0") {
				t.Errorf("the cookie is not cleared with its attributes and Max-Age=0: %q", line)
			}
			cleared = true
		}
		if !cleared {
			t.Errorf("cookie %s at %s is not cleared: %q", name, path, r.header.Values("Set-Cookie"))
		}
	}
}

// claims decodes the payload of a JWT.
func claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	_, p, _ := splitJWT(t, tok)
	return decodeSegment(t, p)
}

// sidOf is the sid claim of a token.
func sidOf(t *testing.T, tok string) string {
	t.Helper()
	sid, _ := claims(t, tok)["sid"].(string)
	if sid == "" {
		t.Fatalf("token has no sid: %v", claims(t, tok))
	}
	return sid
}

// wantRevoked asserts that a proxied request with access is refused at the
// gateway with invalid_token, and that the backend saw nothing.
func wantRevoked(t *testing.T, g *gateway, access string) {
	t.Helper()
	wantDenied(t, g.get(t, "/api", access), http.StatusUnauthorized, challenge("invalid_token"))
	g.backend.wantNone(t)
}

// wantLive asserts that a proxied request with access reaches the backend.
func wantLive(t *testing.T, g *gateway, access string) {
	t.Helper()
	wantStatus(t, g.get(t, "/api", access), http.StatusOK)
	g.backend.wantOne(t)
}

// postRaw sends a request without the testing.T helpers, for use from
// goroutines.
func postRaw(g *gateway, path string, body io.Reader, hdr ...string) (*response, error) {
	req, err := http.NewRequest(http.MethodPost, gatewayURL+path, body)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header[hdr[i]] = append(req.Header[hdr[i]], hdr[i+1])
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// logLines returns the JSON log lines written to file since offset.
func logLines(t *testing.T, file string, offset int) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		out = append(out, m)
	}
	return out
}

// logGlobal sends Caddy's log at level to file, as JSON.
func logGlobal(file, level string) string {
	return "\tlog {\n\t\toutput file " + file + "\n\t\tformat json\n\t\tlevel " + level + "\n\t}"
}

// TestSessionsRotation: every refresh hands out a successor and spends the
// token presented; a spent token within the grace gets the very same
// successor; after the grace it revokes the session, its access tokens
// with it, counts in the metric and logs a warning naming user and sid
// but never the token.
func TestSessionsRotation(t *testing.T) {
	const reuseMetric = "crudauth_refresh_reuse_total"
	for _, m := range sessionModes {
		t.Run(m.name, func(t *testing.T) {
			logFile := filepath.Join(t.TempDir(), "caddy.log")
			g := startGateway(t, gwConfig{auth: m.auth("refresh_reuse_grace 1s"), global: logGlobal(logFile, "WARN")})
			alice := g.addUser(t, "alice", nil)
			lr := g.mustLogin(t, "alice", "")
			sid := sidOf(t, lr.access)
			if got := sidOf(t, lr.refresh); got != sid {
				t.Fatalf("refresh token sid %q, access token sid %q", got, sid)
			}

			// Rotation: a new token each time, the successor works.
			r1 := m.refresh(t, g, lr.refresh)
			rt1 := m.successor(t, r1)
			if rt1 == "" || rt1 == lr.refresh {
				t.Fatalf("refresh did not rotate: %s", r1)
			}
			at1 := accessOf(t, r1)
			if sidOf(t, at1) != sid || sidOf(t, rt1) != sid {
				t.Errorf("the successor left the session")
			}
			r2 := m.refresh(t, g, rt1)
			rt2 := m.successor(t, r2)
			if rt2 == "" || rt2 == rt1 || rt2 == lr.refresh {
				t.Fatalf("second refresh did not rotate: %s", r2)
			}
			at2 := accessOf(t, r2)

			// Within the grace, the spent rt1 gets rt2 again, byte for byte.
			again := m.refresh(t, g, rt1)
			if got := m.successor(t, again); got != rt2 {
				t.Errorf("a spent token within the grace got %q, want the successor %q", got, rt2)
			}
			if m.cookie() {
				c := refreshCookieSet(t, again)
				if c == nil || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.MaxAge <= 0 {
					t.Errorf("the successor's cookie: %q", again.header.Values("Set-Cookie"))
				}
			}
			for _, at := range []string{lr.access, at1, at2, accessOf(t, again)} {
				wantLive(t, g, at)
			}

			// After the grace, rt1 is a replay: the session dies.
			before := metricValue(t, reuseMetric)
			logStart, _ := os.ReadFile(logFile)
			time.Sleep(1100 * time.Millisecond)
			wantOAuthError(t, m.refresh(t, g, rt1), http.StatusBadRequest, "invalid_grant")
			for _, at := range []string{lr.access, at1, at2} {
				wantRevoked(t, g, at)
			}
			wantOAuthError(t, m.refresh(t, g, rt2), http.StatusBadRequest, "invalid_grant")
			if got := metricValue(t, reuseMetric) - before; got != 1 {
				t.Errorf("%s moved by %v, want 1", reuseMetric, got)
			}

			lines := logLines(t, logFile, len(logStart))
			var warned bool
			for _, l := range lines {
				if l["msg"] == "refresh token reused: session revoked" {
					warned = true
					if l["level"] != "warn" || l["username"] != "alice" || l["user_id"] != alice.ID || l["sid"] != sid {
						t.Errorf("reuse warning does not name the user and the sid: %v", l)
					}
				}
			}
			if !warned {
				t.Errorf("no reuse warning logged; lines: %v", lines)
			}
			all, _ := os.ReadFile(logFile)
			for _, tok := range []string{lr.refresh, rt1, rt2, lr.access, at1, at2} {
				_, _, sig := splitJWT(t, tok)
				if strings.Contains(string(all), sig) {
					t.Errorf("the log holds a token: %s", all)
				}
			}
			g.backend.wantNone(t)
		})
	}
}

// TestSessionsConcurrentRefresh: 50 refreshes with one token at once (50
// tabs) all succeed and all get the same successor: the session never
// forks, and the successor works afterwards.
func TestSessionsConcurrentRefresh(t *testing.T) {
	for _, m := range sessionModes {
		t.Run(m.name, func(t *testing.T) {
			g := startGateway(t, gwConfig{auth: m.auth("")})
			g.addUser(t, "alice", nil)
			lr := g.mustLogin(t, "alice", "")
			const n = 50
			var wg sync.WaitGroup
			resps := make([]*response, n)
			errs := make([]error, n)
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if m.cookie() {
						resps[i], errs[i] = postRaw(g, "/refresh", nil, "Cookie", DefaultCookieName+"="+lr.refresh)
					} else {
						b, _ := json.Marshal(map[string]string{"refresh_token": lr.refresh})
						resps[i], errs[i] = postRaw(g, "/refresh", strings.NewReader(string(b)), "Content-Type", "application/json")
					}
				}()
			}
			close(start)
			wg.Wait()
			successors := map[string]int{}
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("refresh %d: %v", i, errs[i])
				}
				successors[m.successor(t, resps[i])]++
			}
			if len(successors) != 1 {
				t.Fatalf("50 concurrent refreshes forked the session into %d successors: %v", len(successors), successors)
			}
			var next string
			for rt := range successors {
				next = rt
			}
			if next == "" || next == lr.refresh {
				t.Fatalf("no rotation: %v", successors)
			}
			r := m.refresh(t, g, next)
			if got := m.successor(t, r); got == "" || got == next {
				t.Errorf("the successor does not rotate on: %s", r)
			}
			wantLive(t, g, accessOf(t, r))
		})
	}
}

// TestSessionsRotationOff: with rotate_refresh off a refresh hands out no
// refresh token and the one held keeps working.
func TestSessionsRotationOff(t *testing.T) {
	for _, m := range sessionModes {
		t.Run(m.name, func(t *testing.T) {
			g := startGateway(t, gwConfig{auth: m.auth("rotate_refresh off")})
			g.addUser(t, "alice", nil)
			lr := g.mustLogin(t, "alice", "")
			for i := range 3 {
				r := m.refresh(t, g, lr.refresh)
				if got := m.successor(t, r); got != "" {
					t.Errorf("refresh %d handed out a refresh token", i)
				}
				if m.cookie() {
					for _, line := range r.header.Values("Set-Cookie") {
						t.Errorf("refresh %d set a cookie: %q", i, line)
					}
				}
				wantLive(t, g, accessOf(t, r))
			}
			wantLive(t, g, lr.access)
			// Logout still ends the session.
			wantStatus(t, m.logout(t, g, lr.refresh), http.StatusNoContent)
			wantOAuthError(t, m.refresh(t, g, lr.refresh), http.StatusBadRequest, "invalid_grant")
			wantRevoked(t, g, lr.access)
		})
	}
}

// TestSessionsSliding: without refresh_sliding a session ends refresh_ttl
// after its login whatever the refreshes; with it, a refresh moves the end
// to refresh_ttl from now.
func TestSessionsSliding(t *testing.T) {
	expOf := func(t *testing.T, tok string) int64 {
		t.Helper()
		f, ok := claims(t, tok)["exp"].(float64)
		if !ok {
			t.Fatalf("no exp in %v", claims(t, tok))
		}
		return int64(f)
	}
	for _, m := range sessionModes {
		t.Run(m.name, func(t *testing.T) {
			g := startGateway(t, gwConfig{auth: m.auth("")})
			g.addUser(t, "alice", nil)
			fixed := g.mustLogin(t, "alice", "")
			g.load(t, gwConfig{auth: m.auth("refresh_sliding on")})
			sliding := g.mustLogin(t, "alice", "")
			time.Sleep(1100 * time.Millisecond)

			g.load(t, gwConfig{auth: m.auth("")})
			next := m.successor(t, m.refresh(t, g, fixed.refresh))
			if got, want := expOf(t, next), expOf(t, fixed.refresh); got != want {
				t.Errorf("without sliding the successor expires at %d, want the login's %d", got, want)
			}

			g.load(t, gwConfig{auth: m.auth("refresh_sliding on")})
			r := m.refresh(t, g, sliding.refresh)
			next = m.successor(t, r)
			if got, was := expOf(t, next), expOf(t, sliding.refresh); got <= was {
				t.Errorf("with sliding the successor expires at %d, not after the login's %d", got, was)
			}
			if m.cookie() {
				if c := refreshCookieSet(t, r); c == nil || c.MaxAge < 2592000-5 {
					t.Errorf("the slid cookie's Max-Age: %q", r.header.Values("Set-Cookie"))
				}
			}
			wantLive(t, g, accessOf(t, r))

			// Sliding without rotation hands out a token that carries the
			// new end, and the one held keeps working.
			g.load(t, gwConfig{auth: m.auth("refresh_sliding on\n\t\trotate_refresh off")})
			r = m.refresh(t, g, next)
			if got := m.successor(t, r); got == "" || expOf(t, got) < expOf(t, next) {
				t.Errorf("sliding without rotation: %s", r)
			}
			wantLive(t, g, accessOf(t, m.refresh(t, g, next)))
		})
	}
}

// TestSessionsMaxSessions: a login beyond max_sessions ends the least
// recently used session, its access token at once.
func TestSessionsMaxSessions(t *testing.T) {
	g := startGateway(t, gwConfig{auth: sessionModes[1].auth("max_sessions 2")})
	g.addUser(t, "alice", nil)
	bob := g.addUser(t, "bob", nil)
	lb := g.mustLogin(t, "bob", "")
	s1 := g.mustLogin(t, "alice", "")
	s2 := g.mustLogin(t, "alice", "")
	// s1 used after s2's login: s2 is now the least recently used.
	r := g.refreshJSON(t, s1.refresh)
	s1access := accessOf(t, r)
	s3 := g.mustLogin(t, "alice", "")

	wantRevoked(t, g, s2.access)
	wantOAuthError(t, g.refreshJSON(t, s2.refresh), http.StatusBadRequest, "invalid_grant")
	for _, at := range []string{s1.access, s1access, s3.access, lb.access} {
		wantLive(t, g, at)
	}
	list, err := g.st.ListSessions(t.Context(), bob.ID, time.Now())
	if err != nil || len(list) != 1 {
		t.Errorf("another user's sessions: %d, %v", len(list), err)
	}
}

// TestSessionsLogout: POST /logout ends the session of the refresh token,
// clears the cookie, answers 204 each time; the session's access token is
// refused at once and the user's other sessions go on. all=true with a
// valid access token ends them all; without one it is refused. In cookie
// mode logout refuses a cross-site request as /refresh does.
func TestSessionsLogout(t *testing.T) {
	for _, m := range sessionModes {
		t.Run(m.name, func(t *testing.T) {
			g := startGateway(t, gwConfig{auth: m.auth("")})
			g.addUser(t, "alice", nil)
			g.addUser(t, "bob", nil)
			s1 := g.mustLogin(t, "alice", "")
			s2 := g.mustLogin(t, "alice", "")
			s3 := g.mustLogin(t, "alice", "")
			lb := g.mustLogin(t, "bob", "")

			if m.cookie() {
				for _, hdr := range [][]string{
					{"Origin", "https://evil.example"},
					{"Origin", "null"},
					{"Origin", "http://localhost:9081"},
					{"Sec-Fetch-Site", "cross-site"},
					{"Origin", gatewayURL, "Sec-Fetch-Site", "cross-site"},
				} {
					r := m.logout(t, g, s1.refresh, hdr...)
					wantOAuthError(t, r, http.StatusForbidden, "invalid_request")
					if len(r.header.Values("Set-Cookie")) != 0 {
						t.Errorf("%q: a refused logout touched the cookie: %q", hdr, r.header.Values("Set-Cookie"))
					}
					wantOAuthError(t, m.refresh(t, g, s1.refresh, hdr...), http.StatusForbidden, "invalid_request")
				}
				// The cross-site logouts ended nothing.
				wantLive(t, g, s1.access)
				s1.refresh = m.successor(t, m.refresh(t, g, s1.refresh))
			}

			r := m.logout(t, g, s1.refresh, "Origin", gatewayURL)
			wantStatus(t, r, http.StatusNoContent)
			wantNoStore(t, r)
			if len(r.body) != 0 {
				t.Errorf("204 with a body: %q", r.body)
			}
			if m.cookie() {
				wantCookieCleared(t, r)
			} else if got := r.header.Values("Set-Cookie"); len(got) != 0 {
				t.Errorf("body mode logout set cookies: %q", got)
			}
			wantRevoked(t, g, s1.access)
			wantOAuthError(t, m.refresh(t, g, s1.refresh), http.StatusBadRequest, "invalid_grant")
			// Idempotent.
			wantStatus(t, m.logout(t, g, s1.refresh), http.StatusNoContent)
			// The other sessions go on.
			wantLive(t, g, s2.access)
			s2.refresh = m.successor(t, m.refresh(t, g, s2.refresh))

			// all=true needs a valid access token.
			all := func(access string, query string) *response {
				return g.call(t, http.MethodPost, "/logout"+query, access)
			}
			wantOAuthError(t, all("", "?all=true"), http.StatusUnauthorized, "invalid_request")
			wantOAuthError(t, all("not-a-token", "?all=true"), http.StatusUnauthorized, "invalid_token")
			wantOAuthError(t, all(s1.access, "?all=true"), http.StatusUnauthorized, "invalid_token")
			wantOAuthError(t, all(s2.access, "?all=false"), http.StatusBadRequest, "invalid_request")
			wantOAuthError(t, all(s2.access, "?all=true&all=true"), http.StatusBadRequest, "invalid_request")
			wantLive(t, g, s2.access)
			wantLive(t, g, s3.access)

			r = all(s2.access, "?all=true")
			wantStatus(t, r, http.StatusNoContent)
			if m.cookie() {
				wantCookieCleared(t, r)
			}
			for _, at := range []string{s2.access, s3.access} {
				wantRevoked(t, g, at)
			}
			wantOAuthError(t, m.refresh(t, g, s2.refresh), http.StatusBadRequest, "invalid_grant")
			wantOAuthError(t, m.refresh(t, g, s3.refresh), http.StatusBadRequest, "invalid_grant")
			// Another user is untouched.
			wantLive(t, g, lb.access)
			wantLive(t, g, accessOf(t, m.refresh(t, g, lb.refresh)))

			// Other refusals.
			wantOAuthError(t, g.get(t, "/logout", ""), http.StatusMethodNotAllowed, "invalid_request")
			if !m.cookie() {
				wantOAuthError(t, g.do(t, http.MethodPost, "/logout", nil), http.StatusBadRequest, "invalid_request")
				wantOAuthError(t, m.logout(t, g, "not-a-token"), http.StatusBadRequest, "invalid_grant")
			} else {
				// No cookie: nothing to end, and the cookie is cleared.
				r := g.do(t, http.MethodPost, "/logout", nil)
				wantStatus(t, r, http.StatusNoContent)
				wantCookieCleared(t, r)
			}
			g.backend.wantNone(t)
		})
	}
}

// sessionList is GET sessions_path's answer.
type sessionList struct {
	Sessions []struct {
		ID         string    `json:"id"`
		Current    bool      `json:"current"`
		CreatedAt  time.Time `json:"created_at"`
		LastUsedAt time.Time `json:"last_used_at"`
		ExpiresAt  time.Time `json:"expires_at"`
		UserAgent  string    `json:"user_agent"`
		Address    string    `json:"address"`
	} `json:"sessions"`
}

func listSessions(t *testing.T, g *gateway, access string) sessionList {
	t.Helper()
	r := g.get(t, "/sessions", access)
	wantStatus(t, r, http.StatusOK)
	wantNoStore(t, r)
	var l sessionList
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatalf("session list: %v: %s", err, r)
	}
	return l
}

// TestSessionsSelfService: sessions_path lists the signed-in user's
// sessions with the current one marked, and ends one of them; it is off
// by default, and then the path is the backend's like any other.
func TestSessionsSelfService(t *testing.T) {
	g := startGateway(t, gwConfig{auth: sessionModes[1].auth("sessions_path /sessions")})
	g.addUser(t, "alice", nil)
	phone := g.login(t, "alice", testPassword, "", "User-Agent", "phone/1.0")
	laptop := g.login(t, "alice", testPassword, "", "User-Agent", "laptop/2.0")
	atPhone, atLaptop := accessOf(t, phone), accessOf(t, laptop)
	rtLaptop, _ := laptop.json(t)["refresh_token"].(string)
	sidPhone, sidLaptop := sidOf(t, atPhone), sidOf(t, atLaptop)

	t.Run("list", func(t *testing.T) {
		l := listSessions(t, g, atPhone)
		if len(l.Sessions) != 2 {
			t.Fatalf("want 2 sessions, got %+v", l)
		}
		seen := map[string]bool{}
		for _, s := range l.Sessions {
			seen[s.ID] = true
			switch s.ID {
			case sidPhone:
				if !s.Current || s.UserAgent != "phone/1.0" {
					t.Errorf("phone session: %+v", s)
				}
			case sidLaptop:
				if s.Current || s.UserAgent != "laptop/2.0" {
					t.Errorf("laptop session: %+v", s)
				}
			}
			if s.Address != "127.0.0.1" && s.Address != "::1" {
				t.Errorf("address %q", s.Address)
			}
			if s.CreatedAt.IsZero() || s.LastUsedAt.Before(s.CreatedAt) || !s.ExpiresAt.After(time.Now().Add(29*24*time.Hour)) {
				t.Errorf("times: %+v", s)
			}
		}
		if !seen[sidPhone] || !seen[sidLaptop] {
			t.Errorf("list %+v lacks %s or %s", l, sidPhone, sidLaptop)
		}
		// From the other device, the other one is current.
		for _, s := range listSessions(t, g, atLaptop).Sessions {
			if s.Current != (s.ID == sidLaptop) {
				t.Errorf("from the laptop: %+v", s)
			}
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			method, path, allow string
		}{
			{http.MethodPost, "/sessions", "GET"},
			{http.MethodDelete, "/sessions", "GET"},
			{http.MethodPut, "/sessions", "GET"},
			{http.MethodGet, "/sessions/" + sidLaptop, "DELETE"},
			{http.MethodPost, "/sessions/" + sidLaptop, "DELETE"},
		} {
			r := g.call(t, tc.method, tc.path, atPhone)
			wantOAuthError(t, r, http.StatusMethodNotAllowed, "invalid_request")
			if got := r.header.Values("Allow"); !slices.Equal(got, []string{tc.allow}) {
				t.Errorf("%s %s: Allow %q, want %s", tc.method, tc.path, got, tc.allow)
			}
		}
		for _, tc := range []struct {
			method, path string
		}{{http.MethodGet, "/sessions"}, {http.MethodDelete, "/sessions/" + sidLaptop}} {
			r := g.call(t, tc.method, tc.path, "")
			wantOAuthError(t, r, http.StatusUnauthorized, "invalid_request")
			if got := r.header.Get("WWW-Authenticate"); got != challenge("") {
				t.Errorf("%s %s without a token: WWW-Authenticate %q", tc.method, tc.path, got)
			}
			r = g.call(t, tc.method, tc.path, "not-a-token")
			wantOAuthError(t, r, http.StatusUnauthorized, "invalid_token")
			if got := r.header.Get("WWW-Authenticate"); got != challenge("invalid_token") {
				t.Errorf("%s %s with a bad token: WWW-Authenticate %q", tc.method, tc.path, got)
			}
		}
		for _, sid := range []string{"no-such-session", "", "a/b", strings.Repeat("x", 200)} {
			wantOAuthError(t, g.call(t, http.MethodDelete, "/sessions/"+sid, atPhone), http.StatusNotFound, "not_found")
		}
		wantLive(t, g, atLaptop)
	})

	t.Run("end one", func(t *testing.T) {
		r := g.call(t, http.MethodDelete, "/sessions/"+sidLaptop, atPhone)
		wantStatus(t, r, http.StatusNoContent)
		wantNoStore(t, r)
		wantRevoked(t, g, atLaptop)
		wantOAuthError(t, g.refreshJSON(t, rtLaptop), http.StatusBadRequest, "invalid_grant")
		wantOAuthError(t, g.call(t, http.MethodDelete, "/sessions/"+sidLaptop, atPhone), http.StatusNotFound, "not_found")
		l := listSessions(t, g, atPhone)
		if len(l.Sessions) != 1 || l.Sessions[0].ID != sidPhone || !l.Sessions[0].Current {
			t.Errorf("after ending the laptop: %+v", l)
		}
		wantLive(t, g, atPhone)
		// Ending the current one signs this device out.
		wantStatus(t, g.call(t, http.MethodDelete, "/sessions/"+sidPhone, atPhone), http.StatusNoContent)
		wantRevoked(t, g, atPhone)
		wantOAuthError(t, g.get(t, "/sessions", atPhone), http.StatusUnauthorized, "invalid_token")
	})
	g.backend.wantNone(t)

	t.Run("off by default", func(t *testing.T) {
		g.load(t, gwConfig{auth: sessionModes[1].auth("")})
		at := g.mustLogin(t, "alice", "").access
		for _, method := range []string{http.MethodGet, http.MethodDelete} {
			for _, path := range []string{"/sessions", "/sessions/" + sidOf(t, at)} {
				wantStatus(t, g.call(t, method, path, at), http.StatusOK)
				if s := g.backend.wantOne(t); s.method != method || s.path != path {
					t.Errorf("backend saw %s %s, want %s %s", s.method, s.path, method, path)
				}
				wantDenied(t, g.call(t, method, path, ""), http.StatusUnauthorized, challenge(""))
				g.backend.wantNone(t)
			}
		}
		wantLive(t, g, at)
	})
}
