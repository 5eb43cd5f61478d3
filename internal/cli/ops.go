package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/admin"
	"github.com/crudauth/caddy-crudauth/internal/backup"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// Ops is what the CLI does to users, either on a database file it opened
// itself (Local) or through a running Caddy's admin API (Remote). The
// command line is the same both ways.
type Ops interface {
	List(ctx context.Context) ([]users.View, error)
	Show(ctx context.Context, username string) (users.View, error)
	// Exists says whether the user exists; an unknown user is no error.
	Exists(ctx context.Context, username string) (bool, error)
	Add(ctx context.Context, req users.AddRequest) (users.View, error)
	Passwd(ctx context.Context, username, pw string) (users.View, error)
	// Change applies action: revoke, disable or enable.
	Change(ctx context.Context, username, action string) (users.View, error)
	Remove(ctx context.Context, username string) (users.View, error)
	SetScopes(ctx context.Context, username string, allowed []string) (users.View, error)
	Import(ctx context.Context, records []users.Record) (int, error)
	Backup(ctx context.Context, w io.Writer, format string) (int64, error)
	Restore(ctx context.Context, d *store.Dump) (store.ImportStats, error)
	// ListSessions returns the user's live sessions, oldest first.
	ListSessions(ctx context.Context, username string) ([]users.SessionView, error)
	// RevokeSession ends the user's session sid.
	RevokeSession(ctx context.Context, username, sid string) (users.View, error)
	// ListKeys returns the signing keys with their state.
	ListKeys(ctx context.Context, req users.KeyListRequest) (users.KeyList, error)
	// RotateKey adds a key that signs after a delay.
	RotateKey(ctx context.Context, req users.KeyRotateRequest) (users.KeyRotateResult, error)
	// RetireKey ends the key kid at once.
	RetireKey(ctx context.Context, kid string) (users.KeyRetireResult, error)
}

// defaultLockWait is how long the CLI waits for the file lock before it
// concludes that a running process holds the file and turns to the admin
// API.
const defaultLockWait = 500 * time.Millisecond

// WithOps runs fn on the database the flags name: through the admin API when
// --address is given or when another process (a running Caddy) holds the
// file, else on the file itself.
func (env *Env) WithOps(fn func(ctx context.Context, ops Ops) error) error {
	ctx := context.Background()
	if env.Store != "" {
		return env.withStoreURL(ctx, fn)
	}
	path := env.DB
	if path == "" {
		path = env.DefaultDB
	}
	if env.Realm != "" {
		// A realm lives in a running caddy's config: only its admin API
		// knows it.
		if env.DB != "" {
			return errors.New("give --realm or --db, not both")
		}
		addr := env.Address
		if addr == "" {
			addr = env.adminAddress()
		}
		env.verbosef("using realm %s through the admin API at %s", env.Realm, addr)
		o := env.Remote(addr, "")
		o.realm = env.Realm
		return hint(fn(ctx, o))
	}
	if env.Address != "" {
		dbParam := ""
		if env.DB != "" {
			abs, err := filepath.Abs(env.DB)
			if err != nil {
				return fmt.Errorf("--db: %w", err)
			}
			dbParam = abs
		}
		env.verbosef("using the admin API at %s (--address)", env.Address)
		return hint(fn(ctx, env.Remote(env.Address, dbParam)))
	}

	if env.DB == "" {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			// No file at this user's default path: the gateway may well run
			// as another user with another data directory. Ask a running
			// Caddy first; with none, create the file here.
			addr := env.adminAddress()
			err := fn(ctx, env.Remote(addr, ""))
			var ce *connectError
			var ne *notCrudauthError
			if errors.As(err, &ne) {
				return err
			}
			if !errors.As(err, &ce) {
				env.verbosef("no database at %s; using the admin API at %s", path, addr)
				return hint(err)
			}
			if !env.MayCreate {
				return fmt.Errorf("no database at %s and no caddy admin API answered at %s: pass --db <path> of the database, or --address of the running caddy", path, addr)
			}
			env.verbosef("no database at %s and no admin API at %s: creating the file", path, addr)
		}
	} else if !env.MayCreate {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no database at %s: check --db (the file is created by 'caddy crudauth user add' or 'user import', or by caddy on first start)", path)
		}
	}

	wait := env.LockWait
	if wait <= 0 {
		wait = defaultLockWait
	}
	st, err := bolt.Open(path, bolt.Options{Timeout: wait})
	if err == nil {
		defer st.Close()
		env.verbosef("using the database file %s directly (no running process holds it)", st.Path())
		settings, err := env.Settings() // a file outside any running gateway: the defaults
		if err != nil {
			return err
		}
		return hint(fn(ctx, &Local{st: st, svc: users.New(st, settings)}))
	}
	if !errors.Is(err, bolt.ErrLocked) {
		return err
	}
	abs, _ := filepath.Abs(path)
	addr := env.adminAddress()
	env.verbosef("%s is held by another process; using the admin API at %s", abs, addr)
	err = fn(ctx, env.Remote(addr, abs))
	var ce *connectError
	if errors.As(err, &ce) {
		return fmt.Errorf("database %s is locked by another process and no caddy admin API answered at %s: "+
			"if a running caddy holds the file, pass its admin address with --address; otherwise stop the process that holds it", abs, addr)
	}
	return hint(err)
}

