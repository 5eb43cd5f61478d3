#!/usr/bin/env bash
# make demo: a throwaway database and user, Caddyfile.example started, the
# recipe's curl flow run and printed request by request, everything stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
caddy=bin/caddy
[ -x "$caddy" ] || go build -o "$caddy" ./cmd/caddy

work=$(mktemp -d)
db=$work/demo.db
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

pw='demo-password-not-secret'
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# show prints the request, then the response status line, the headers that
# matter here and the body, with tokens shortened. The raw body is kept in
# $work/body, so the tokens used later are the ones shown.
short() { sed -E 's/(eyJ[A-Za-z0-9_-]{6})[A-Za-z0-9_.-]+/\1.../g'; }
show() {
	local a line='$ curl'
	for a in "$@"; do
		case $a in
		*[[:space:]\"\']*) line+=" '$a'" ;;
		*) line+=" $a" ;;
		esac
	done
	printf '%s\n' "$line" | short
	curl -sS -i "$@" | tr -d '\r' >"$work/response"
	awk '/^$/ {body=1; next} body' "$work/response" >"$work/body"
	awk '
		NR==1 {print; next}
		/^$/ {body=1; next}
		!body && tolower($0) ~ /^(www-authenticate|set-cookie|cache-control|pragma|content-type|allow|retry-after):/ {print}
		body {print}' "$work/response" | short
}
# json prints a string field of the last response body.
json() { sed -E 's/.*"'"$1"'":"([^"]*)".*/\1/' "$work/body"; }

start() {
	CRUDAUTH_DB=$db "$caddy" run --config Caddyfile.example --adapter caddyfile >"$work/caddy.log" 2>&1 &
	pid=$!
	for _ in $(seq 50); do
		curl -s -o /dev/null localhost:8082/public/ && return 0
		sleep 0.1
	done
	echo "caddy did not start:"; cat "$work/caddy.log"; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# Another Caddy on these ports (make run, say) would answer the demo's
# requests with its own users: refuse to start rather than talk to it.
for port in 2019 8080 8081 8082; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "make demo: port $port is in use (is 'make run' still up? stop it with Ctrl-C or 'bin/caddy stop'), so the demo would talk to it: stopping" >&2
		exit 1
	fi
done

step "create a user (the CLI works on the file while no Caddy holds it)"
echo "\$ echo ... | caddy crudauth user add alice --db $db --password-stdin --scopes 'me:read reports:read'"
echo "$pw" | "$caddy" crudauth user add alice --db "$db" --password-stdin --scopes 'me:read reports:read'

step "start Caddyfile.example (gateway :8080 cookie mode, :8082 body mode, backend :8081)"
start
echo "started"

step "no token: 401 and a Bearer challenge; the backend never sees the request"
show localhost:8082/me

step "a public route needs no token"
show localhost:8082/public/hello

step "log in (body mode): the refresh token comes back in the JSON body"
show localhost:8082/token -d username=alice -d password="$pw"
at=$(json access_token)
rt=$(json refresh_token)

step "call the backend with the token: it sees who is calling"
show localhost:8082/me -H "Authorization: Bearer $at"

step "the default scope is me:read; /reports needs reports:read: 403 insufficient_scope"
show localhost:8082/reports/q3 -H "Authorization: Bearer $at"

step "ask for reports:read and admin: admin is not among alice's scopes, so only reports:read is granted"
show localhost:8082/token -d username=alice -d password="$pw" -d 'scope=reports:read admin'
at2=$(json access_token)
show localhost:8082/reports/q3 -H "Authorization: Bearer $at2"

step "refresh (body mode): the client sends the refresh token it stored, and gets its successor (the one sent is spent)"
show -X POST localhost:8082/refresh -H 'Content-Type: application/json' -d "{\"refresh_token\":\"$rt\"}"
rt=$(json refresh_token)

step "log in (cookie mode): the refresh token is an HttpOnly cookie, not in the body"
show -c "$work/jar" localhost:8080/token -d username=alice -d password="$pw"

step "refresh (cookie mode): the cookie rides along on its own, and is replaced by its successor"
show -b "$work/jar" -c "$work/jar" -X POST localhost:8080/refresh

step "log out (cookie mode): the session ends and the cookie is cleared; a refresh then has nothing to send"
show -b "$work/jar" -c "$work/jar" -X POST localhost:8080/logout
show -b "$work/jar" -X POST localhost:8080/refresh

step "a cross-site page cannot use the cookie"
show -b "$work/jar" -X POST localhost:8080/refresh -H 'Origin: https://evil.example'

step "password reset while the gateway runs (the CLI goes through the admin API)"
echo "\$ echo ... | caddy crudauth user passwd alice --db $db --password-stdin --verbose"
echo "new-$pw" | "$caddy" crudauth user passwd alice --db "$db" --password-stdin --verbose

step "every token issued before the reset is refused at once"
show localhost:8082/me -H "Authorization: Bearer $at"
show -X POST localhost:8082/refresh -H 'Content-Type: application/json' -d "{\"refresh_token\":\"$rt\"}"

step "the new password works"
show localhost:8082/token -d username=alice -d password="new-$pw"

stop
echo
echo "demo done; everything it started is stopped and $work is removed"
