// Package crudauth is caddy-crudauth: a Caddy v2 module that turns Caddy into
// a bearer-token auth gateway. Importing it plugs the module into Caddy, so
// that `xcaddy build --with github.com/crudauth/caddy-crudauth` works; the
// code lives in package caddymodule and the packages under internal/.
package crudauth

import (
	// plug in the handler, the Caddyfile directive and the CLI commands
	_ "github.com/crudauth/caddy-crudauth/caddymodule"
)
