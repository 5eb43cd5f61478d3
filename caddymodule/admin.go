package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/backup"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI is the `admin.api.crudauth` module: user administration and
// backups on Caddy's admin endpoint, under /crudauth/, so that an operator
// can manage users while the gateway runs and holds the database file.
// JSON in and out. A refused user operation answers {"error": "...",
// "kind": "..."}, the kind being that of internal/users (invalid 400,
// not_found 404, exists 409, busy 503 with Retry-After, internal 500), so
// that the CLI acts on the kind, never on the message; other errors are
// {"error": "..."}.
//
//	GET    /crudauth/identity                     identityDoc: this is crudauth's API
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
//	POST   /crudauth/import                       add users with existing hashes, all or none
//	GET    /crudauth/backup[?format=export|bolt]  the portable export (default) or the bbolt file
//	POST   /crudauth/restore                      import an export: all its users or none
//
// <name> is path-escaped. Every request may name a realm declared in the
// global crudauth options with ?realm=<name>; with more than one store
// open and no realm named, it names the store with ?db=<absolute path> (a
// bbolt file) or ?db=memory:<name>.
type adminAPI struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  adminAPIModuleID,
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Provision sets up the logger and the admin metrics.
func (a *adminAPI) Provision(ctx caddy.Context) error {
	// Admin routers are not loaded as submodules of the config, so name
	// the logger ourselves.
	a.logger = caddy.Log().Named("admin.api.crudauth")
	return registerMetrics(ctx.GetMetricsRegistry())
}

// Routes implements caddy.AdminRouter.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/crudauth/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// identityDoc is the answer of GET /crudauth/identity. The CLI asks for it
// before it sends a password or a hash anywhere: whatever else listens on
// the admin address (another program on localhost:2019 while caddy is down,
// a caddy without this module) does not serve it, and gets nothing. It holds
// nothing secret.
type identityDoc struct {
	Module string `json:"module"` // adminAPIModuleID
	API    int    `json:"api"`    // adminAPIVersion
}

const (
	adminAPIModuleID = "admin.api.crudauth"
	// adminAPIVersion changes when the admin API changes incompatibly.
	adminAPIVersion = 1
)

var adminIdentity = identityDoc{Module: adminAPIModuleID, API: adminAPIVersion}

// maxAdminBody caps JSON bodies other than imports.
const maxAdminBody = 64 << 10

func apiError(status int, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return caddy.APIError{HTTPStatus: status, Err: errors.New(msg), Message: msg}
}

func methodNotAllowed(w http.ResponseWriter, allowed ...string) error {
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	return apiError(http.StatusMethodNotAllowed, "method not allowed; use %s", strings.Join(allowed, " or "))
}

