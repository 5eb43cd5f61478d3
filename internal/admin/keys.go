package admin

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/users"
)

// serveKeys lists the signing keys. The realm's settings (Target) give the
// algorithm and token lifetime; ?alg= and ?token_lifetime= override them.
func serveKeys(c *call) error {
	q := c.r.URL.Query()
	list, err := c.svc.ListKeys(c.ctx, users.KeyListRequest{Alg: q.Get("alg"), TokenLifetime: q.Get("token_lifetime")})
	c.observe(err)
	if err != nil {
		return c.fail(err)
	}
	return writeJSON(c.w, http.StatusOK, list)
}

// serveKeyRotate adds a key that signs after a delay. The body is
// optional: without one, the realm's algorithm and key_publish_delay.
func serveKeyRotate(c *call) error {
	var req users.KeyRotateRequest
	if err := readOptionalJSON(c.r, &req, maxBody); err != nil {
		return err
	}
	res, err := c.svc.RotateKey(c.ctx, req)
	c.observe(err)
	if err != nil {
		return c.fail(err)
	}
	c.h.Logger.Info("signing key rotated",
		zap.String("kid", res.Key.ID),
		zap.String("alg", res.Key.Alg),
		zap.Time("sign_from", res.Key.SignFrom),
		zap.String("previous_kid", res.Previous),
		zap.String("client_ip", clientIP(c.r)),
		zap.String("db", c.t.Name))
	return writeJSON(c.w, http.StatusOK, res)
}

// serveKeyRetire ends a key at once. A retirement is logged at warn level:
// it refuses every token the key signed, and usually answers a compromise.
func serveKeyRetire(c *call) error {
	res, err := c.svc.RetireKey(c.ctx, c.args[0])
	c.observe(err)
	if err != nil {
		return c.fail(err)
	}
	fields := []zap.Field{
		zap.String("kid", res.Key.ID),
		zap.String("alg", res.Key.Alg),
		zap.String("client_ip", clientIP(c.r)),
		zap.String("db", c.t.Name),
	}
	if res.AlreadyRetired {
		c.h.Logger.Info("signing key already retired", append(fields, zap.Time("retired_at", res.Key.RetiredAt))...)
		return writeJSON(c.w, http.StatusOK, res)
	}
	if res.Replacement != nil {
		fields = append(fields, zap.String("replacement_kid", res.Replacement.ID))
	}
	c.h.Logger.Warn("signing key retired", append(fields, zap.String("signer_kid", res.Signer))...)
	return writeJSON(c.w, http.StatusOK, res)
}

// readOptionalJSON reads a JSON body as readJSON does, but takes an empty
// one as the zero value.
func readOptionalJSON(r *http.Request, v any, limit int64) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return Errorf(http.StatusBadRequest, "reading the body: %v", err)
	}
	if int64(len(body)) > limit {
		return Errorf(http.StatusRequestEntityTooLarge, "body larger than %d bytes", limit)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return Errorf(http.StatusBadRequest, "the body is not the expected JSON: %v", err)
	}
	return nil
}
