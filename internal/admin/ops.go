package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/backup"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

func (c *call) observe(err error) {
	if c.h.Observe != nil {
		c.h.Observe(c.rt.op, err)
	}
}

// viewChange serves a change of one user that answers the user's view
// with status, and logs it with msg.
func viewChange(msg string, status int, change func(c *call) (users.View, error)) func(c *call) error {
	return func(c *call) error {
		v, err := change(c)
		var refused *Error
		if errors.As(err, &refused) {
			return err
		}
		c.observe(err)
		if err != nil {
			return c.fail(err)
		}
		c.h.logChange(c.r, msg, c.rt.op, c.t.Name, v)
		return writeJSON(c.w, status, v)
	}
}

func serveList(c *call) error {
	views, err := c.svc.List(c.ctx)
	c.observe(err)
	if err != nil {
		return c.fail(err)
	}
	return writeJSON(c.w, http.StatusOK, views)
}

func serveShow(c *call) error {
	view, err := c.svc.Get(c.ctx, c.username)
	if c.r.URL.Query().Get("exists") == "1" {
		// The CLI's check that a name is free before it asks for a
		// password: an unknown user is the answer, not a failed request.
		if err == nil || users.KindOf(err) == users.NotFound {
			return writeJSON(c.w, http.StatusOK, ExistsResult{Exists: err == nil})
		}
	}
	if err != nil {
		return c.fail(err)
	}
	return writeJSON(c.w, http.StatusOK, view)
}

func serveSessions(c *call) error {
	views, err := c.svc.ListSessions(c.ctx, c.username)
	c.observe(err)
	if err != nil {
		return c.fail(err)
	}
	return writeJSON(c.w, http.StatusOK, views)
}

// serveSessionRevoke ends one session and answers the user's view, as the
// other changes of one user do.
func serveSessionRevoke(c *call) error {
	sid := c.args[1]
	v, err := c.svc.RevokeSession(c.ctx, c.username, sid)
	c.observe(err)
	if err != nil {
		return c.fail(err)
	}
	c.h.logChange(c.r, "session revoked", c.rt.op, c.t.Name, v, zap.String("sid", sid))
	return writeJSON(c.w, http.StatusOK, v)
}

func setScopes(c *call) (users.View, error) {
	var req map[string]json.RawMessage
	if err := readJSON(c.r, &req, maxBody); err != nil {
		return users.View{}, err
	}
	raw, ok := req["allowed_scopes"]
	if !ok {
		return users.View{}, Errorf(http.StatusBadRequest, `the body needs "allowed_scopes": a list, or null for no per-user limit`)
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return users.View{}, Errorf(http.StatusBadRequest, "allowed_scopes must be a list of strings or null")
	}
	return c.svc.SetScopes(c.ctx, c.username, list)
}

func serveImport(c *call) error {
	var req struct {
		Users []users.Record `json:"users"`
	}
	if err := readJSON(c.r, &req, users.MaxImportBytes); err != nil {
		return err
	}
	n, err := c.svc.Import(c.ctx, req.Users)
	c.observe(err)
	if err != nil {
		return c.fail(err)
	}
	c.h.Logger.Info("users imported", zap.Int("count", n), zap.String("db", c.t.Name), zap.String("client_ip", clientIP(c.r)))
	return writeJSON(c.w, http.StatusOK, map[string]int{"imported": n})
}

func serveRestore(c *call) error {
	body, err := io.ReadAll(io.LimitReader(c.r.Body, backup.MaxRestoreBytes+1))
	if err != nil {
		return Errorf(http.StatusBadRequest, "reading the body: %v", err)
	}
	if len(body) > backup.MaxRestoreBytes {
		return Errorf(http.StatusRequestEntityTooLarge, "body larger than %d bytes", backup.MaxRestoreBytes)
	}
	d, err := store.ReadExport(bytes.NewReader(body))
	if err != nil {
		c.observe(err)
		return Errorf(http.StatusBadRequest, "the body is not a crudauth export: %v", err)
	}
	stats, err := backup.Restore(c.ctx, c.t.Store, d)
	c.observe(err)
	if err != nil {
		return c.fail(err)
	}
	c.h.Logger.Info("export restored", zap.Int("users", stats.Users), zap.Int("sessions", stats.Sessions), zap.Int("secrets", stats.Secrets),
		zap.Int("secrets_kept", stats.SecretsKept), zap.Int("keys", stats.Keys), zap.Int("keys_kept", stats.KeysKept),
		zap.String("db", c.t.Name), zap.String("client_ip", clientIP(c.r)))
	return writeJSON(c.w, http.StatusOK, RestoreResult{Users: stats.Users, Sessions: stats.Sessions, Secrets: stats.Secrets,
		SecretsKept: stats.SecretsKept, Keys: stats.Keys, KeysKept: stats.KeysKept})
}