// serve dispatches /crudauth/... requests.
func (a *adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	segs, err := pathSegments(strings.TrimPrefix(r.URL.EscapedPath(), "/crudauth/"))
	if err != nil {
		return apiError(http.StatusBadRequest, "bad path: %v", err)
	}
	if len(segs) == 1 && segs[0] == "identity" {
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, http.MethodGet)
		}
		return writeAdminJSON(w, http.StatusOK, adminIdentity)
	}
	if len(segs) == 1 && segs[0] == "dbs" {
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, http.MethodGet)
		}
		return writeAdminJSON(w, http.StatusOK, map[string][]string{"dbs": openDBPaths()})
	}
	if len(segs) == 0 || (segs[0] != "users" && segs[0] != "import" && segs[0] != "backup" && segs[0] != "restore") {
		return apiError(http.StatusNotFound, "unknown endpoint %s", r.URL.Path)
	}

	key, st, release, settings, err := resolveTarget(r.URL.Query())
	if err != nil {
		return err
	}
	defer release()
	path := storeName(key) // for the logs
	svc := users.New(st, settings)
	ctx := contextWithoutCancel(r.Context())

	op, username := "", ""
	var view users.View
	status := http.StatusOK
	switch {
	case segs[0] == "backup" && len(segs) == 1:
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, http.MethodGet)
		}
		return a.serveBackup(w, r, path, st)
	case segs[0] == "restore" && len(segs) == 1:
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, http.MethodPost)
		}
		op = "restore"
		body, err := io.ReadAll(io.LimitReader(r.Body, backup.MaxRestoreBytes+1))
		if err != nil {
			return apiError(http.StatusBadRequest, "reading the body: %v", err)
		}
		if len(body) > backup.MaxRestoreBytes {
			return apiError(http.StatusRequestEntityTooLarge, "body larger than %d bytes", backup.MaxRestoreBytes)
		}
		d, err := store.ReadExport(bytes.NewReader(body))
		if err != nil {
			observeAdmin(op, err)
			return apiError(http.StatusBadRequest, "the body is not a crudauth export: %v", err)
		}
		stats, err := backup.Restore(ctx, st, d)
		observeAdmin(op, err)
		if err != nil {
			return a.fail(w, r, op, path, "", err)
		}
		a.logger.Info("export restored", zap.Int("users", stats.Users), zap.Int("secrets", stats.Secrets),
			zap.Int("secrets_kept", stats.SecretsKept), zap.String("db", path), zap.String("client_ip", adminClientIP(r)))
		return writeAdminJSON(w, http.StatusOK, restoreResult{Users: stats.Users, Secrets: stats.Secrets, SecretsKept: stats.SecretsKept})
	case segs[0] == "import" && len(segs) == 1:
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, http.MethodPost)
		}
		op = "import"
		var req struct {
			Users []users.Record `json:"users"`
		}
		if err := readAdminJSON(r, &req, users.MaxImportBytes); err != nil {
			return err
		}
		n, err := svc.Import(ctx, req.Users)
		observeAdmin(op, err)
		if err != nil {
			return a.fail(w, r, op, path, "", err)
		}
		a.logger.Info("users imported", zap.Int("count", n), zap.String("db", path), zap.String("client_ip", adminClientIP(r)))
		return writeAdminJSON(w, http.StatusOK, map[string]int{"imported": n})
	case segs[0] == "users" && len(segs) == 1: // /users
		switch r.Method {
		case http.MethodGet:
			op = "list"
			views, err := svc.List(ctx)
			observeAdmin(op, err)
			if err != nil {
				return a.fail(w, r, op, path, "", err)
			}
			return writeAdminJSON(w, http.StatusOK, views)
		case http.MethodPost:
			op = "add"
			var req users.AddRequest
			if err := readAdminJSON(r, &req, maxAdminBody); err != nil {
				return err
			}
			username = req.Username
			view, err = svc.Add(ctx, req)
			status = http.StatusCreated
		default:
			return methodNotAllowed(w, http.MethodGet, http.MethodPost)
		}
	case segs[0] == "users" && len(segs) == 2: // /users/<name>
		username = segs[1]
		switch r.Method {
		case http.MethodGet:
			op = "show"
			if r.URL.Query().Get("exists") == "1" {
				// The CLI's check that a name is free before it asks for
				// a password: an unknown user is the answer, not a failed
				// request.
				_, err := svc.Get(ctx, username)
				if err == nil || users.KindOf(err) == users.NotFound {
					return writeAdminJSON(w, http.StatusOK, existsResult{Exists: err == nil})
				}
				return a.fail(w, r, op, path, username, err)
			}
			view, err = svc.Get(ctx, username)
		case http.MethodDelete:
			op = "delete"
			view, err = svc.Delete(ctx, username)
		default:
			return methodNotAllowed(w, http.MethodGet, http.MethodDelete)
		}
	case segs[0] == "users" && len(segs) == 3: // /users/<name>/<action>
		username, op = segs[1], segs[2]
		switch op {
		case "password":
			if r.Method != http.MethodPost {
				return methodNotAllowed(w, http.MethodPost)
			}
			var req struct {
				Password string `json:"password"`
			}
			if err := readAdminJSON(r, &req, maxAdminBody); err != nil {
				return err
			}
			view, err = svc.SetPassword(ctx, username, req.Password)
		case "revoke", "disable", "enable":
			if r.Method != http.MethodPost {
				return methodNotAllowed(w, http.MethodPost)
			}
			change := svc.Revoke
			switch op {
			case "disable":
				change = svc.Disable
			case "enable":
				change = svc.Enable
			}
			view, err = change(ctx, username)
		case "scopes":
			if r.Method != http.MethodPut {
				return methodNotAllowed(w, http.MethodPut)
			}
			var req map[string]json.RawMessage
			if err := readAdminJSON(r, &req, maxAdminBody); err != nil {
				return err
			}
			raw, ok := req["allowed_scopes"]
			if !ok {
				return apiError(http.StatusBadRequest, `the body needs "allowed_scopes": a list, or null for no per-user limit`)
			}
			var list []string
			if err := json.Unmarshal(raw, &list); err != nil {
				return apiError(http.StatusBadRequest, "allowed_scopes must be a list of strings or null")
			}
			view, err = svc.SetScopes(ctx, username, list)
		default:
			return apiError(http.StatusNotFound, "unknown action %q", op)
		}
	default:
		return apiError(http.StatusNotFound, "unknown endpoint %s", r.URL.Path)
	}
	if op != "show" {
		observeAdmin(op, err)
	}
	if err != nil {
		return a.fail(w, r, op, path, username, err)
	}
	if op != "show" {
		a.logChange(r, op, path, view)
	}
	return writeAdminJSON(w, status, view)
}

