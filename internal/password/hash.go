// Package password hashes and verifies user passwords, enforces the password
// policy and caps how many hashes run at once.
//
// New hashes are argon2id (RFC 9106) in the PHC string format, with the OWASP
// Password Storage Cheat Sheet parameters as the default and the floor.
// Verification also accepts bcrypt hashes, so that htpasswd files and Caddy
// basic_auth hashes can be imported; Verify then asks the caller to rehash
// with argon2id on the next successful login.
//
// A stored hash is data, not configuration: Verify refuses one that asks for
// more work than a set ceiling before spending anything on it, so a corrupt
// or planted record cannot make one login allocate gigabytes or run for
// minutes.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Algorithm names returned by Algorithm.
const (
	AlgArgon2id = "argon2id"
	AlgBcrypt   = "bcrypt"
)

// Ceilings for Params.Validate. Anything above them is a configuration
// mistake, not a security choice.
const (
	MaxMemory  = 4 << 20 // KiB (4 GiB)
	MaxTime    = 100
	MaxThreads = 64
	MaxKeyLen  = 1024 // bytes
	MaxSaltLen = 1024 // bytes
)

// Ceilings for hashes read from storage. A stored hash may ask for up to
// these, or up to the Hasher's own parameters when those are larger (so a
// Hasher can always verify what it produced). verifyMaxWork bounds
// memory*time: 1 GiB of memory traffic, around a second of CPU, whereas the
// OWASP parameters need 38 MiB.
const (
	verifyMaxMemory     = 256 << 10 // KiB (256 MiB)
	verifyMaxTime       = 10
	verifyMaxWork       = 1 << 20 // KiB*passes
	verifyMaxBcryptCost = 16      // ~4s; Caddy's hash-password uses 14
	minStoredSaltLen    = 8       // RFC 9106 section 3.1 minimum
	maxEncodedLen       = 4096    // longer than any hash within the ceilings
	bcryptMaxPassword   = 72      // bcrypt ignores bytes past 72
)

// ErrMalformedHash is wrapped by every error about a stored hash that cannot
// be parsed, uses an unknown algorithm, or asks for parameters outside the
// accepted bounds.
var ErrMalformedHash = errors.New("malformed password hash")

var errNotInitialized = errors.New("password hasher not initialized: use NewHasher")

// Params are the argon2id parameters for new hashes.
type Params struct {
	// Memory is the memory cost in KiB.
	Memory uint32
	// Time is the number of passes over the memory.
	Time uint32
	// Threads is the degree of parallelism.
	Threads uint8
	// KeyLen is the length of the derived key in bytes.
	KeyLen uint32
	// SaltLen is the length of the random salt in bytes.
	SaltLen uint32
}

// DefaultParams are the OWASP Password Storage Cheat Sheet argon2id
// parameters: m=19456 (19 MiB), t=2, p=1, with a 32-byte key and a 16-byte
// salt.
var DefaultParams = Params{Memory: 19456, Time: 2, Threads: 1, KeyLen: 32, SaltLen: 16}

// FloorParams are the weakest parameters Validate accepts: the OWASP
// minimum for m, t and p, and 16 bytes of key and salt.
var FloorParams = Params{Memory: 19456, Time: 2, Threads: 1, KeyLen: 16, SaltLen: 16}

// Validate refuses parameters below FloorParams or above the Max ceilings.
// The message names the offending field.
func (p Params) Validate() error {
	switch {
	case p.Memory < FloorParams.Memory:
		return fmt.Errorf("memory must be at least %d KiB (owasp minimum), got %d", FloorParams.Memory, p.Memory)
	case p.Memory > MaxMemory:
		return fmt.Errorf("memory must be at most %d KiB, got %d", MaxMemory, p.Memory)
	case p.Time < FloorParams.Time:
		return fmt.Errorf("time must be at least %d (owasp minimum), got %d", FloorParams.Time, p.Time)
	case p.Time > MaxTime:
		return fmt.Errorf("time must be at most %d, got %d", MaxTime, p.Time)
	case p.Threads < FloorParams.Threads:
		return fmt.Errorf("threads must be at least %d, got %d", FloorParams.Threads, p.Threads)
	case p.Threads > MaxThreads:
		return fmt.Errorf("threads must be at most %d, got %d", MaxThreads, p.Threads)
	case p.KeyLen < FloorParams.KeyLen:
		return fmt.Errorf("key_len must be at least %d bytes, got %d", FloorParams.KeyLen, p.KeyLen)
	case p.KeyLen > MaxKeyLen:
		return fmt.Errorf("key_len must be at most %d bytes, got %d", MaxKeyLen, p.KeyLen)
	case p.SaltLen < FloorParams.SaltLen:
		return fmt.Errorf("salt_len must be at least %d bytes, got %d", FloorParams.SaltLen, p.SaltLen)
	case p.SaltLen > MaxSaltLen:
		return fmt.Errorf("salt_len must be at most %d bytes, got %d", MaxSaltLen, p.SaltLen)
	}
	return nil
}

