// Command caddy is Caddy's own main with the crudauth module plugged in. It
// builds the same program as `xcaddy build --with
// github.com/crudauth/caddy-crudauth`.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// plug in Caddy modules here
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/crudauth/caddy-crudauth/caddymodule"
)

func main() {
	caddycmd.Main()
}
