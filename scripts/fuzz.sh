#!/usr/bin/env bash
# make fuzz: runs every Go fuzz target in the repository for DURATION each
# (default 10m), one after another, and prints one summary line per target
# (start, target, command, wall time including the build, execs, result).
# Usage:
#   scripts/fuzz.sh [DURATION] [TARGET_REGEX]
# TARGET_REGEX filters on "<package dir> <target>", e.g. 'token' or
# 'FuzzCaddyfile'. Set FUZZ_LOG=file to also append the summary there
# (docs/dev/fuzzing.md records the runs made that way).
# A crasher makes `go test` fail; the Go toolchain writes it to
# <package>/testdata/fuzz/<Target>/. Keep it there: the seed corpus run by
# `make test` then replays it as a regression test.
set -uo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10m}
filter=${2:-.}
log=${FUZZ_LOG:-}
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
status=0
# "./path/to/file_test.go:NN:func FuzzX(" -> "./path/to FuzzX"
targets=$(grep -rn --include='*_test.go' '^func Fuzz' . |
	sed -E 's|^(.*)/[^/]+_test\.go:[0-9]+:func (Fuzz[A-Za-z0-9_]+)\(.*|\1 \2|' | sort -u | grep -E -- "$filter")
if [ -z "$targets" ]; then
	echo "no fuzz target matches $filter" >&2
	exit 1
fi
while read -r pkg target; do
	cmd="go test -run=^\$ -fuzz=^${target}\$ -fuzztime=${duration} -parallel=1 ${pkg}"
	echo "== $cmd"
	start=$(date -u +%s)
	out=$(mktemp)
	go test -run='^$' -fuzz="^${target}\$" -fuzztime="$duration" -parallel=1 "$pkg" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	end=$(date -u +%s)
	execs=$(grep -oE 'execs: [0-9]+' "$out" | tail -1 | awk '{print $2}')
	result=PASS
	if [ "$rc" -ne 0 ]; then
		if ! grep -q 'Failing input written' "$out" && tail -n 5 "$out" | grep -q '^    context deadline exceeded$'; then
			# Go's fuzz coordinator can report its own -fuzztime deadline
			# as a failure (go.dev/issue/75804, fixed in Go 1.27): no
			# input failed and none was written, so this is not a find.
			result="PASS (go reported its own deadline, go.dev/issue/75804; no failing input)"
		else
			result="FAIL (rc=$rc)"
			status=1
		fi
	fi
	printf '%s\t%s\t%s\t%ss\texecs=%s\t%s\n' "$(date -u -d @"$start" +%FT%TZ)" "$target" "$cmd" \
		"$((end - start))" "${execs:-?}" "$result" >>"$summary"
	rm -f "$out"
done <<<"$targets"
echo
echo "== summary"
cat "$summary"
[ -z "$log" ] || cat "$summary" >>"$log"
exit $status