// limits bound what a stored hash may ask for.
type limits struct {
	maxMemory     uint32 // KiB
	maxTime       uint32
	maxWork       uint64 // memory*time
	maxBcryptCost int
}

func limitsFor(p Params) limits {
	return limits{
		maxMemory:     max(verifyMaxMemory, p.Memory),
		maxTime:       max(verifyMaxTime, p.Time),
		maxWork:       max(verifyMaxWork, uint64(p.Memory)*uint64(p.Time)),
		maxBcryptCost: verifyMaxBcryptCost,
	}
}

// defaultLimits are used by IsHash and Algorithm.
var defaultLimits = limitsFor(DefaultParams)

// Hasher hashes with one set of argon2id parameters and verifies argon2id
// and bcrypt hashes. It is immutable and safe for concurrent use. The zero
// value is not usable: build one with NewHasher.
//
// Argon2id needs Params.Memory KiB of working memory per hash (19 MiB with
// DefaultParams); golang.org/x/crypto/argon2 allocates it for every hash and
// leaves it to the garbage collector. The Limiter bounds how many such
// buffers are live at once.
type Hasher struct {
	params Params
	limits limits
	// dummy is an argon2id hash of a random password made with params, for
	// VerifyDummy.
	dummy string
	// observe, when set, is told how long each hash computation took (see
	// WithObserver).
	observe func(time.Duration)
}

// WithObserver returns a copy of h that calls fn with the duration of every
// hash it computes (Hash, Verify, VerifyDummy), for metrics. fn must be
// cheap and safe for concurrent use.
func (h *Hasher) WithObserver(fn func(time.Duration)) *Hasher {
	c := *h
	c.observe = fn
	return &c
}

// timed runs the hash computation f, reporting its duration to the observer.
func (h *Hasher) timed(f func()) {
	if h.observe == nil {
		f()
		return
	}
	start := time.Now()
	f()
	h.observe(time.Since(start))
}

// argon2idKey is the argon2id key of pw and salt with the parameters p.
func argon2idKey(pw, salt []byte, p Params) []byte {
	return argon2.IDKey(pw, salt, p.Time, p.Memory, p.Threads, p.KeyLen)
}

// NewHasher validates p and returns a Hasher. It computes one hash (of a
// random password, for VerifyDummy), so it costs as much as a Hash call.
func NewHasher(p Params) (*Hasher, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	h := &Hasher{params: p, limits: limitsFor(p)}
	dummy, err := h.hash(rand.Text())
	if err != nil {
		return nil, err
	}
	h.dummy = dummy
	return h, nil
}

// Params returns the parameters h uses for new hashes.
func (h *Hasher) Params() Params { return h.params }

// Hash returns the argon2id PHC string of pw with a fresh random salt:
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>, both in unpadded standard
// base64. It refuses a password longer than MaxBytes (it never truncates);
// length and content rules are Policy's job.
func (h *Hasher) Hash(pw string) (string, error) {
	if h == nil || h.dummy == "" {
		return "", errNotInitialized
	}
	if len(pw) > MaxBytes {
		return "", fmt.Errorf("%w: more than %d bytes", ErrTooLong, MaxBytes)
	}
	return h.hash(pw)
}

func (h *Hasher) hash(pw string) (string, error) {
	p := h.params
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("generating salt: %w", err)
	}
	var key []byte
	h.timed(func() { key = argon2idKey([]byte(pw), salt, p) })
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt),
		base64.RawStdEncoding.EncodeToString(key)), nil
}

