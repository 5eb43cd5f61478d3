package caddymodule

import (
	"encoding/json"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/throttle"
)

// ThrottleConfig tunes login throttling on token_path. Failed logins are
// counted per (client IP, username), per username and per client IP; a key that collects its limit of failures
// within `window` is locked for `lockout`, and each further round doubles
// the lockout up to `max_lockout`. While locked, token_path answers 429 with
// Retry-After before any password is hashed, with the same body whether or
// not the password was right. A successful login clears the (IP, username)
// counters. Refresh tokens keep working during a lockout. The client IP is
// Caddy's client_ip (set `trusted_proxies` in the server options to believe
// X-Forwarded-For from a proxy), never a header taken at face value.
//
// Counters are kept in memory, shared by the handlers on one database with
// the same settings, and bounded by `max_entries`. A quarter of that is kept
// for keys that are locked or remember their escalation: a flood of failures
// under made-up addresses and usernames evicts only the least recently used
// counters of keys that are not locked, never a lockout. Lockouts beyond
// that quarter are kept in a fixed array that errs toward locking (see
// internal/throttle.Memory), so memory stays bounded whatever the attack.
//
// Caddyfile: `throttle off` or `throttle { <option> <value> ... }`, with
// the options and defaults of the throttle table in README.md's Caddyfile
// reference.
//
// A limit of -1 disables that key.
type ThrottleConfig struct {
	// Turns throttling off. Default: on.
	Off bool `json:"off,omitempty"`
	// Failures of one (client IP, username) pair within window that lock
	// the pair. Default: 5. -1 disables this key.
	MaxFailures int `json:"max_failures,omitempty"`
	// Failures for one username from any IP within window that lock the
	// username for every client (distributed guessing). Default: 10.
	// -1 disables this key.
	UserMaxFailures int `json:"user_max_failures,omitempty"`
	// Failures from one IP for any usernames within window that lock the
	// IP (password spraying). Default: 20, well above a few typos behind
	// one NAT. -1 disables this key.
	IPMaxFailures int `json:"ip_max_failures,omitempty"`
	// The counting window. Default: 1m.
	Window caddy.Duration `json:"window,omitempty"`
	// The first lockout; each further round doubles it. Default: 1m.
	Lockout caddy.Duration `json:"lockout,omitempty"`
	// The longest lockout. Default: 1h.
	MaxLockout caddy.Duration `json:"max_lockout,omitempty"`
	// Most keys held in memory (each failing (IP, username) takes up to
	// three); a quarter of them is kept for locked keys, which a flood of
	// made-up keys cannot evict. Default: 100000 (at most about 50 MB).
	MaxEntries int `json:"max_entries,omitempty"`
}

// values are the settings as internal/throttle takes them (and
// internal/config checks them); nil for nil.
func (c *ThrottleConfig) values() *throttle.Config {
	if c == nil {
		return nil
	}
	return &throttle.Config{
		MaxFailures:     c.MaxFailures,
		UserMaxFailures: c.UserMaxFailures,
		IPMaxFailures:   c.IPMaxFailures,
		Window:          time.Duration(c.Window),
		BaseLockout:     time.Duration(c.Lockout),
		MaxLockout:      time.Duration(c.MaxLockout),
		MaxEntries:      c.MaxEntries,
	}
}

// throttlePool shares one set of login counters among every handler that
// uses the same database with the same throttle settings: the sites of one
// Caddy that share a user store share one budget (an attacker gains nothing
// by alternating between them), and a config reload keeps the counts.
var throttlePool = caddy.NewUsagePool()

type sharedThrottle struct{ throttle.Limiter }

func (sharedThrottle) Destruct() error { return nil }

// acquireThrottle returns the shared limiter for dbKey and c, and the pool
// key to release it with; nil and "" when throttling is off.
func acquireThrottle(dbKey string, st store.Store, c *ThrottleConfig) (throttle.Limiter, string, error) {
	if c == nil {
		c = &ThrottleConfig{}
	}
	if c.Off {
		return nil, "", nil
	}
	settings, err := json.Marshal(c)
	if err != nil {
		return nil, "", err
	}
	key := dbKey + "\x00" + string(settings)
	val, _, err := throttlePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		cfg := *c.values()
		// A store shared by several gateways (etcd) shares the throttle
		// too: guesses spread over the gateways count together.
		if sh, ok := st.(sharedThrottler); ok {
			return sharedThrottle{sh.SharedThrottle(cfg)}, nil
		}
		return sharedThrottle{throttle.NewMemory(cfg)}, nil
	})
	if err != nil {
		return nil, "", err
	}
	return val.(sharedThrottle).Limiter, key, nil
}

// sharedThrottler is a store whose backing state several gateways share,
// and that keeps the login throttle's counters there too.
type sharedThrottler interface {
	SharedThrottle(throttle.Config) throttle.Limiter
}

// loginHashes counts the password hashes that token_path logins run, for
// the attack suite's proof that a refused login (throttled, too busy,
// malformed) never reaches the hash. Two atomics per login: negligible next
// to an argon2id hash.
var loginHashes struct {
	started, inFlight, peak atomic.Int64
}

// beginLoginHash marks a login's hash as started; call the result when it
// is done.
func beginLoginHash() (done func()) {
	loginHashes.started.Add(1)
	n := loginHashes.inFlight.Add(1)
	for {
		p := loginHashes.peak.Load()
		if n <= p || loginHashes.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return func() { loginHashes.inFlight.Add(-1) }
}

// parseThrottle parses `throttle off` or a `throttle { ... }` block.
func (s *RealmSettings) parseThrottle(d *caddyfile.Dispenser, _ string) error {
	c := &ThrottleConfig{}
	s.Throttle = c
	args := d.RemainingArgs()
	switch {
	case len(args) == 1 && args[0] == "off":
		c.Off = true
		if d.NextBlock(d.Nesting()) {
			return d.Err("throttle off takes no block")
		}
		return nil
	case len(args) > 0:
		return d.ArgErr()
	}
	return c.subdirectives().parseBlock(d, "throttle ", unrecognizedOneArg(d, "unrecognized throttle option %q"))
}

// subdirectives are the options of a throttle block.
func (c *ThrottleConfig) subdirectives() subdirectives {
	// limit parses a failure limit of at least lowest, never 0 (-1
	// disables a key).
	limit := func(p *int, lowest int) parseFn {
		return oneArg(func(d *caddyfile.Dispenser, name, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < lowest || n == 0 {
				if lowest > 0 { // max_entries: -1 would disable nothing
					return d.Errf("throttle %s: %q is not a positive number", name, v)
				}
				return d.Errf("throttle %s: %q is not a positive number (or -1 to disable)", name, v)
			}
			*p = n
			return nil
		})
	}
	duration := func(p *caddy.Duration) parseFn {
		return func(d *caddyfile.Dispenser, name string) error { return durationArg(p)(d, "throttle "+name) }
	}
	return subdirectives{
		"max_failures":      limit(&c.MaxFailures, -1),
		"user_max_failures": limit(&c.UserMaxFailures, -1),
		"ip_max_failures":   limit(&c.IPMaxFailures, -1),
		"max_entries":       limit(&c.MaxEntries, 1),
		"window":            duration(&c.Window),
		"lockout":           duration(&c.Lockout),
		"max_lockout":       duration(&c.MaxLockout),
	}
}