// Remote returns the ops that go through the admin API at addr, on the
// database db (empty: the only one open there).
func (env *Env) Remote(addr, db string) *Remote {
	return &Remote{addr: addr, db: db, say: env.verbosef, parse: env.ParseAddress}
}

// adminAddress is the admin API address used when --address is not given.
func (env *Env) adminAddress() string {
	return env.AdminAddress()
}

func (env *Env) verbosef(format string, args ...any) {
	if env.Verbose {
		fmt.Fprintf(env.errOut(), "crudauth: "+format+"\n", args...)
	}
}

func (env *Env) errOut() io.Writer {
	if env.Stderr != nil {
		return env.Stderr
	}
	return io.Discard
}

// hint adds what to do next to the errors an operator can fix. It goes by
// the error's kind, which the admin API passes on, so that a file and a
// running caddy give the same advice. Only an error as a user operation
// returned it gets one: a command that wrapped it (the import, with its
// file name and line) has said what is wrong already.
func hint(err error) error {
	if ue, ok := err.(*users.Error); ok {
		switch ue.Kind {
		case users.NotFound:
			return fmt.Errorf("%w; 'caddy crudauth user list' shows who exists", err)
		case users.Exists:
			return fmt.Errorf("%w; use 'caddy crudauth user passwd' to change the password", err)
		}
		return err
	}
	var re *remoteError
	// No database open: resolveDB's refusal, which has no user error kind.
	if errors.As(err, &re) && re.status == http.StatusNotFound && strings.HasPrefix(re.msg, "no crudauth database is open") {
		return fmt.Errorf("%s; to work on a database file instead, pass --db <path>", re.msg)
	}
	return err
}

// Local works on a file the CLI opened.
type Local struct {
	st  store.Store
	svc *users.Service
}

