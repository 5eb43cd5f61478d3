// Package browsertest proves in a real browser what only a browser decides:
// whether the refresh cookie is stored, sent and hidden from scripts, and
// whether CORS and SameSite let a page on another origin or another site
// through. It drives Chromium over the DevTools protocol (chromedp) against
// a real Caddy running the gateway in this process.
//
// One browser serves the whole package (TestMain); each test gets its own
// browser context (a fresh cookie jar) and opens tabs in it.
//
// Caddy runs on ports of its own (admin 2969, sites 9069 and 9070), so this
// package and the caddymodule package, which uses 2999 and 9080, can run
// at the same time.
//
// Without a browser the tests skip, except under CI (CI=true), where a
// missing browser fails the package: install it with
// `apt-get install -y chromium`.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/chromedp/chromedp"

	_ "github.com/crudauth/caddy-crudauth/caddymodule"
)

// installHint is how to get the browser the suite needs.
const installHint = "apt-get install -y chromium"

var (
	// rootCtx holds the one browser of the package; nil when there is none.
	rootCtx context.Context
	// noBrowser says why there is no browser, for the skip message.
	noBrowser string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// caddytest's defaults: admin on 2999 and certificate files these
	// plain-http sites do not need.
	caddytest.Default.AdminPort = adminPort
	caddytest.Default.Certificates = nil
	caddytest.Default.LoadRequestTimeout = 10 * time.Second
	dir, err := os.MkdirTemp("", "crudauth-browser-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Keep the in-process Caddy's autosave and data, and the browser's
	// profile, out of the user's home.
	_ = os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	_ = os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))

	closeStore, err := openUsers()
	if err != nil {
		fmt.Fprintln(os.Stderr, "browsertest:", err)
		return 1
	}
	defer closeStore()

	ci := os.Getenv("CI") == "true"
	path := findBrowser()
	if path == "" {
		noBrowser = "no Chromium or Chrome found; install it with `" + installHint + "`"
		if ci {
			fmt.Fprintln(os.Stderr, "browsertest: under CI the browser tests must run:", noBrowser)
			return 1
		}
		return m.Run()
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(path),
			chromedp.NoSandbox, // root in CI containers
			chromedp.UserDataDir(filepath.Join(dir, "profile")),
		)...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		noBrowser = fmt.Sprintf("starting %s: %v (install Chromium with `%s`)", path, err, installHint)
		if ci {
			fmt.Fprintln(os.Stderr, "browsertest:", noBrowser)
			return 1
		}
		return m.Run()
	}
	rootCtx = ctx
	return m.Run()
}

// findBrowser returns the path of a Chromium-based browser, or "".
func findBrowser() string {
	if p := os.Getenv("CRUDAUTH_BROWSER"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// needBrowser skips the test when the package has no browser (never under
// CI: TestMain has failed the package then).
func needBrowser(t *testing.T) {
	t.Helper()
	if rootCtx == nil {
		t.Skip(noBrowser)
	}
}
