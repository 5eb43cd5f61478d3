// Package admin is crudauth's user administration API: user management,
// backups and restores over HTTP, under /crudauth/, so that an operator can
// manage users while the gateway runs and holds the store. It is a plain
// HTTP handler; the host (Caddy's admin server) mounts it and tells it,
// through a Resolver, which store a request is about.
//
// JSON in and out. A refused user operation answers {"error": "...",
// "kind": "..."}, the kind being that of internal/users (invalid 400,
// not_found 404, exists 409, conflict 409, busy 503 with Retry-After,
// internal 500), so
// that the CLI acts on the kind, never on the message; other errors are
// {"error": "..."}.
//
//	GET    /crudauth/identity                     Identity: this is crudauth's API
//	GET    /crudauth/dbs                          open databases
//	GET    /crudauth/users                        list users
//	POST   /crudauth/users                        add {"username","password","allowed_scopes"}
//	GET    /crudauth/users/<name>                 show one
//	GET    /crudauth/users/<name>?exists=1        {"exists": true|false}, 200 either way
//	DELETE /crudauth/users/<name>                 delete
//	POST   /crudauth/users/<name>/password        set {"password"}; revokes every token
//	POST   /crudauth/users/<name>/revoke          revoke every token (bump token_version)
//	POST   /crudauth/users/<name>/disable         disable
//	POST   /crudauth/users/<name>/enable          enable
//	PUT    /crudauth/users/<name>/scopes          set {"allowed_scopes": [...] or null}
//	GET    /crudauth/users/<name>/sessions        the user's live sessions, oldest first
//	DELETE /crudauth/users/<name>/sessions/<sid>  end one session of the user
//	GET    /crudauth/keys[?alg=&token_lifetime=]  the signing keys and their state (public metadata only)
//	POST   /crudauth/keys/rotate                  add a key that signs after a delay {"alg","delay"}, both optional
//	POST   /crudauth/keys/<kid>/retire            end a key at once; a replacement signs if none else does
//	POST   /crudauth/import                       add users with existing hashes, all or none
//	GET    /crudauth/backup[?format=export|bolt]  the portable export (default) or the bbolt file
//	POST   /crudauth/restore                      import an export: all its users or none
//
// <name>, <sid> and <kid> are path-escaped. Which store a request is about is the
// Resolver's to say, from the query (?realm=, ?db=).
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

const (
	// ModuleID is the name the API identifies itself with.
	ModuleID = "admin.api.crudauth"
	// APIVersion changes when the admin API changes incompatibly.
	APIVersion = 1
)

// Identity is the answer of GET /crudauth/identity. The CLI asks for it
// before it sends a password or a hash anywhere: whatever else listens on
// the admin address (another program on localhost:2019 while caddy is down,
// a caddy without this module) does not serve it, and gets nothing. It holds
// nothing secret.
type Identity struct {
	Module string `json:"module"` // ModuleID
	API    int    `json:"api"`    // APIVersion
}

var identity = Identity{Module: ModuleID, API: APIVersion}

// ErrorBody is the answer to a refused operation. Kind is set for the
// errors of internal/users: the CLI rebuilds a *users.Error from it.
type ErrorBody struct {
	Error string `json:"error"`
	Kind  string `json:"kind,omitempty"`
}

// ExistsResult is the answer of GET /crudauth/users/<name>?exists=1.
type ExistsResult struct {
	Exists bool `json:"exists"`
}

// RestoreResult is the answer of POST /crudauth/restore.
type RestoreResult struct {
	Users       int `json:"users"`
	Sessions    int `json:"sessions"`
	Secrets     int `json:"secrets"`
	SecretsKept int `json:"secrets_kept"`
	// Signing keys added, and keys that were already stored, equal.
	Keys     int `json:"keys"`
	KeysKept int `json:"keys_kept"`
}

// maxBody caps JSON bodies other than imports.
const maxBody = 64 << 10

// Error is a request refused before any operation ran (an unknown
// endpoint, a malformed body, a store that cannot be resolved): the host
// answers it with {"error": Msg} and Status.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Errorf returns an *Error with status and a formatted message.
func Errorf(status int, format string, args ...any) error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Target is the store a request is about, and how new passwords are
// hashed and checked there.
type Target struct {
	Name     string // the store's name, for the logs
	Store    store.Store
	Settings users.Settings
	// Release gives the store back once the request is done.
	Release func()
}

