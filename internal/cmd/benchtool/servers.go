package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// serve runs h on addr (which must be a loopback address) until SIGTERM or
// SIGINT.
func serve(addr string, h http.Handler) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to listen on %s: loopback only", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// runUpstream is the backend every proxy case talks to: a tiny response, so
// that the cost measured is the proxy's and the gateway's.
func runUpstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	_ = fs.Parse(args)
	body := []byte("ok\n")
	return serve(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		_, _ = w.Write(body)
	}))
}

// runFwdAuth is the reference point: the same token check as a separate
// service behind Caddy's forward_auth. It verifies the token with the
// gateway's own token package (signature, claims, typ, verified-token cache)
// and the scope the gateway's rule requires; it has no database, so it skips
// the epoch check the gateway does.
func runFwdAuth(args []string) error {
	fs := flag.NewFlagSet("fwdauth", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	secret := fs.String("secret", os.Getenv("BENCH_SECRET"), "HS256 key")
	_ = fs.Parse(args)
	m, err := token.New(token.Config{Key: []byte(*secret), Issuer: benchIssuer, Audience: benchAudience})
	if err != nil {
		return err
	}
	need := scope.MustNew("api:read")
	return serve(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := token.ParseAuthorization(r.Header.Get("Authorization"))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="crudauth"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		c, err := m.VerifyAccess(raw)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="crudauth", error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if !c.Scopes.ContainsAll(need) {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		h := w.Header()
		h.Set("X-User-Id", c.UserID)
		h.Set("X-User-Name", c.UserID)
		h.Set("X-User-Scopes", c.Scopes.String())
		w.WriteHeader(http.StatusOK)
	}))
}
