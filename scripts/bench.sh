#!/usr/bin/env bash
# make bench / make bench-quick: in-process Go benchmarks, the end-to-end
# wrk comparison (plain reverse_proxy, the gateway, forward_auth) and the
# etcd phase (three gateways on a three-member etcd cluster against one on
# bbolt), written to BENCHMARKS.md. Usage: scripts/bench.sh full|quick
#
# The end-to-end cases run twice: with every compared process at GOGC=off
# and GOMEMLIMIT=$BENCH_GOMEMLIMIT (300MiB unless set; the headline
# figures), then with Go's default collector. docs/dev/benchmarks.md says
# why and what the figures mean.
#
# Everything it starts (Caddy processes, the upstream, the auth service, wrk,
# the etcd members) runs in one process group per phase, killed on any
# exit. All traffic goes to 127.0.0.1. BENCH_KEEP=1 keeps the work
# directory (logs, raw wrk output, e2e.json, scaleout.json) and prints
# where it is.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-full}
case "$mode" in
full) benchtime=500ms count=3 ;;
quick) benchtime=100ms count=3 ;;
*)
	echo "usage: $0 full|quick" >&2
	exit 2
	;;
esac
GO=${GO:-go}
started=$(date +%s)

work=$(mktemp -d "${TMPDIR:-/tmp}/crudauth-bench.XXXXXX")
e2e_pid=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$e2e_pid" ]; then
		# The e2e driver and everything it started share its process group.
		kill -TERM -- "-$e2e_pid" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 -- "-$e2e_pid" 2>/dev/null || break
			sleep 0.5
		done
		kill -KILL -- "-$e2e_pid" 2>/dev/null || true
	fi
	if [ "${BENCH_KEEP:-}" = 1 ]; then
		echo "bench: work directory kept: $work" >&2
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

say() { printf '\n== %s\n' "$*" >&2; }
commands=$work/commands.txt
run() { # run CMD...: log the command for the report, then run it
	printf '%s\n' "$*" >>"$commands"
	"$@"
}

# wrk and etcd from Debian when missing (fresh machines, CI).
missing=
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v etcd >/dev/null 2>&1 || missing="$missing etcd-server"
if [ -n "$missing" ]; then
	say "installing$missing"
	sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq
	# shellcheck disable=SC2086 # one word per package
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

# build OUT PKG: go build, skipped when OUT is newer than every Go source,
# every embedded wrk script and go.mod/go.sum (linking takes a while on a
# busy 2-core machine).
build() {
	if [ -x "$1" ] && [ -z "$(find . -path ./bin -prune -o \( -name '*.go' -o -name '*.lua' -o -name go.mod -o -name go.sum \) -newer "$1" -print -quit)" ]; then
		echo "$1 is up to date" >&2
		return
	fi
	run "$GO" build -o "$1" "$2"
}
say "building bin/caddy and the bench helper"
build bin/caddy ./cmd/caddy
build bin/benchtool ./internal/cmd/benchtool

say "Go benchmarks ($mode)"
export TMPDIR=$work # the benchmarks' temp databases go away with $work
gobench=$work/gobench.txt
: >"$gobench"
gb() { # gb PACKAGE REGEX [COUNT]
	run "$GO" test -run '^$' -bench "$2" -benchmem -benchtime="$benchtime" -count="${3:-$count}" "$1" 2>&1 |
		tee -a "$gobench" >&2
}
# The gateway's benchmarks and their baselines: the whole set $count times
# over (not each benchmark $count times in a row), so that a burst of load
# from the machine's other jobs hits a baseline as often as what it is the
# baseline of. The test binary is cached after the first pass.
for _ in $(seq "$count"); do
	gb ./caddymodule/ '^Benchmark(ServeHTTP|TokenEndpoint|RefreshEndpoint|Baseline)' 1
done
if [ "$mode" = full ]; then
	count=1 benchtime=500ms # context: the store, the token package, the hash
	gb ./internal/token/ '^Benchmark(VerifyAccess|VerifyRefresh|IssueAccess|ParseAuthorization|GolangJWTParse|CacheMissPut)'
	gb ./internal/store/bolt/ '^Benchmark(AuthState|GetUserByName|UpdateUser|CreateUser)'
	gb ./internal/store/etcd/ '^BenchmarkAuthState$' # the same read on etcd: the watch-fed cache
	gb ./internal/password/ '^Benchmark(Hash|Verify)$'
fi

say "end-to-end ($mode): wrk against 127.0.0.1"
gomemlimit=${BENCH_GOMEMLIMIT:-300MiB}
printf '%s\n' "bin/benchtool e2e -mode $mode -caddy bin/caddy -gomemlimit $gomemlimit -out <tmpdir>" >>"$commands"
# A session of its own, so that the whole group can be killed at once; in
# the background, so that this shell can act on signals while it runs.
setsid bin/benchtool e2e -mode "$mode" -caddy bin/caddy -gomemlimit "$gomemlimit" -out "$work" &
e2e_pid=$!
wait "$e2e_pid"
e2e_pid=

say "etcd phase ($mode): three gateways on a three-member etcd cluster, one on bbolt"
printf '%s\n' "bin/benchtool scaleout -mode $mode -caddy bin/caddy -gomemlimit $gomemlimit ${BENCH_ETCD_BIG_USERS:+-big-users $BENCH_ETCD_BIG_USERS }-out <tmpdir>" >>"$commands"
phase_started=$(date +%s)
# Its own session too: the etcd members are its children, killed with the
# group (and by the tool itself on any exit).
# BENCH_ETCD_BIG_USERS sets the size of the new gateway's prefix (loading
# a million users takes minutes on a busy two-core machine).
setsid bin/benchtool scaleout -mode "$mode" -caddy bin/caddy -gomemlimit "$gomemlimit" \
	${BENCH_ETCD_BIG_USERS:+-big-users "$BENCH_ETCD_BIG_USERS"} -out "$work" &
e2e_pid=$!
wait "$e2e_pid"
e2e_pid=
say "etcd phase done in $(($(date +%s) - phase_started)) s"

say "writing BENCHMARKS.md"
{
	echo "nproc: $(nproc)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "kernel: $(uname -srm)"
	echo "go: $("$GO" version)"
	echo "wrk: $(wrk -v 2>&1 | head -1)"
	echo "caddy: $(bin/caddy version)"
	if git rev-parse --git-dir >/dev/null 2>&1; then
		echo "code: commit $(git rev-parse --short HEAD), $(git status --porcelain | wc -l) uncommitted paths"
	fi
} >"$work/machine.txt"
minutes=$(awk -v s="$(($(date +%s) - started))" 'BEGIN { printf "%.1f", s / 60 }')
bin/benchtool report -mode "$mode" -e2e "$work/e2e.json" -scaleout "$work/scaleout.json" -gobench "$gobench" \
	-machine "$work/machine.txt" -commands "$commands" -minutes "$minutes" -out BENCHMARKS.md
say "done in $minutes min: BENCHMARKS.md"
