package config

import (
	"fmt"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/password"
)

// DefaultHashQueueTimeout is how long a login waits for a hashing slot
// when hash_queue_timeout is not set.
const DefaultHashQueueTimeout = 2 * time.Second

// Hashing is how a realm hashes and checks new passwords.
type Hashing struct {
	Hasher *password.Hasher
	Limit  *password.Limiter // the hashing cap and its queue
	Policy password.Policy
}

// Hashing builds the realm's password hasher (the argon2 parameters given
// replace the defaults), its hashing cap and its password policy.
func (s *Realm) Hashing() (Hashing, error) {
	params := password.DefaultParams
	if s.Argon2Memory != 0 {
		params.Memory = s.Argon2Memory
	}
	if s.Argon2Time != 0 {
		params.Time = s.Argon2Time
	}
	if s.Argon2Threads != 0 {
		params.Threads = s.Argon2Threads
	}
	hasher, err := password.NewHasher(params)
	if err != nil {
		return Hashing{}, fmt.Errorf("argon2: %w", err)
	}
	wait := s.HashQueueTimeout
	if wait == 0 {
		wait = DefaultHashQueueTimeout
	}
	policy := password.Policy{MinLength: s.PasswordMinLength, MaxLength: s.PasswordMaxLength}
	if err := policy.Validate(); err != nil {
		return Hashing{}, fmt.Errorf("password_min_length/password_max_length: %w", err)
	}
	return Hashing{Hasher: hasher, Limit: password.NewLimiter(s.MaxConcurrentHashes, wait), Policy: policy}, nil
}