func (l *Local) List(ctx context.Context) ([]users.View, error) { return l.svc.List(ctx) }
func (l *Local) Show(ctx context.Context, name string) (users.View, error) {
	return l.svc.Get(ctx, name)
}
func (l *Local) Exists(ctx context.Context, name string) (bool, error) {
	_, err := l.svc.Get(ctx, name)
	if err != nil && users.KindOf(err) == users.NotFound {
		return false, nil
	}
	return err == nil, err
}
func (l *Local) Add(ctx context.Context, req users.AddRequest) (users.View, error) {
	return l.svc.Add(ctx, req)
}
func (l *Local) Passwd(ctx context.Context, name, pw string) (users.View, error) {
	return l.svc.SetPassword(ctx, name, pw)
}
func (l *Local) Change(ctx context.Context, name, action string) (users.View, error) {
	switch action {
	case "revoke":
		return l.svc.Revoke(ctx, name)
	case "disable":
		return l.svc.Disable(ctx, name)
	case "enable":
		return l.svc.Enable(ctx, name)
	}
	return users.View{}, fmt.Errorf("unknown action %q", action)
}
func (l *Local) Remove(ctx context.Context, name string) (users.View, error) {
	return l.svc.Delete(ctx, name)
}
func (l *Local) SetScopes(ctx context.Context, name string, allowed []string) (users.View, error) {
	return l.svc.SetScopes(ctx, name, allowed)
}
func (l *Local) Import(ctx context.Context, recs []users.Record) (int, error) {
	return l.svc.Import(ctx, recs)
}
func (l *Local) Backup(ctx context.Context, w io.Writer, format string) (int64, error) {
	return backup.Write(ctx, l.st, w, format)
}
func (l *Local) Restore(ctx context.Context, d *store.Dump) (store.ImportStats, error) {
	return backup.Restore(ctx, l.st, d)
}
func (l *Local) ListSessions(ctx context.Context, name string) ([]users.SessionView, error) {
	return l.svc.ListSessions(ctx, name)
}
func (l *Local) RevokeSession(ctx context.Context, name, sid string) (users.View, error) {
	return l.svc.RevokeSession(ctx, name, sid)
}
func (l *Local) ListKeys(ctx context.Context, req users.KeyListRequest) (users.KeyList, error) {
	return l.svc.ListKeys(ctx, req)
}
func (l *Local) RotateKey(ctx context.Context, req users.KeyRotateRequest) (users.KeyRotateResult, error) {
	return l.svc.RotateKey(ctx, req)
}
func (l *Local) RetireKey(ctx context.Context, kid string) (users.KeyRetireResult, error) {
	return l.svc.RetireKey(ctx, kid)
}

// Remote goes through the admin API of a running Caddy. Before its first
// request it makes sure that what answers at addr is crudauth's admin API
// (identify): the request may carry a password or password hashes, and
// without --db the address is only a default, where any program may
// listen while caddy is down.
type Remote struct {
	addr  string // admin address, as in `caddy reload --address`
	db    string // ?db=, empty for the only open database
	realm string // ?realm=, which takes the place of db
	say   func(format string, args ...any)
	parse func(addr string) (Endpoint, error)

	client     *http.Client // built on first use, so that the requests share a connection
	origin     string
	unix       bool
	identified bool
}

// notCrudauthError means that something answered at the admin address but
// did not identify itself as crudauth's admin API; nothing was sent to it.
type notCrudauthError struct {
	addr, why string
}

func (e *notCrudauthError) Error() string {
	return fmt.Sprintf("what answers at %s is not crudauth's admin API (%s), so nothing was sent to it: "+
		"pass --address with the admin address of the caddy that runs crudauth, or --db <path> of the database file", e.addr, e.why)
}

// remoteError is an admin API refusal that carries no user error kind: the
// request itself was refused (no database open, a malformed body), or a
// backup or restore failed. Its message is the API's.
type remoteError struct {
	status int
	msg    string
}

func (e *remoteError) Error() string { return e.msg }

// userErrorKinds are the kinds the admin API may name in an error.
var userErrorKinds = []users.Kind{users.Internal, users.Invalid, users.NotFound, users.Exists, users.Busy, users.Conflict}

// remoteErrorOf rebuilds the error of an admin API answer with status >= 400
// and body b: the *users.Error the operation failed with when the answer
// names its kind, so that the CLI treats it as on a file, else a
// *remoteError.
func remoteErrorOf(status int, b []byte) error {
	var e admin.ErrorBody
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(b))
	}
	for _, k := range userErrorKinds {
		if e.Kind != "" && e.Kind == k.String() {
			return &users.Error{Kind: k, Msg: e.Error}
		}
	}
	return &remoteError{status: status, msg: e.Error}
}

// connectError means the admin API did not answer at all.
type connectError struct {
	addr string
	err  error
}

func (e *connectError) Error() string {
	return fmt.Sprintf("cannot reach caddy's admin API at %s (%v): is caddy running? pass its admin address with --address", e.addr, e.err)
}