// existsResult is the answer of GET /crudauth/users/<name>?exists=1.
type existsResult struct {
	Exists bool `json:"exists"`
}

// logChange writes the one log line of an admin change.
func (a *adminAPI) logChange(r *http.Request, op, path string, u users.View) {
	msg := map[string]string{
		"add": "user added", "delete": "user deleted", "password": "password changed by admin",
		"revoke": "tokens revoked", "disable": "user disabled", "enable": "user enabled",
		"scopes": "allowed scopes changed",
	}[op]
	fields := []zap.Field{
		zap.String("username", u.Username),
		zap.String("user_id", u.ID),
		zap.String("client_ip", adminClientIP(r)),
		zap.String("db", path),
		zap.Uint64("token_version", u.TokenVersion),
	}
	if op == "scopes" || op == "add" {
		fields = append(fields, zap.Strings("allowed_scopes", u.AllowedScopes))
	}
	a.logger.Info(msg, fields...)
}

// adminErrorBody is the answer to a refused operation. Kind is set for the
// errors of internal/users: the CLI rebuilds a *users.Error from it.
type adminErrorBody struct {
	Error string `json:"error"`
	Kind  string `json:"kind,omitempty"`
}

// errorStatus returns the status and kind (empty for an error that does not
// come from internal/users) the admin API answers err with.
func errorStatus(err error) (int, string) {
	var ue *users.Error
	if errors.As(err, &ue) {
		switch ue.Kind {
		case users.Invalid:
			return http.StatusBadRequest, ue.Kind.String()
		case users.NotFound:
			return http.StatusNotFound, ue.Kind.String()
		case users.Exists:
			return http.StatusConflict, ue.Kind.String()
		case users.Busy:
			return http.StatusServiceUnavailable, ue.Kind.String()
		}
		return http.StatusInternalServerError, users.Internal.String()
	}
	switch {
	case errors.Is(err, backup.ErrFormat), errors.Is(err, backup.ErrNoFileSnapshot):
		return http.StatusBadRequest, ""
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrSecretConflict):
		return http.StatusConflict, ""
	}
	return http.StatusInternalServerError, ""
}

