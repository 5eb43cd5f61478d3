package gate

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// ErrMultipleAuth is the reason for a request with more than one
// Authorization header. With endpoints.ErrNoToken, it is what the bearer
// check finds before the token is looked at; the other reasons are
// internal/auth's. Their text goes to logs and to handle_errors, never a
// token.
var ErrMultipleAuth = errors.New("more than one Authorization header")

// Denial is a refused bearer check: the status to answer with, the
// WWW-Authenticate challenge ("" for none) and the reason. The zero Denial
// (Err nil) is a check that passed.
type Denial struct {
	Status    int
	Challenge string
	Err       error
}

// Check checks the request's bearer token (internal/auth) and the scopes
// of rule (nil: any valid token). It needs a gate made by WithAuth.
func (g *Gate) Check(r *http.Request, rule *Rule) (auth.Principal, Denial) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return auth.Principal{}, Denial{http.StatusUnauthorized, g.challenge(""), endpoints.ErrNoToken}
	}
	if len(vals) > 1 {
		return auth.Principal{}, Denial{http.StatusBadRequest, g.challenge("invalid_request"), ErrMultipleAuth}
	}
	raw, err := token.ParseAuthorization(vals[0])
	if err != nil {
		if errors.Is(err, token.ErrNoToken) || !hasBearerScheme(vals[0]) {
			// another scheme (Basic, ...): as if no token was sent
			return auth.Principal{}, Denial{http.StatusUnauthorized, g.challenge(""), endpoints.ErrNoToken}
		}
		return auth.Principal{}, Denial{http.StatusUnauthorized, g.challenge("invalid_token"), err}
	}
	p, err := g.auth.Authenticate(r.Context(), raw)
	if err != nil {
		var ae *auth.Error
		if errors.As(err, &ae) && ae.Code == auth.CodeInvalidToken {
			return auth.Principal{}, Denial{http.StatusUnauthorized, g.challenge("invalid_token"), ae.Err}
		}
		if errors.As(err, &ae) && ae.Code == auth.CodeTemporarilyUnavailable {
			// The store cannot confirm the user's state (a distributed
			// store without quorum or current state): fail closed, and
			// say when to retry. No challenge: the token is not at fault.
			return auth.Principal{}, Denial{http.StatusServiceUnavailable, "", err}
		}
		return auth.Principal{}, Denial{http.StatusInternalServerError, g.challenge(""), err}
	}
	if rule != nil {
		if err := auth.Authorize(p, rule.Scopes); err != nil {
			return auth.Principal{}, Denial{http.StatusForbidden, rule.challenge, auth.ErrInsufficientScope}
		}
	}
	return p, Denial{}
}

// grants is the scope decision, for Explain, with the functions Check
// uses: the scopes a token holding tokenScopes counts with under the
// ceiling, and whether they satisfy rule.
func (g *Gate) grants(tokenScopes scope.Set, rule *Rule) (effective scope.Set, ok bool) {
	effective, _ = auth.UnderCeiling(g.ceiling, tokenScopes, "")
	var need scope.Set
	if rule != nil {
		need = rule.Scopes
	}
	return effective, auth.Authorize(auth.Principal{Scopes: effective}, need) == nil
}

// challenge returns the WWW-Authenticate value for an error code ("" for
// none); the three the gateway uses are built once in New.
func (g *Gate) challenge(code string) string {
	if c, ok := g.challenges[code]; ok {
		return c
	}
	return buildChallenge(g.realm, code, "")
}

// buildChallenge is the one place a WWW-Authenticate value is written
// (RFC 6750 section 3): the realm, then the error code and the scope a
// request lacked, each when not empty.
func buildChallenge(realm, code, scopes string) string {
	c := fmt.Sprintf(`Bearer realm=%q`, realm)
	if code != "" {
		c += fmt.Sprintf(`, error=%q`, code)
	}
	if scopes != "" {
		c += fmt.Sprintf(`, scope=%q`, scopes)
	}
	return c
}

func hasBearerScheme(v string) bool {
	return len(v) >= 6 && strings.EqualFold(v[:6], "bearer") && (len(v) == 6 || v[6] == ' ' || v[6] == '\t')
}

// StripIdentity removes from h the identity headers and the routing
// overrides, in every spelling: whatever happens next, the client never
// speaks for the gateway.
func (g *Gate) StripIdentity(h http.Header) { g.identity.Strip(h) }

// SetIdentity sets the identity headers of p on h.
func (g *Gate) SetIdentity(h http.Header, p auth.Principal) { g.identity.Set(h, p) }

// DropToken removes the bearer token from a request that goes upstream,
// unless forward_token is on: the upstream gets the identity headers, not
// a credential it could replay against the gateway.
func (g *Gate) DropToken(r *http.Request) {
	if !g.forwardToken {
		r.Header.Del("Authorization")
	}
}

// LogDenial logs a refused request at debug level.
func (g *Gate) LogDenial(r *http.Request, status int, err error) {
	if c := g.logger.Check(zap.DebugLevel, "request denied"); c != nil {
		c.Write(
			zap.Int("status", status),
			zap.String("reason", err.Error()),
			zap.String("client_ip", g.clientIP(r)),
			zap.String("method", r.Method),
			zap.String("path", r.URL.Path), // never the query: a token may hide there
		)
	}
}