// connect builds the client for addr.
func (o *Remote) connect() error {
	if o.client != nil {
		return nil
	}
	ep, err := o.parse(o.addr)
	if err != nil {
		return err
	}
	o.origin, o.unix = ep.Origin, ep.Unix
	o.client = &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				d := net.Dialer{Timeout: 5 * time.Second}
				return d.DialContext(ctx, ep.Network, ep.Dial)
			},
			ResponseHeaderTimeout: 2 * time.Minute, // a password hash or a large import
		},
		// Caddy's admin API does not redirect; following one would take a
		// body, password included, to wherever it points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return nil
}

// identify asks addr for crudauth's identity document and fails with a
// *notCrudauthError unless it gets it. It sends nothing but the GET.
func (o *Remote) identify(ctx context.Context) error {
	if o.identified {
		return nil
	}
	resp, err := o.send(ctx, http.MethodGet, o.origin+"/crudauth/identity", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var doc admin.Identity
	switch {
	case resp.StatusCode != http.StatusOK:
		// The status code only: the reason text is the other side's to
		// choose, and would reach the terminal.
		return &notCrudauthError{addr: o.addr, why: fmt.Sprintf("GET /crudauth/identity answered status %d", resp.StatusCode)}
	case json.Unmarshal(b, &doc) != nil || doc.Module != admin.ModuleID:
		return &notCrudauthError{addr: o.addr, why: "GET /crudauth/identity did not answer crudauth's identity document"}
	case doc.API != admin.APIVersion:
		return &notCrudauthError{addr: o.addr, why: fmt.Sprintf("it speaks version %d of the admin API, this command version %d: use the same caddy binary", doc.API, admin.APIVersion)}
	}
	o.identified = true
	if o.say != nil {
		o.say("the admin API at %s identified itself as %s (API version %d); sending the request there", o.addr, doc.Module, doc.API)
	}
	return nil
}

// do sends one request to the admin API, once identify has passed. A
// response with status >= 400 is returned as its error (remoteErrorOf).
func (o *Remote) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	if err := o.connect(); err != nil {
		return nil, err
	}
	if err := o.identify(ctx); err != nil {
		return nil, err
	}
	u := o.origin + path
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	switch {
	case o.realm != "":
		u += sep + "realm=" + url.QueryEscape(o.realm)
	case o.db != "":
		u += sep + "db=" + url.QueryEscape(o.db)
	}
	resp, err := o.send(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, remoteErrorOf(resp.StatusCode, b)
	}
	return resp, nil
}

// send makes one request on o's client.
func (o *Remote) send(ctx context.Context, method, u string, body any) (*http.Response, error) {
	var rd io.Reader
	ctype := "application/json"
	if raw, ok := body.(exportBody); ok {
		rd, ctype = bytes.NewReader(raw), "application/jsonl"
	} else if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if !o.unix {
		req.Header.Set("Origin", o.origin)
	}
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			return nil, &connectError{addr: o.addr, err: oe.Err}
		}
		return nil, fmt.Errorf("admin API at %s: %w", o.addr, err)
	}
	return resp, nil
}

func (o *Remote) json(ctx context.Context, method, path string, body, out any) error {
	resp, err := o.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin API at %s: decoding the response: %w", o.addr, err)
	}
	return nil
}

// userPath is the path of the user name, or of an action on them; each
// segment is path-escaped.
func userPath(name string, action ...string) string {
	p := "/crudauth/users/" + url.PathEscape(name)
	for _, a := range action {
		p += "/" + url.PathEscape(a)
	}
	return p
}

func (o *Remote) view(ctx context.Context, method, path string, body any) (users.View, error) {
	var v users.View
	err := o.json(ctx, method, path, body, &v)
	return v, err
}

func (o *Remote) List(ctx context.Context) ([]users.View, error) {
	var vs []users.View
	err := o.json(ctx, http.MethodGet, "/crudauth/users", nil, &vs)
	return vs, err
}
func (o *Remote) Show(ctx context.Context, name string) (users.View, error) {
	return o.view(ctx, http.MethodGet, userPath(name), nil)
}

