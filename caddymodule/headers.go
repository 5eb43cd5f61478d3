package caddymodule

import (
	"github.com/crudauth/caddy-crudauth/internal/gate"
	"github.com/crudauth/caddy-crudauth/internal/headers"
)

// ForeignIdentityHeaders are headers through which other auth proxies and
// servers tell a backend who is calling; the gateway removes them from
// every request, in every spelling, like its own (see headers.Foreign).
var ForeignIdentityHeaders = headers.Foreign

// routingOverrides are the method and path override headers the gateway
// removes from every request (gate.RoutingOverrides).
var routingOverrides = gate.RoutingOverrides

// The handler's checks and its refresh cookie, by the names it uses.
var (
	normalizeHeaderName     = headers.Normalize
	checkIdentityHeaderName = headers.CheckIdentityName
	checkHeaderToken        = headers.CheckToken
	checkCookieName         = headers.CheckCookieName
)