// Resolver finds what a request names.
type Resolver interface {
	// Stores lists the open stores by name, sorted (GET /crudauth/dbs).
	Stores() []string
	// Resolve finds the store that the query names. A refusal is an
	// *Error.
	Resolve(q url.Values) (Target, error)
}

// Handler serves the API.
type Handler struct {
	Resolver Resolver
	Logger   *zap.Logger
	// Observe, when set, counts an operation and its outcome.
	Observe func(op string, err error)
}

// route is one endpoint: a method on a path pattern of segments after
// /crudauth/, "*" standing for one path-escaped segment (a username).
type route struct {
	method  string
	pattern string
	// noStore: the endpoint is about no store, and is served before one
	// is resolved.
	noStore bool
	// op names the operation in metrics and logs; read operations (list,
	// show) log no failure they answer for the client.
	op    string
	read  bool
	serve func(c *call) error
}

// routes is the API. A change of one user that answers the user's view is
// a viewChange, with its log message.
var routes = []route{
	{method: http.MethodGet, pattern: "identity", noStore: true, serve: func(c *call) error {
		return writeJSON(c.w, http.StatusOK, identity)
	}},
	{method: http.MethodGet, pattern: "dbs", noStore: true, serve: func(c *call) error {
		return writeJSON(c.w, http.StatusOK, map[string][]string{"dbs": c.h.Resolver.Stores()})
	}},
	{method: http.MethodGet, pattern: "users", op: "list", read: true, serve: serveList},
	{method: http.MethodPost, pattern: "users", op: "add", serve: viewChange("user added", http.StatusCreated,
		func(c *call) (users.View, error) {
			var req users.AddRequest
			if err := readJSON(c.r, &req, maxBody); err != nil {
				return users.View{}, err
			}
			c.username = req.Username
			return c.svc.Add(c.ctx, req)
		})},
	{method: http.MethodGet, pattern: "users/*", op: "show", read: true, serve: serveShow},
	{method: http.MethodDelete, pattern: "users/*", op: "delete", serve: viewChange("user deleted", http.StatusOK,
		func(c *call) (users.View, error) { return c.svc.Delete(c.ctx, c.username) })},
	{method: http.MethodPost, pattern: "users/*/password", op: "password", serve: viewChange("password changed by admin", http.StatusOK,
		func(c *call) (users.View, error) {
			var req struct {
				Password string `json:"password"`
			}
			if err := readJSON(c.r, &req, maxBody); err != nil {
				return users.View{}, err
			}
			return c.svc.SetPassword(c.ctx, c.username, req.Password)
		})},
	{method: http.MethodPost, pattern: "users/*/revoke", op: "revoke", serve: viewChange("tokens revoked", http.StatusOK,
		func(c *call) (users.View, error) { return c.svc.Revoke(c.ctx, c.username) })},
	{method: http.MethodPost, pattern: "users/*/disable", op: "disable", serve: viewChange("user disabled", http.StatusOK,
		func(c *call) (users.View, error) { return c.svc.Disable(c.ctx, c.username) })},
	{method: http.MethodPost, pattern: "users/*/enable", op: "enable", serve: viewChange("user enabled", http.StatusOK,
		func(c *call) (users.View, error) { return c.svc.Enable(c.ctx, c.username) })},
	{method: http.MethodPut, pattern: "users/*/scopes", op: "scopes", serve: viewChange("allowed scopes changed", http.StatusOK, setScopes)},
	{method: http.MethodGet, pattern: "users/*/sessions", op: "session_list", read: true, serve: serveSessions},
	{method: http.MethodDelete, pattern: "users/*/sessions/*", op: "session_revoke", serve: serveSessionRevoke},
	{method: http.MethodGet, pattern: "keys", op: "key_list", read: true, serve: serveKeys},
	{method: http.MethodPost, pattern: "keys/rotate", op: "key_rotate", serve: serveKeyRotate},
	{method: http.MethodPost, pattern: "keys/*/retire", op: "key_retire", serve: serveKeyRetire},
	{method: http.MethodPost, pattern: "import", op: "import", serve: serveImport},
	{method: http.MethodGet, pattern: "backup", op: "backup", serve: serveBackup},
	{method: http.MethodPost, pattern: "restore", op: "restore", serve: serveRestore},
}

