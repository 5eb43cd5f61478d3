package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
)

// crashConfigEnv tells a re-executed test binary to run Caddy with the
// Caddyfile at that path (TestCrashChildCaddy).
const crashConfigEnv = "CRUDAUTH_TEST_CRASH_CADDYFILE"

// TestCrashChildCaddy is not a test: TestCrashSafety runs the test binary
// again with crashConfigEnv set, and this runs Caddy in that child process
// until it is killed.
func TestCrashChildCaddy(t *testing.T) {
	cfg := os.Getenv(crashConfigEnv)
	if cfg == "" {
		t.Skip("helper for TestCrashSafety")
	}
	os.Args = []string{"caddy", "run", "--config", cfg, "--adapter", "caddyfile"}
	caddycmd.Main()
}

// crashLedger is what the driver knows about one user: every change the
// gateway acknowledged, and the changes whose outcome is unknown because
// the process died before answering.
type crashLedger struct {
	name         string
	ackedVersion uint64   // token_version bumps acknowledged
	maybeBumps   uint64   // bumps sent but not answered
	lastAckedPW  string   // last password the gateway acknowledged
	maybePWs     []string // passwords sent after it without an answer
}

// TestCrashSafety runs the gateway as a child process on a real file,
// drives logins, password changes and revocations through it, kills it
// with SIGKILL at random moments, and checks after each kill that the file
// is consistent and holds every acknowledged change.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Caddy 20 times")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "crash.db")
	sitePort, adminPort := freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "Caddyfile")
	cfg := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	skip_install_trust
	grace_period 1ns
	persist_config off
}
http://127.0.0.1:%d {
	crudauth {
		db %s
		secret %s
		refresh body
		default_scopes me:read
	}
	respond "ok"
}
`, adminPort, sitePort, db, testSecret)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	// Seed the users before the first start, while no process holds the file.
	users := []*crashLedger{{name: "crash-a"}, {name: "crash-b"}, {name: "crash-c"}}
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	{
		st, err := bolt.Open(db, bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range users {
			u.lastAckedPW = "crash-test-password-0"
			h, err := hasher.Hash(u.lastAckedPW)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.CreateUser(context.Background(), &store.User{Username: u.name, PasswordHash: h}); err != nil {
				t.Fatal(err)
			}
		}
		st.Close()
	}

	site := fmt.Sprintf("http://127.0.0.1:%d", sitePort)
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	client := &http.Client{Timeout: 10 * time.Second}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))

	const rounds = 20
	pwSeq := 0
	var logins, changes, revokes, kills int
	for round := 0; round < rounds; round++ {
		child := startCrashChild(t, exe, cfgPath, dir, site)

		// Drive traffic from a few goroutines until the kill.
		var mu sync.Mutex
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 3; w++ {
			u := users[w]
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					op := rng.IntN(3)
					pwSeq++
					newPW := fmt.Sprintf("crash-test-password-%d", pwSeq)
					cur := u.lastAckedPW
					mu.Unlock()
					switch op {
					case 0: // login with the last acknowledged password
						status, ok := crashPost(client, site+"/token", formType,
							url.Values{"username": {u.name}, "password": {cur}}.Encode())
						if ok {
							mu.Lock()
							logins++
							// each user's operations are sequential, so nothing can
							// have changed this password since it was acknowledged;
							// 503 is the hashing cap under load, not a wrong answer
							if status != http.StatusOK && status != http.StatusServiceUnavailable {
								t.Errorf("round %d: login of %s with the acknowledged password got %d", round, u.name, status)
							}
							mu.Unlock()
						}
					case 1: // password change through the admin API
						mu.Lock()
						u.maybePWs = append(u.maybePWs, newPW)
						u.maybeBumps++
						mu.Unlock()
						body, _ := json.Marshal(map[string]string{"password": newPW})
						status, ok := crashPost(client, admin+"/crudauth/users/"+u.name+"/password", "application/json", string(body))
						mu.Lock()
						if ok && status == http.StatusOK {
							changes++
							u.ackedVersion++
							u.maybeBumps--
							u.lastAckedPW = newPW
							u.maybePWs = nil // earlier unanswered ones are superseded
						} else if ok {
							t.Errorf("round %d: password change of %s: status %d", round, u.name, status)
							u.maybeBumps--
							u.maybePWs = u.maybePWs[:len(u.maybePWs)-1]
						}
						mu.Unlock()
					case 2: // revocation through the admin API
						mu.Lock()
						u.maybeBumps++
						mu.Unlock()
						status, ok := crashPost(client, admin+"/crudauth/users/"+u.name+"/revoke", "application/json", "{}")
						mu.Lock()
						if ok && status == http.StatusOK {
							revokes++
							u.ackedVersion++
							u.maybeBumps--
						} else if ok {
							t.Errorf("round %d: revoke of %s: status %d", round, u.name, status)
							u.maybeBumps--
						}
						mu.Unlock()
					}
				}
			}()
		}

		time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond)
		if err := syscall.Kill(-child.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill: %v", err)
		}
		_ = child.Wait()
		kills++
		close(stop)
		wg.Wait()

		// The process is gone: the file must be consistent and hold every
		// acknowledged change.
		st, err := bolt.Open(db, bolt.Options{})
		if err != nil {
			t.Fatalf("round %d: reopening after SIGKILL: %v", round, err)
		}
		if err := st.Check(); err != nil {
			t.Fatalf("round %d: consistency check after SIGKILL: %v", round, err)
		}
		for _, u := range users {
			got, err := st.GetUserByName(context.Background(), u.name)
			if err != nil {
				t.Fatalf("round %d: %s lost: %v", round, u.name, err)
			}
			if got.TokenVersion < u.ackedVersion || got.TokenVersion > u.ackedVersion+u.maybeBumps {
				t.Errorf("round %d: %s token_version %d, acknowledged %d (+%d unanswered)",
					round, u.name, got.TokenVersion, u.ackedVersion, u.maybeBumps)
			}
			// The stored hash is the last acknowledged password or one sent
			// after it whose answer never came.
			matched := ""
			for _, pw := range append([]string{u.lastAckedPW}, u.maybePWs...) {
				if ok, _, _ := hasher.Verify(got.PasswordHash, pw); ok {
					matched = pw
					break
				}
			}
			if matched == "" {
				t.Errorf("round %d: %s: stored password is neither the acknowledged one nor an unanswered later one", round, u.name)
			}
			// What is on disk is now the truth for the next round.
			u.ackedVersion, u.maybeBumps = got.TokenVersion, 0
			u.lastAckedPW, u.maybePWs = matched, nil
		}
		st.Close()
		if t.Failed() {
			break
		}
	}
	t.Logf("%d SIGKILLs; acknowledged: %d logins, %d password changes, %d revocations", kills, logins, changes, revokes)
	if kills == rounds && changes+revokes < rounds {
		t.Errorf("only %d acknowledged changes over %d rounds: the driver did not exercise the writes", changes+revokes, rounds)
	}
}

// crashPost sends one request; ok is false when no answer came (the
// process died), so the outcome is unknown.
func crashPost(c *http.Client, u, ctype, body string) (int, bool) {
	resp, err := c.Post(u, ctype, strings.NewReader(body))
	if err != nil {
		return 0, false
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, false
	}
	return resp.StatusCode, true
}

// startCrashChild runs Caddy in a re-executed test binary, in its own
// process group, and waits until the site answers.
func startCrashChild(t *testing.T, exe, cfgPath, dir, site string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^TestCrashChildCaddy$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		crashConfigEnv+"="+cfgPath,
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.Create(filepath.Join(dir, "child.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(site + "/")
		if err == nil {
			resp.Body.Close()
			return cmd
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "child.log"))
	t.Fatalf("the child Caddy did not start within 30s:\n%s", log)
	return nil
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
