package caddymodule

import (
	"github.com/crudauth/caddy-crudauth/internal/headers"
)

// ForeignIdentityHeaders are headers through which other auth proxies and
// servers tell a backend who is calling; the gateway removes them from
// every request, in every spelling, like its own (see headers.Foreign).
var ForeignIdentityHeaders = headers.Foreign
