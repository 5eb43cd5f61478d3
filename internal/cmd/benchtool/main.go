// Command benchtool is the helper of scripts/bench.sh (`make bench`,
// `make bench-quick`). It is not part of the gateway.
//
//	benchtool e2e -mode quick|full -caddy bin/caddy [-gomemlimit 300MiB] -out DIR
//	    the end-to-end comparison: fills the databases, mints tokens,
//	    starts the upstream, the auth service and the Caddy processes,
//	    drives them with wrk under each GC setting and writes DIR/e2e.json
//	benchtool scaleout -mode quick|full -caddy bin/caddy [-gomemlimit 300MiB] -out DIR
//	    the etcd phase: a three-member etcd cluster, three gateways on it
//	    and one on bbolt as the baseline; writes DIR/scaleout.json
//	benchtool report -e2e FILE -gobench FILE [-scaleout FILE] -mode M -machine FILE -commands FILE -out BENCHMARKS.md
//	    writes the report
//	benchtool upstream -addr 127.0.0.1:PORT
//	    the tiny upstream: 200 "ok" to everything
//	benchtool fwdauth -addr 127.0.0.1:PORT -secret KEY
//	    the forward_auth reference service: checks the bearer token with
//	    the gateway's own token package and returns the identity headers
//	benchtool fill -db FILE -n N -ids FILE
//	    a database of N users (bench0000000, ...), their IDs in FILE
//
// Every server listens on 127.0.0.1 only. What it measures and why is in
// docs/dev/benchmarks.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool e2e|scaleout|report|upstream|fwdauth|fill [flags]")
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "e2e":
		err = runE2E(args)
	case "scaleout":
		err = runScaleout(args)
	case "report":
		err = runReport(args)
	case "upstream":
		err = runUpstream(args)
	case "fwdauth":
		err = runFwdAuth(args)
	case "fill":
		err = runFill(args)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}