// fail answers a refused operation. It writes the answer itself rather than
// returning the error to Caddy's admin server, which could only answer
// {"error"} and would log every refusal (a show of an unknown user among
// them) as a request error. Failed changes are logged at warn level, and
// failures of our own at error level.
func (a *adminAPI) fail(w http.ResponseWriter, r *http.Request, op, path, username string, err error) error {
	status, kind := errorStatus(err)
	if status == http.StatusInternalServerError || (op != "show" && op != "list") {
		log := a.logger.Warn
		if status == http.StatusInternalServerError {
			log = a.logger.Error
		}
		log("admin operation failed",
			zap.String("operation", op),
			zap.String("username", username),
			zap.String("client_ip", adminClientIP(r)),
			zap.String("db", path),
			zap.Int("status", status),
			zap.Error(err))
	}
	msg := err.Error()
	if status == http.StatusInternalServerError {
		msg = "internal error: " + msg
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	return writeAdminJSON(w, status, adminErrorBody{Error: msg, Kind: kind})
}

// restoreResult is the answer of POST /crudauth/restore.
type restoreResult struct {
	Users       int `json:"users"`
	Secrets     int `json:"secrets"`
	SecretsKept int `json:"secrets_kept"`
}

// serveBackup streams a consistent snapshot of the store: the portable
// export, or with ?format=bolt the bbolt file. Either is read from one
// snapshot, so the gateway keeps serving and writing meanwhile.
func (a *adminAPI) serveBackup(w http.ResponseWriter, r *http.Request, path string, st store.Store) error {
	format := r.URL.Query().Get("format")
	if format == "" {
		format = backup.Export
	}
	ext, ctype := ".jsonl", "application/jsonl"
	switch format {
	case backup.Export:
	case backup.Bolt:
		ext, ctype = ".db", "application/octet-stream"
	default:
		return apiError(http.StatusBadRequest, "unknown backup format %q: use export or bolt", format)
	}
	name := fmt.Sprintf("crudauth-%s%s", time.Now().UTC().Format("20060102T150405Z"), ext)
	// Snapshot to a private temp file first, then stream that: the read
	// transaction lasts as long as a local copy, not as long as a slow
	// client takes to download (a long-lived read transaction would hold up
	// writes that need to grow the file, and every read behind them).
	snap, err := os.CreateTemp("", "crudauth-backup-*.db")
	if err != nil {
		observeAdmin("backup", err)
		return apiError(http.StatusInternalServerError, "backup failed: %v", err)
	}
	defer func() { snap.Close(); os.Remove(snap.Name()) }()
	if _, err := backup.Write(r.Context(), st, snap, format); err != nil {
		observeAdmin("backup", err)
		if status, _ := errorStatus(err); status != http.StatusInternalServerError {
			return apiError(status, "%v", err)
		}
		a.logger.Error("backup failed", zap.String("db", path), zap.Error(err))
		return apiError(http.StatusInternalServerError, "backup failed: %v", err)
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	var n int64
	if _, err = snap.Seek(0, io.SeekStart); err == nil {
		n, err = io.Copy(w, snap)
	}
	observeAdmin("backup", err)
	if err != nil {
		a.logger.Error("backup failed", zap.String("db", path), zap.Int64("bytes_written", n), zap.Error(err))
		if n == 0 {
			return apiError(http.StatusInternalServerError, "backup failed: %v", err)
		}
		// Headers and part of the body are out: abort the connection so the
		// client sees a truncated transfer, never a short file that looks
		// whole.
		panic(http.ErrAbortHandler)
	}
	a.logger.Info("backup taken", zap.String("db", path), zap.Int64("bytes", n), zap.String("client_ip", adminClientIP(r)))
	return nil
}

// openDBPaths lists the stores open in this process by name: a bbolt file
// by its absolute path, another store by its key (memory:<name>).
func openDBPaths() []string {
	paths := []string{}
	openStores(func(key string, _ store.Store) bool {
		paths = append(paths, storeName(key))
		return true
	})
	slices.Sort(paths)
	return paths
}

// resolveTarget finds the store a request is about, and how new passwords
// are hashed and checked there: `?realm=NAME` names a realm declared in the
// running config; otherwise `?db=` names a store (see resolveDB), with the
// settings of the realm that holds it.
func resolveTarget(q url.Values) (string, store.Store, func(), users.Settings, error) {
	name := q.Get("realm")
	if name == "" {
		key, st, release, err := resolveDB(q.Get("db"))
		if err != nil {
			return "", nil, nil, users.Settings{}, err
		}
		settings, err := settingsFor(key)
		if err != nil {
			release()
			return "", nil, nil, users.Settings{}, err
		}
		return key, st, release, settings, nil
	}
	if q.Get("db") != "" {
		return "", nil, nil, users.Settings{}, apiError(http.StatusBadRequest, "give realm or db, not both")
	}
	mod, err := caddy.ActiveContext().AppIfConfigured("crudauth")
	if err != nil {
		return "", nil, nil, users.Settings{}, apiError(http.StatusNotFound, "no realm is declared in the running config")
	}
	app := mod.(*App)
	r, ok := app.realm(name)
	if !ok {
		return "", nil, nil, users.Settings{}, apiError(http.StatusNotFound, "realm %q is not declared in the running config; declared: %s",
			name, strings.Join(app.names(), ", "))
	}
	key, st, release, err := resolveDB(storeName(r.storeKey))
	if err != nil {
		return "", nil, nil, users.Settings{}, err
	}
	return key, st, release, r.passwordSettings(), nil
}

// resolveDB finds the store a request is about (db: its name, as
// openDBPaths gives it; empty for the only one) and takes a reference to
// it for the request's duration, so a config reload that closes it waits
// until the request is done (a backup in particular). It returns the
// store's pool key.
func resolveDB(db string) (string, store.Store, func(), error) {
	paths := openDBPaths()
	if db == "" {
		switch len(paths) {
		case 0:
			return "", nil, nil, apiError(http.StatusNotFound, "no crudauth database is open in this caddy; is a crudauth handler configured?")
		case 1:
			db = paths[0]
		default:
			return "", nil, nil, apiError(http.StatusBadRequest, "several crudauth databases are open; pass ?db= with one of: %s", strings.Join(paths, ", "))
		}
	}
	key, ok := storeKeyOf(db)
	if !ok {
		return "", nil, nil, apiError(http.StatusBadRequest, "db %q must be an absolute path or a memory: name; open ones: %s", db, strings.Join(paths, ", "))
	}
	if !slices.Contains(paths, storeName(key)) {
		return "", nil, nil, apiError(http.StatusNotFound, "database %s is not open in this caddy; open ones: %s", storeName(key), strings.Join(paths, ", "))
	}
	val, _, err := storePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return nil, errors.New("closed meanwhile")
	})
	if err != nil {
		return "", nil, nil, apiError(http.StatusNotFound, "database %s was closed meanwhile; retry", storeName(key))
	}
	return key, val.(sharedStore).Store, func() { _ = releaseStore(key) }, nil
}