// match reports whether segs fit the pattern, and returns the segments the
// wildcards stand for.
func (rt *route) match(segs []string) ([]string, bool) {
	pat := strings.Split(rt.pattern, "/")
	if len(pat) != len(segs) {
		return nil, false
	}
	var args []string
	for i, p := range pat {
		switch p {
		case "*":
			args = append(args, segs[i])
		case segs[i]:
		default:
			return nil, false
		}
	}
	return args, true
}

// call is one request on its way through a route.
type call struct {
	h        *Handler
	w        http.ResponseWriter
	r        *http.Request
	rt       *route
	ctx      context.Context // the request's, not cancelled when the client leaves
	t        Target
	svc      *users.Service
	username string   // the user the request is about, for the logs; "" for the key routes
	args     []string // the path segments the route's wildcards stand for
}

// ServeHTTP implements http.Handler: a refusal (*Error) is answered as
// {"error": "..."}, as Caddy's admin server answers it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	err := h.Serve(w, r)
	if err == nil {
		return
	}
	e := &Error{Status: http.StatusInternalServerError, Msg: err.Error()}
	errors.As(err, &e)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": e.Msg})
}

// Serve answers a /crudauth/... request. A request refused before any
// operation ran is returned as an *Error for the host to answer; a refused
// operation is answered here (see fail).
func (h *Handler) Serve(w http.ResponseWriter, r *http.Request) error {
	segs, err := pathSegments(strings.TrimPrefix(r.URL.EscapedPath(), "/crudauth/"))
	if err != nil {
		return Errorf(http.StatusBadRequest, "bad path: %v", err)
	}
	c := &call{h: h, w: w, r: r}
	if rt, err := find(w, r, segs, true); rt != nil || err != nil {
		if err != nil {
			return err
		}
		c.rt = rt
		return rt.serve(c)
	}
	// The store is resolved before the rest of the path is looked at:
	// a request about no store that is open says so first.
	if len(segs) == 0 || !slices.ContainsFunc(routes, func(rt route) bool {
		return !rt.noStore && strings.Split(rt.pattern, "/")[0] == segs[0]
	}) {
		return Errorf(http.StatusNotFound, "unknown endpoint %s", r.URL.Path)
	}
	c.t, err = h.Resolver.Resolve(r.URL.Query())
	if err != nil {
		return err
	}
	defer c.t.Release()
	c.svc = users.New(c.t.Store, c.t.Settings)
	c.ctx = context.WithoutCancel(r.Context())
	rt, err := find(w, r, segs, false)
	if err != nil {
		return err
	}
	if rt == nil {
		if (segs[0] == "users" || segs[0] == "keys") && len(segs) == 3 {
			return Errorf(http.StatusNotFound, "unknown action %q", segs[2])
		}
		return Errorf(http.StatusNotFound, "unknown endpoint %s", r.URL.Path)
	}
	c.rt = rt
	c.args, _ = rt.match(segs)
	if len(c.args) > 0 && segs[0] == "users" {
		c.username = c.args[0]
	}
	return rt.serve(c)
}

// find returns the route of r's method on segs among the routes that are
// (noStore) or are not about a store; nil when no route has that path, and
// a 405 refusal that lists the allowed methods when only the method
// differs.
func find(w http.ResponseWriter, r *http.Request, segs []string, noStore bool) (*route, error) {
	var allowed []string
	for i := range routes {
		rt := &routes[i]
		if rt.noStore != noStore {
			continue
		}
		if _, ok := rt.match(segs); !ok {
			continue
		}
		if rt.method == r.Method {
			return rt, nil
		}
		allowed = append(allowed, rt.method)
	}
	if len(allowed) == 0 {
		return nil, nil
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	return nil, Errorf(http.StatusMethodNotAllowed, "method not allowed; use %s", strings.Join(allowed, " or "))
}
