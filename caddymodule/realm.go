package caddymodule

import (
	"cmp"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/crudauth/caddy-crudauth/internal/config"
	"github.com/crudauth/caddy-crudauth/internal/keys"
	"github.com/crudauth/caddy-crudauth/internal/metrics"
	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/throttle"
	"github.com/crudauth/caddy-crudauth/internal/token"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// DefaultHashQueueTimeout is how long a login waits for a hashing slot
// when hash_queue_timeout is not set.
const DefaultHashQueueTimeout = config.DefaultHashQueueTimeout

// DefaultKeyPublishDelay is how long a rotated key is published before it
// signs when key_publish_delay is not set.
const DefaultKeyPublishDelay = keys.DefaultPublishDelay

// RealmSettings are what a realm holds: a store, a password hasher with its
// hashing cap and policy, a login throttle and the signing key. A realm is
// declared by name in the global crudauth options and shared by the
// handlers that name it; a handler that names none has a realm of its own
// built from these same fields, set on the handler.
type RealmSettings struct {
	// Path of the bbolt database holding users and their token epochs:
	// short for a store of backend "bolt" with this path. Default, when
	// store is not set either: crudauth/crudauth.db in Caddy's data
	// directory. Several sites and configs may name the same file: they
	// share one open handle. Setting both db and store is an error.
	DB string `json:"db,omitempty"`

	// Where users, their token epochs and the generated signing key live:
	// a crudauth.stores.* module, {"backend": "bolt", "path": ...} or
	// {"backend": "memory", "name": ...}. Realms that name the same
	// backing state (the same file, the same memory name) share one open
	// store, across sites and reloads. Default: bolt at db's default.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=crudauth.stores inline_key=backend"`

	// HS256 signing key, at least 32 bytes. `{env.NAME}` and `{file.PATH}`
	// placeholders are resolved at start, so the key need not appear in the
	// config. Default: a random 256-bit key generated on first start and
	// kept in the store, so that tokens survive restarts. Only for
	// signing_alg HS256.
	Secret string `json:"secret,omitempty"`

	// The algorithm tokens are signed with: HS256 (an HMAC secret that
	// only the gateway holds), EdDSA (Ed25519) or ES256 (ECDSA P-256).
	// With EdDSA or ES256 the key pair is generated on first start and
	// kept in the store (once, even when several gateways start
	// together), every token names its key (kid), and the public keys
	// are published at jwks_path so that upstreams can verify tokens
	// themselves; `caddy crudauth key rotate|retire` changes keys without
	// a restart. Switching algorithms refuses the tokens signed before.
	// Default: HS256.
	SigningAlg string `json:"signing_alg,omitempty"`

	// How long a key made by `caddy crudauth key rotate` is published
	// before it signs, so that upstreams caching the JWKS hold it before
	// they meet a token it signed. At least twice the JWKS cache lifetime
	// (max-age, 5m at most). Positive. Default: 1h.
	KeyPublishDelay caddy.Duration `json:"key_publish_delay,omitempty"`

	// argon2id parameters for new password hashes. Default: the OWASP
	// recommendation m=19456 KiB, t=2, p=1; lower values are refused.
	Argon2 *Argon2Params `json:"argon2,omitempty"`

	// Most password hashes computed at once. Default: half the CPUs, at
	// least 1, so a login flood leaves CPU for proxied traffic.
	MaxConcurrentHashes int `json:"max_concurrent_hashes,omitempty"`

	// How long a login waits for a hashing slot before it gets 503 with
	// Retry-After. Positive, at most 1m. Default: 2s.
	HashQueueTimeout caddy.Duration `json:"hash_queue_timeout,omitempty"`

	// Login throttling on token_path: escalating lockouts per (client IP,
	// username), per username and per client IP. Default: on, 5 failures
	// a minute per pair, 10 per username, 20 per IP, a 1m lockout doubling
	// up to 1h. See ThrottleConfig.
	Throttle *ThrottleConfig `json:"throttle,omitempty"`

	// Minimum length of a new password, in characters. Default: 8. There
	// are no composition rules (NIST SP 800-63B section 3.1.1.2).
	PasswordMinLength int `json:"password_min_length,omitempty"`

	// Maximum length of a new password, in characters; at least 64, at
	// most 4096. Default: 256. Bodies past 4096 bytes are refused before
	// any hashing; nothing is ever truncated.
	PasswordMaxLength int `json:"password_max_length,omitempty"`
}

// isZero reports whether none of the settings is given.
func (s *RealmSettings) isZero() bool {
	return reflect.ValueOf(*s).IsZero()
}

// given names the settings that are set, by their Caddyfile names.
func (s *RealmSettings) given() []string {
	var out []string
	v := reflect.ValueOf(*s)
	t := v.Type()
	for i := range t.NumField() {
		if !v.Field(i).IsZero() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			out = append(out, name)
		}
	}
	return out
}