// serveBackup streams a consistent snapshot of the store: the portable
// export, or with ?format=bolt the bbolt file. Either is read from one
// snapshot, so the gateway keeps serving and writing meanwhile.
func serveBackup(c *call) error {
	w, r, path, a := c.w, c.r, c.t.Name, c.h
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
		return Errorf(http.StatusBadRequest, "unknown backup format %q: use export or bolt", format)
	}
	name := fmt.Sprintf("crudauth-%s%s", time.Now().UTC().Format("20060102T150405Z"), ext)
	// Snapshot to a private temp file first, then stream that: the read
	// transaction lasts as long as a local copy, not as long as a slow
	// client takes to download (a long-lived read transaction would hold up
	// writes that need to grow the file, and every read behind them).
	snap, err := os.CreateTemp("", "crudauth-backup-*.db")
	if err != nil {
		c.observe(err)
		return Errorf(http.StatusInternalServerError, "backup failed: %v", err)
	}
	defer func() { snap.Close(); os.Remove(snap.Name()) }()
	if _, err := backup.Write(r.Context(), c.t.Store, snap, format); err != nil {
		c.observe(err)
		if status, _ := errorStatus(err); status != http.StatusInternalServerError {
			return Errorf(status, "%v", err)
		}
		a.Logger.Error("backup failed", zap.String("db", path), zap.Error(err))
		return Errorf(http.StatusInternalServerError, "backup failed: %v", err)
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	var n int64
	if _, err = snap.Seek(0, io.SeekStart); err == nil {
		n, err = io.Copy(w, snap)
	}
	c.observe(err)
	if err != nil {
		a.Logger.Error("backup failed", zap.String("db", path), zap.Int64("bytes_written", n), zap.Error(err))
		if n == 0 {
			return Errorf(http.StatusInternalServerError, "backup failed: %v", err)
		}
		// Headers and part of the body are out: abort the connection so the
		// client sees a truncated transfer, never a short file that looks
		// whole.
		panic(http.ErrAbortHandler)
	}
	a.Logger.Info("backup taken", zap.String("db", path), zap.Int64("bytes", n), zap.String("client_ip", clientIP(r)))
	return nil
}

// logChange writes the one log line of an admin change.
func (h *Handler) logChange(r *http.Request, msg, op, path string, u users.View, extra ...zap.Field) {
	fields := []zap.Field{
		zap.String("username", u.Username),
		zap.String("user_id", u.ID),
		zap.String("client_ip", clientIP(r)),
		zap.String("db", path),
		zap.Uint64("token_version", u.TokenVersion),
	}
	if op == "scopes" || op == "add" {
		fields = append(fields, zap.Strings("allowed_scopes", u.AllowedScopes))
	}
	h.Logger.Info(msg, append(fields, extra...)...)
}

// errorStatus returns the status and kind (empty for an error that does not
// come from internal/users) the admin API answers err with.
func errorStatus(err error) (int, string) {
	status, kind := errorKind(err)
	// A store that cannot answer now (etcd without quorum, or out of
	// reach) is no fault of ours and may answer shortly: 503 with
	// Retry-After, as logins and refreshes get, so that an operator's
	// script retries instead of giving up on an internal error.
	if status == http.StatusInternalServerError && errors.Is(err, store.ErrUnavailable) {
		status = http.StatusServiceUnavailable
	}
	return status, kind
}

func errorKind(err error) (int, string) {
	var ue *users.Error
	if errors.As(err, &ue) {
		switch ue.Kind {
		case users.Invalid:
			return http.StatusBadRequest, ue.Kind.String()
		case users.NotFound:
			return http.StatusNotFound, ue.Kind.String()
		case users.Exists, users.Conflict:
			return http.StatusConflict, ue.Kind.String()
		case users.Busy:
			return http.StatusServiceUnavailable, ue.Kind.String()
		}
		return http.StatusInternalServerError, users.Internal.String()
	}
	switch {
	case errors.Is(err, backup.ErrFormat), errors.Is(err, backup.ErrNoFileSnapshot):
		return http.StatusBadRequest, ""
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrSecretConflict), errors.Is(err, store.ErrKeyConflict):
		return http.StatusConflict, ""
	}
	return http.StatusInternalServerError, ""
}

func (c *call) fail(err error) error {
	who := zap.String("username", c.username)
	if strings.HasPrefix(c.rt.pattern, "keys") {
		// A key operation is about a key, not a user.
		who = zap.Skip()
		if len(c.args) > 0 {
			who = zap.String("kid", c.args[0])
		}
	}
	return c.h.fail(c.w, c.r, c.rt.op, c.rt.read, c.t.Name, who, err)
}

// fail answers a refused operation. It writes the answer itself rather than
// returning the error to the host (Caddy's admin server), which could only
// answer {"error"} and would log every refusal (a show of an unknown user
// among them) as a request error. Failed changes are logged at warn level,
// failures of our own at error level; a read logs only the latter.
// who names what the operation was about: the user, or the key.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, op string, read bool, path string, who zap.Field, err error) error {
	status, kind := errorStatus(err)
	if status == http.StatusInternalServerError || !read {
		log := h.Logger.Warn
		if status == http.StatusInternalServerError {
			log = h.Logger.Error
		}
		log("admin operation failed",
			zap.String("operation", op),
			who,
			zap.String("client_ip", clientIP(r)),
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
	return writeJSON(w, status, ErrorBody{Error: msg, Kind: kind})
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

func readJSON(r *http.Request, v any, limit int64) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return Errorf(http.StatusBadRequest, "reading the body: %v", err)
	}
	if int64(len(body)) > limit {
		return Errorf(http.StatusRequestEntityTooLarge, "body larger than %d bytes", limit)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return Errorf(http.StatusBadRequest, "the body is not the expected JSON: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

func clientIP(r *http.Request) string {
	if r.RemoteAddr == "" || r.RemoteAddr == "@" {
		return "unix"
	}
	if i := strings.LastIndexByte(r.RemoteAddr, ':'); i > 0 && !strings.HasSuffix(r.RemoteAddr, "]") {
		return strings.Trim(r.RemoteAddr[:i], "[]")
	}
	return r.RemoteAddr
}