// pathSegments splits an escaped path into unescaped segments, so that a
// username may hold any character, `/` included (as %2F).
func pathSegments(escaped string) ([]string, error) {
	escaped = strings.TrimSuffix(escaped, "/")
	if escaped == "" {
		return nil, nil
	}
	parts := strings.Split(escaped, "/")
	for i, p := range parts {
		s, err := url.PathUnescape(p)
		if err != nil {
			return nil, err
		}
		parts[i] = s
	}
	return parts, nil
}

func readAdminJSON(r *http.Request, v any, limit int64) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return apiError(http.StatusBadRequest, "reading the body: %v", err)
	}
	if int64(len(body)) > limit {
		return apiError(http.StatusRequestEntityTooLarge, "body larger than %d bytes", limit)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return apiError(http.StatusBadRequest, "the body is not the expected JSON: %v", err)
	}
	return nil
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

func adminClientIP(r *http.Request) string {
	if r.RemoteAddr == "" || r.RemoteAddr == "@" {
		return "unix"
	}
	if i := strings.LastIndexByte(r.RemoteAddr, ':'); i > 0 && !strings.HasSuffix(r.RemoteAddr, "]") {
		return strings.Trim(r.RemoteAddr[:i], "[]")
	}
	return r.RemoteAddr
}

// Interface guards
var (
	_ caddy.Provisioner = (*adminAPI)(nil)
	_ caddy.AdminRouter = (*adminAPI)(nil)
)