// values are the settings as internal/config checks them.
func (s *RealmSettings) values() config.Realm {
	v := config.Realm{
		DB:                  s.DB,
		Store:               s.StoreRaw != nil,
		Secret:              s.Secret,
		SigningAlg:          s.SigningAlg,
		KeyPublishDelay:     time.Duration(s.KeyPublishDelay),
		MaxConcurrentHashes: s.MaxConcurrentHashes,
		HashQueueTimeout:    time.Duration(s.HashQueueTimeout),
		Throttle:            s.Throttle.values(),
		PasswordMinLength:   s.PasswordMinLength,
		PasswordMaxLength:   s.PasswordMaxLength,
	}
	if s.Argon2 != nil {
		v.Argon2Memory, v.Argon2Time, v.Argon2Threads = s.Argon2.Memory, s.Argon2.Time, s.Argon2.Threads
	}
	return v
}

// subdirectives are the realm's subdirectives, in a handler's block or in
// a realm's block of the global options.
func (s *RealmSettings) subdirectives() subdirectives {
	return subdirectives{
		"db":                    oneArg(s.parseDB),
		"store":                 s.parseStore,
		"secret":                stringArg(&s.Secret),
		"signing_alg":           stringArg(&s.SigningAlg),
		"key_publish_delay":     durationArg(&s.KeyPublishDelay),
		"hash_queue_timeout":    durationArg(&s.HashQueueTimeout),
		"argon2":                s.parseArgon2,
		"max_concurrent_hashes": positiveIntArg(&s.MaxConcurrentHashes),
		"password_min_length":   positiveIntArg(&s.PasswordMinLength),
		"password_max_length":   positiveIntArg(&s.PasswordMaxLength),
		"throttle":              s.parseThrottle,
	}
}

// parseDB parses `db <path>`, short for `store bolt { path <path> }`.
func (s *RealmSettings) parseDB(d *caddyfile.Dispenser, _, v string) error {
	if s.StoreRaw != nil {
		return errDBAndStore(d)
	}
	s.DB = v
	return nil
}

