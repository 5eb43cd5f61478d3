package caddymodule

import (
	"net/http"
	"slices"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/headers"
)

// ForeignIdentityHeaders are headers through which other auth proxies and
// servers tell a backend who is calling; the gateway removes them from
// every request, in every spelling, like its own (see headers.Foreign).
var ForeignIdentityHeaders = headers.Foreign

// identityHeaders are the handler's identity headers (see
// headers.Identity); its strip also removes the routing overrides
// (paths.go).
type identityHeaders struct{ headers.Identity }

func newIdentityHeaders(id, name, scopes string, extra []string) identityHeaders {
	return identityHeaders{headers.NewIdentity(id, name, scopes, slices.Concat(normalizedOverrides, extra))}
}

func (ih *identityHeaders) strip(h http.Header)                 { ih.Strip(h) }
func (ih *identityHeaders) set(h http.Header, p auth.Principal) { ih.Set(h, p) }

// The handler's checks and its refresh cookie, by the names it uses.
var (
	normalizeHeaderName     = headers.Normalize
	checkIdentityHeaderName = headers.CheckIdentityName
	checkHeaderToken        = headers.CheckToken
	checkCookieName         = headers.CheckCookieName
)