// Verify reports whether pw matches the stored hash encoded, which may be an
// argon2id PHC string or a bcrypt hash ($2a$, $2b$, $2y$).
//
// needsRehash is true only when ok is true and the hash is not argon2id with
// exactly h's parameters: the caller should then store h.Hash(pw).
//
// err wraps ErrMalformedHash when encoded cannot be parsed or asks for more
// work than the ceilings allow; ok is then false and no hashing is done. A
// wrong password is ok=false with a nil error. So is a password longer than
// MaxBytes, or longer than 72 bytes against bcrypt (bcrypt would compare
// only its first 72 bytes): both are refused without hashing, whatever the
// user, so the shortcut reveals nothing about who exists.
//
// A hash cheaper than the dummy (VerifyDummy) is padded with the dummy's
// work. Logins, which must also hide which users exist from a store that
// holds slower hashes than h's own, use VerifyUnpadded and Pad instead.
func (h *Hasher) Verify(encoded, pw string) (ok, needsRehash bool, err error) {
	ok, needsRehash, class, err := h.VerifyUnpadded(encoded, pw)
	if err != nil {
		return ok, needsRehash, err
	}
	c, _ := parseClass(class)
	switch {
	case class == "" && algorithmPrefix(encoded) == AlgBcrypt,
		c.alg == AlgArgon2id && (c.params.Memory < h.params.Memory || c.params.Time < h.params.Time),
		c.alg == AlgBcrypt && c.cost < bcryptPadBelowCost:
		// An imported hash weaker than ours verifies faster than an
		// unknown user's dummy hash, and a bcrypt hash refuses a password
		// past 72 bytes without hashing: pad so timing tells nothing.
		h.VerifyDummy(pw)
	}
	return ok, needsRehash, nil
}

// VerifyUnpadded is Verify without the padding: it returns, besides Verify's
// results, the class (see Class) of the hash it computed, or "" when it
// computed none (a malformed hash, a password refused without hashing).
// Pass that class to Pad when the login fails.
func (h *Hasher) VerifyUnpadded(encoded, pw string) (ok, needsRehash bool, class string, err error) {
	if h == nil || h.dummy == "" {
		return false, false, "", errNotInitialized
	}
	switch algorithmPrefix(encoded) {
	case AlgArgon2id:
		a, err := parseArgon2id(encoded, h.limits)
		if err != nil {
			return false, false, "", err
		}
		if len(pw) > MaxBytes {
			return false, false, "", nil
		}
		var key []byte
		h.timed(func() { key = argon2idKey([]byte(pw), a.salt, a.params) })
		class = argon2idClass(a.params)
		if subtle.ConstantTimeCompare(key, a.key) != 1 {
			return false, false, class, nil
		}
		return true, a.params != h.params, class, nil
	case AlgBcrypt:
		cost, err := parseBcrypt(encoded, h.limits)
		if err != nil {
			return false, false, "", err
		}
		if len(pw) > bcryptMaxPassword {
			return false, false, "", nil // refused without hashing
		}
		// CompareHashAndPassword compares in constant time.
		h.timed(func() { err = bcrypt.CompareHashAndPassword([]byte(encoded), []byte(pw)) })
		class = bcryptClass(cost)
		switch {
		case err == nil:
			return true, true, class, nil
		case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
			return false, false, class, nil
		default:
			return false, false, "", fmt.Errorf("%w: bcrypt: %v", ErrMalformedHash, err)
		}
	default:
		return false, false, "", fmt.Errorf("%w: unrecognized algorithm", ErrMalformedHash)
	}
}

// VerifyDummy spends the work of a Verify against an argon2id hash made with
// h's parameters, and discards the result. Call it when the user is unknown,
// so that a login with an unknown name costs as much as one with a known
// name and response times do not reveal which names exist.
func (h *Hasher) VerifyDummy(pw string) {
	if h == nil || h.dummy == "" {
		return
	}
	_, _, _, _ = h.VerifyUnpadded(h.dummy, pw)
}

// ValidateHash checks that encoded is a hash h can verify: well formed and
// within h's ceilings. Use it to vet imported hashes before storing them.
func (h *Hasher) ValidateHash(encoded string) error {
	if h == nil || h.dummy == "" {
		return errNotInitialized
	}
	return validate(encoded, h.limits)
}

// IsHash reports whether s is a well-formed argon2id or bcrypt hash within
// the ceilings of a Hasher with DefaultParams. Imports use it to tell a hash
// from a plaintext password.
func IsHash(s string) bool { return Algorithm(s) != "" }

// Algorithm returns AlgArgon2id or AlgBcrypt when encoded is a well-formed
// hash of that kind (as IsHash defines it), and "" otherwise.
func Algorithm(encoded string) string {
	if validate(encoded, defaultLimits) != nil {
		return ""
	}
	return algorithmPrefix(encoded)
}

func validate(encoded string, l limits) error {
	switch algorithmPrefix(encoded) {
	case AlgArgon2id:
		_, err := parseArgon2id(encoded, l)
		return err
	case AlgBcrypt:
		_, err := parseBcrypt(encoded, l)
		return err
	}
	return fmt.Errorf("%w: unrecognized algorithm", ErrMalformedHash)
}

// algorithmPrefix identifies the algorithm by prefix only.
func algorithmPrefix(s string) string {
	switch {
	case strings.HasPrefix(s, "$argon2id$"):
		return AlgArgon2id
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		return AlgBcrypt
	}
	return ""
}