// parseStore parses `store <backend> [{ ... }]`; the backend's module
// parses its block.
func (s *RealmSettings) parseStore(d *caddyfile.Dispenser, _ string) error {
	if s.DB != "" {
		return errDBAndStore(d)
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	backend := d.Val()
	unm, err := caddyfile.UnmarshalModule(d, "crudauth.stores."+backend)
	if err != nil {
		return err
	}
	s.StoreRaw = caddyconfig.JSONModuleObject(unm, "backend", backend, nil)
	return nil
}

// parseArgon2 parses `argon2 <memory KiB> <time> <threads>`.
func (s *RealmSettings) parseArgon2(d *caddyfile.Dispenser, _ string) error {
	var m, t, p string
	if !d.AllArgs(&m, &t, &p) {
		return d.Errf("argon2 takes three numbers: memory in KiB, time (iterations), threads")
	}
	mem, err1 := strconv.ParseUint(m, 10, 32)
	it, err2 := strconv.ParseUint(t, 10, 32)
	th, err3 := strconv.ParseUint(p, 10, 8)
	if err1 != nil || err2 != nil || err3 != nil {
		return d.Errf("argon2: %q %q %q are not a memory in KiB, a time and a thread count", m, t, p)
	}
	s.Argon2 = &Argon2Params{Memory: uint32(mem), Time: uint32(it), Threads: uint8(th)}
	return nil
}

// realm is a provisioned RealmSettings: what the handlers of a realm and
// the admin API share. It never changes once built.
type realm struct {
	name         string // as declared; "" for a handler's own
	storeKey     string // storePool key
	store        store.Store
	throttleKey  string // throttlePool key; "" when throttling is off
	throttle     throttle.Limiter
	hasher       *password.Hasher
	hashLimit    *password.Limiter
	policy       password.Policy
	key          []byte // the HS256 signing key; nil for EdDSA and ES256
	secretSource string // "config" or "store", for logs
	signingAlg   string // token.AlgHS256, AlgEdDSA or AlgES256
	publishDelay time.Duration

	// The fields above never change once built: an admin request may still
	// read a realm of the old config while a reload releases it.
	releaseOnce sync.Once
	releaseErr  error

	// rings are the key rings of the handlers that use the realm now: the
	// key commands judge keys by their token lifetimes.
	rings keys.Rings
}

func (r *realm) addRing(k *keys.Ring)    { r.rings.Add(k) }
func (r *realm) removeRing(k *keys.Ring) { r.rings.Remove(k) }

// tokenLifetime is the longest a token of the realm's handlers lives (the
// lifetime their rings judge keys by); zero while no handler signs with
// the key set.
func (r *realm) tokenLifetime() time.Duration { return r.rings.Life() }

// passwordSettings is how the admin API and the CLI hash and check new
// passwords for this realm.
func (r *realm) passwordSettings() users.Settings {
	return users.Settings{Policy: r.policy, Hasher: r.hasher, Limiter: r.hashLimit}
}

// adminSettings are the realm's settings for the admin API: how new
// passwords are hashed and checked, and what the key commands judge and
// change keys by. The token lifetime is the longest of every handler of
// app on the realm's store, not of this realm's alone: a key is spent only
// once no gateway on the store can hold a live token it signed.
func (r *realm) adminSettings(app *App) users.Settings {
	s := r.passwordSettings()
	s.Keys = users.KeySettings{Alg: r.signingAlg, PublishDelay: r.publishDelay, TokenLifetime: app.tokenLifetime(r.storeKey)}
	return s
}

// provision builds the realm: the hasher, the policy, the secret, the
// shared store and throttle. On error it releases what it took.
func (s *RealmSettings) provision(ctx caddy.Context) (*realm, error) {
	v := s.values()
	if err := v.Check(); err != nil {
		return nil, err
	}
	hashing, err := v.Hashing()
	if err != nil {
		return nil, err
	}
	r := &realm{hasher: hashing.Hasher.WithObserver(metrics.Hash), hashLimit: hashing.Limit, policy: hashing.Policy}

	// Resolve the secret before touching the store, so a bad secret fails
	// fast without taking a file lock.
	if s.Secret != "" {
		if r.key, err = resolveSecret(s.Secret); err != nil {
			return nil, fmt.Errorf("secret: %w", err)
		}
		r.secretSource = "config"
	}

	if r.store, r.storeKey, err = s.acquireStore(ctx); err != nil {
		return nil, err
	}
	if r.throttle, r.throttleKey, err = acquireThrottle(r.storeKey, r.store, s.Throttle); err != nil {
		_ = r.release()
		return nil, fmt.Errorf("throttle: %w", err)
	}
	r.signingAlg = cmp.Or(s.SigningAlg, token.AlgHS256)
	r.publishDelay = cmp.Or(time.Duration(s.KeyPublishDelay), DefaultKeyPublishDelay)
	if keys.Asymmetric(r.signingAlg) {
		// The key pair is created by the first handler's Ring (keys.Ensure)
		// at start; nothing to load here.
		r.secretSource = "store"
	} else if r.key == nil {
		r.key, err = r.store.Secret(ctx, generatedSecretName, func() ([]byte, error) {
			b := make([]byte, generatedSecretBytes)
			_, err := rand.Read(b)
			return b, err
		})
		if err != nil {
			_ = r.release()
			return nil, fmt.Errorf("loading the generated secret from %s: %w", storeName(r.storeKey), err)
		}
		r.secretSource = "store"
	}
	return r, nil
}

// resolveSecret resolves `{env.X}` and `{file.P}` in a configured secret
// and checks its length and strength (config.Secret).
func resolveSecret(configured string) ([]byte, error) {
	resolved, err := caddy.NewReplacer().ReplaceOrErr(configured, true, true)
	if err != nil {
		return nil, err
	}
	return config.Secret(resolved)
}

// acquireStore loads the store module (or takes db as the path of a bolt
// store) and takes a reference to its shared open store.
func (s *RealmSettings) acquireStore(ctx caddy.Context) (store.Store, string, error) {
	if s.StoreRaw == nil {
		st, key, err := acquireBolt(s.DB)
		if err != nil {
			return nil, "", fmt.Errorf("db: %w", err)
		}
		return st, key, nil
	}
	mod, err := ctx.LoadModule(s, "StoreRaw")
	if err != nil {
		return nil, "", fmt.Errorf("store: %w", err)
	}
	opener, ok := mod.(storeOpener)
	if !ok {
		return nil, "", fmt.Errorf("store: module %T is not a crudauth store", mod)
	}
	st, key, err := acquireStore(opener)
	if err != nil {
		return nil, "", fmt.Errorf("store: %w", err)
	}
	return st, key, nil
}

// release drops the realm's references to the shared store and throttle,
// once however often it is called. It leaves the realm's fields as they
// are (see realm).
func (r *realm) release() error {
	r.releaseOnce.Do(func() {
		if r.throttleKey != "" {
			_, _ = throttlePool.Delete(r.throttleKey)
		}
		if r.storeKey != "" {
			r.releaseErr = releaseStore(r.storeKey)
		}
	})
	return r.releaseErr
}

// settingsFor returns how new passwords are checked and hashed for the
// store with pool key key: with its realm's settings in the running config,
// so that an operator who set argon2 parameters or a password policy gets
// the same ones through the admin API; the defaults when no realm of the
// running config holds the store (a file the CLI opened itself).
func settingsFor(key string) (users.Settings, error) {
	if key != "" {
		if mod, err := caddy.ActiveContext().AppIfConfigured("crudauth"); err == nil {
			if r, ok := mod.(*App).byStore(key); ok {
				return r.adminSettings(mod.(*App)), nil
			}
		}
	}
	hasher, err := password.NewHasher(password.DefaultParams)
	if err != nil {
		return users.Settings{}, err
	}
	return users.Settings{Policy: password.DefaultPolicy, Hasher: hasher.WithObserver(metrics.Hash)}, nil
}
