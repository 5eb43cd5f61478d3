package etcd

import (
	"github.com/crudauth/caddy-crudauth/internal/throttle"
	"github.com/crudauth/caddy-crudauth/internal/throttle/etcdthrottle"
)

// SharedThrottle returns a login throttle that keeps its counters in the
// cluster, under this store's prefix, on this store's connection: every
// gateway on the cluster counts the same failures, so guesses spread over
// several gateways lock an account on all of them. Calls are bounded by
// the store's DialTimeout.
func (s *Store) SharedThrottle(cfg throttle.Config) throttle.Limiter {
	return etcdthrottle.New(s.cli, s.o.Prefix, cfg, s.o.DialTimeout)
}
