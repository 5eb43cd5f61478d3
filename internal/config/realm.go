package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/throttle"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// Realm is what the static checks read of a realm's settings, declared in
// the global options or a handler's own.
type Realm struct {
	DB                  string
	Store               bool   // a store module is configured
	Secret              string // as configured, placeholders unresolved
	SigningAlg          string
	KeyPublishDelay     time.Duration
	MaxConcurrentHashes int
	HashQueueTimeout    time.Duration
	Throttle            *throttle.Config // nil: the defaults

	// What Hashing reads besides: argon2id parameters (zero: the
	// default) and the password policy's lengths (zero: the default).
	Argon2Memory, Argon2Time             uint32
	Argon2Threads                        uint8
	PasswordMinLength, PasswordMaxLength int
}

// Check rejects unsafe settings; each message names the field.
func (s *Realm) Check() error {
	if s.DB != "" && s.Store {
		return errors.New("db and store are both set: db PATH is short for a bolt store with that path, set one of them")
	}
	if s.MaxConcurrentHashes < 0 {
		return fmt.Errorf("max_concurrent_hashes: %d must be positive (0 means half the CPUs)", s.MaxConcurrentHashes)
	}
	switch s.SigningAlg {
	case "", token.AlgHS256:
		if s.KeyPublishDelay != 0 {
			return errors.New("key_publish_delay: HS256 has one secret and no key rotation; set signing_alg EdDSA or ES256")
		}
	case token.AlgEdDSA, token.AlgES256:
		if s.Secret != "" {
			return fmt.Errorf("secret is the HS256 key; signing_alg %s keeps its key pair in the store", s.SigningAlg)
		}
		if s.KeyPublishDelay < 0 {
			return errors.New("key_publish_delay must be positive")
		}
	default:
		return fmt.Errorf("signing_alg: %q is not one of HS256, EdDSA, ES256", s.SigningAlg)
	}
	if s.HashQueueTimeout < 0 {
		return errors.New("hash_queue_timeout must be positive")
	}
	if s.HashQueueTimeout > time.Minute {
		return fmt.Errorf("hash_queue_timeout: %s is too long, at most 1m (a login flood would park requests that long)",
			s.HashQueueTimeout)
	}
	return CheckThrottle(s.Throttle)
}

// CheckThrottle rejects nonsense throttle settings (zero values stand for
// the defaults); the message names the field. Nil is the defaults, which
// pass.
func CheckThrottle(c *throttle.Config) error {
	if c == nil {
		return nil
	}
	for _, f := range []named[int]{{"max_failures", c.MaxFailures}, {"user_max_failures", c.UserMaxFailures}, {"ip_max_failures", c.IPMaxFailures}} {
		if f.v < -1 {
			return fmt.Errorf("throttle.%s: %d must be positive, or -1 to disable", f.name, f.v)
		}
	}
	if c.MaxEntries < 0 {
		return fmt.Errorf("throttle.max_entries: %d must be positive", c.MaxEntries)
	}
	for _, f := range []named[time.Duration]{{"window", c.Window}, {"lockout", c.BaseLockout}, {"max_lockout", c.MaxLockout}} {
		if f.v < 0 {
			return fmt.Errorf("throttle.%s: %s must be positive", f.name, f.v)
		}
	}
	lockout, maxLockout := c.BaseLockout, c.MaxLockout
	if lockout == 0 {
		lockout = throttle.DefaultBaseLockout
	}
	if maxLockout == 0 {
		maxLockout = throttle.DefaultMaxLockout
	}
	if maxLockout < lockout {
		return fmt.Errorf("throttle.max_lockout (%s) must not be shorter than throttle.lockout (%s)", maxLockout, lockout)
	}
	return nil
}

// CheckRealmName refuses a realm name other than letters, digits, '-',
// '_' and '.'.
func CheckRealmName(name string) error {
	if name == "" {
		return fmt.Errorf("a realm needs a name")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.", c)) {
			return fmt.Errorf("realm name %q: only letters, digits, '-', '_' and '.' are allowed", name)
		}
	}
	return nil
}