// argon2idHash is a parsed argon2id PHC string.
type argon2idHash struct {
	params Params
	salt   []byte
	key    []byte
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformedHash}, args...)...)
}

// parseArgon2id parses $argon2id$v=19$m=M,t=T,p=P$salt$key strictly: the
// canonical parameter order, decimal numbers without sign or leading zeros,
// unpadded standard base64 with zero trailing bits. Error messages never
// echo the input: a plaintext password stored by mistake must not reach a
// log.
func parseArgon2id(s string, l limits) (argon2idHash, error) {
	var a argon2idHash
	if len(s) > maxEncodedLen {
		return a, malformed("argon2id: longer than %d bytes", maxEncodedLen)
	}
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != AlgArgon2id {
		return a, malformed("argon2id: want 5 fields separated by '$'")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return a, malformed("argon2id: unsupported or missing version, want v=%d", argon2.Version)
	}
	fields := strings.Split(parts[3], ",")
	if len(fields) != 3 {
		return a, malformed("argon2id: want parameters m,t,p")
	}
	var nums [3]uint32
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(fields[i], name+"=")
		if !ok {
			return a, malformed("argon2id: parameter %d must be %s", i+1, name)
		}
		n, err := parseDecimal(v)
		if err != nil {
			return a, malformed("argon2id: parameter %s: %v", name, err)
		}
		nums[i] = n
	}
	m, t, p := nums[0], nums[1], nums[2]
	if p > MaxThreads {
		return a, malformed("argon2id: parallelism %d outside 1..%d", p, MaxThreads)
	}
	if err := checkArgon2idCost(Params{Memory: m, Time: t, Threads: uint8(p)}, l); err != nil {
		return a, err
	}
	// Check encoded lengths before decoding so nothing large is allocated.
	salt, err := decodeB64("salt", parts[4], minStoredSaltLen, MaxSaltLen)
	if err != nil {
		return a, err
	}
	key, err := decodeB64("key", parts[5], int(FloorParams.KeyLen), MaxKeyLen)
	if err != nil {
		return a, err
	}
	a.params = Params{Memory: m, Time: t, Threads: uint8(p), KeyLen: uint32(len(key)), SaltLen: uint32(len(salt))}
	a.salt, a.key = salt, key
	return a, nil
}

func decodeB64(name, s string, minLen, maxLen int) ([]byte, error) {
	enc := base64.RawStdEncoding.Strict()
	if len(s) < enc.EncodedLen(minLen) || len(s) > enc.EncodedLen(maxLen) {
		return nil, malformed("argon2id: %s must be %d..%d bytes", name, minLen, maxLen)
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		return nil, malformed("argon2id: %s is not unpadded standard base64", name)
	}
	if len(b) < minLen || len(b) > maxLen {
		return nil, malformed("argon2id: %s must be %d..%d bytes", name, minLen, maxLen)
	}
	return b, nil
}

// parseDecimal parses a PHC decimal: ASCII digits, no sign, no leading zero.
func parseDecimal(s string) (uint32, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, errors.New("leading zero")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a decimal number")
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, errors.New("out of range")
	}
	return uint32(n), nil
}

const bcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// parseBcrypt checks $2?$CC$<22 salt chars><31 hash chars> and returns the
// cost. x/crypto/bcrypt is lenient about length and alphabet and accepts
// cost 31 (2^31 rounds); we are not.
// bcryptPadBelowCost: bcrypt hashes cheaper than this (cost 10 takes about
// as long as an argon2id hash at the OWASP parameters) are padded with a
// dummy argon2id verification.
const bcryptPadBelowCost = 10

func parseBcrypt(s string, l limits) (int, error) {
	if len(s) != 60 || algorithmPrefix(s) != AlgBcrypt || s[6] != '$' {
		return 0, malformed("bcrypt: want $2a$, $2b$ or $2y$, a two-digit cost and 53 characters")
	}
	if s[4] < '0' || s[4] > '9' || s[5] < '0' || s[5] > '9' {
		return 0, malformed("bcrypt: cost is not two digits")
	}
	cost := int(s[4]-'0')*10 + int(s[5]-'0')
	if cost < bcrypt.MinCost || cost > l.maxBcryptCost {
		return 0, malformed("bcrypt: cost %d outside %d..%d", cost, bcrypt.MinCost, l.maxBcryptCost)
	}
	for i := 7; i < len(s); i++ {
		if strings.IndexByte(bcryptAlphabet, s[i]) < 0 {
			return 0, malformed("bcrypt: invalid character at offset %d", i)
		}
	}
	return cost, nil
}