// exists asks ?exists=1, which answers 200 for an unknown user too: a plain
// show would answer 404, a failed request in the admin server's terms.
func (o *Remote) Exists(ctx context.Context, name string) (bool, error) {
	var out struct {
		Exists *bool `json:"exists"`
	}
	if err := o.json(ctx, http.MethodGet, userPath(name)+"?exists=1", nil, &out); err != nil {
		return false, err
	}
	if out.Exists == nil {
		return false, fmt.Errorf("admin API at %s: the answer to the existence check has no \"exists\"", o.addr)
	}
	return *out.Exists, nil
}
func (o *Remote) Add(ctx context.Context, req users.AddRequest) (users.View, error) {
	return o.view(ctx, http.MethodPost, "/crudauth/users", req)
}
func (o *Remote) Passwd(ctx context.Context, name, pw string) (users.View, error) {
	return o.view(ctx, http.MethodPost, userPath(name, "password"), map[string]string{"password": pw})
}
func (o *Remote) Change(ctx context.Context, name, action string) (users.View, error) {
	return o.view(ctx, http.MethodPost, userPath(name, action), nil)
}
func (o *Remote) Remove(ctx context.Context, name string) (users.View, error) {
	return o.view(ctx, http.MethodDelete, userPath(name), nil)
}
func (o *Remote) SetScopes(ctx context.Context, name string, allowed []string) (users.View, error) {
	return o.view(ctx, http.MethodPut, userPath(name, "scopes"), map[string][]string{"allowed_scopes": allowed})
}
func (o *Remote) Import(ctx context.Context, recs []users.Record) (int, error) {
	var out struct {
		Imported int `json:"imported"`
	}
	err := o.json(ctx, http.MethodPost, "/crudauth/import", map[string][]users.Record{"users": recs}, &out)
	return out.Imported, err
}

// exportBody is a request body sent as it is: an export, in JSON lines.
type exportBody []byte

func (o *Remote) Restore(ctx context.Context, d *store.Dump) (store.ImportStats, error) {
	var buf bytes.Buffer
	if err := store.WriteExport(&buf, d); err != nil {
		return store.ImportStats{}, err
	}
	var out admin.RestoreResult
	err := o.json(ctx, http.MethodPost, "/crudauth/restore", exportBody(buf.Bytes()), &out)
	return store.ImportStats{Users: out.Users, Sessions: out.Sessions, Secrets: out.Secrets, SecretsKept: out.SecretsKept,
		Keys: out.Keys, KeysKept: out.KeysKept}, err
}

func (o *Remote) Backup(ctx context.Context, w io.Writer, format string) (int64, error) {
	resp, err := o.do(ctx, http.MethodGet, "/crudauth/backup?format="+url.QueryEscape(format), nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("backup transfer from %s broke off after %d bytes: %w", o.addr, n, err)
	}
	return n, nil
}

func (o *Remote) ListSessions(ctx context.Context, name string) ([]users.SessionView, error) {
	var vs []users.SessionView
	err := o.json(ctx, http.MethodGet, userPath(name, "sessions"), nil, &vs)
	return vs, err
}
func (o *Remote) RevokeSession(ctx context.Context, name, sid string) (users.View, error) {
	return o.view(ctx, http.MethodDelete, userPath(name, "sessions", sid), nil)
}

func (o *Remote) ListKeys(ctx context.Context, req users.KeyListRequest) (users.KeyList, error) {
	q := url.Values{}
	if req.Alg != "" {
		q.Set("alg", req.Alg)
	}
	if req.TokenLifetime != "" {
		q.Set("token_lifetime", req.TokenLifetime)
	}
	path := "/crudauth/keys"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var l users.KeyList
	err := o.json(ctx, http.MethodGet, path, nil, &l)
	return l, err
}
func (o *Remote) RotateKey(ctx context.Context, req users.KeyRotateRequest) (users.KeyRotateResult, error) {
	var r users.KeyRotateResult
	err := o.json(ctx, http.MethodPost, "/crudauth/keys/rotate", req, &r)
	return r, err
}
func (o *Remote) RetireKey(ctx context.Context, kid string) (users.KeyRetireResult, error) {
	var r users.KeyRetireResult
	err := o.json(ctx, http.MethodPost, "/crudauth/keys/"+url.PathEscape(kid)+"/retire", nil, &r)
	return r, err
}
