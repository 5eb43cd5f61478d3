#!/usr/bin/env bash
# Creates the demo user alice in the example database on first run, so that
# `make run` gives a gateway one can log in to straight away. The password is
# a demo value printed here on purpose; use `caddy crudauth user passwd` for
# anything that is not a demo.
set -euo pipefail
caddy=$1 db=$2
mkdir -p -m 700 "$(dirname "$db")"
if "$caddy" crudauth user show alice --db "$db" >/dev/null 2>&1; then
	exit 0
fi
printf '%s\n' 'alice-demo-password' | "$caddy" crudauth user add alice --db "$db" --password-stdin \
	--scopes "me:read reports:read reports:write"
echo "demo user: alice / alice-demo-password (scopes me:read reports:read reports:write)"
echo "log in:    curl -s localhost:8082/token -d username=alice -d password=alice-demo-password"
