// Package token issues and verifies the gateway's bearer tokens: short-lived
// JWT access tokens (RFC 9068 "at+jwt") and long-lived refresh tokens
// ("rt+jwt"), both JWS signed with the gateway's key: an HMAC secret
// (HS256), or an asymmetric key (EdDSA, ES256) of a key set that rotates
// (see SetKeys), whose public halves upstreams can verify with.
//
// Revocation is by epoch: every token carries the user's token_version at
// issue time, and callers refuse a token whose token_version differs from the
// one in the store. This package only proves that a token is ours, intact,
// current and of the right type; it never looks at the store.
//
// It also parses the Authorization request header (ParseAuthorization).
package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// Token types, carried in the JWS typ header. TypAccess is the media type of
// RFC 9068 section 2.1; TypRefresh follows the same pattern so that neither
// kind is ever accepted as the other.
const (
	TypAccess  = "at+jwt"
	TypRefresh = "rt+jwt"
)

// Defaults for Config.
const (
	DefaultAccessTTL  = 15 * time.Minute
	DefaultRefreshTTL = 720 * time.Hour
	DefaultCacheSize  = 16384 // about 11 MB at ~670 B an entry
)

// MinKeyLen is the shortest HMAC key New accepts: 256 bits, the output size
// of SHA-256 (RFC 7518 section 3.2 requires a key at least that long for
// HS256).
const MinKeyLen = 32

// MaxTokenLen is the longest token string VerifyAccess and VerifyRefresh
// look at; longer input is refused before any work.
const MaxTokenLen = MaxAuthorizationLen

// Signing algorithms.
const (
	AlgHS256 = "HS256"
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
)

// Config configures a Manager.
type Config struct {
	// Alg is the one signing algorithm of the Manager's tokens: AlgHS256
	// (the default) signs with Key; AlgEdDSA and AlgES256 sign with the
	// keys given to SetKeys, and no token is issued before.
	Alg string
	// Key is the HMAC-SHA256 signing key of AlgHS256, at least MinKeyLen
	// bytes. New copies it. It must be empty for the other algorithms.
	Key []byte
	// Issuer is the iss of issued tokens and the only one accepted.
	// Required.
	Issuer string
	// Audience is the aud of issued tokens (a single string) and must be
	// among the aud of verified ones. Required.
	Audience string
	// AccessTTL is the lifetime of access tokens. Default 15m.
	AccessTTL time.Duration
	// RefreshTTL is the lifetime of refresh tokens. Default 720h (30 days).
	RefreshTTL time.Duration
	// Leeway is the clock skew allowed when checking exp, nbf and iat.
	// Default 0: the gateway both issues and verifies its tokens with one
	// clock, so there is no skew to allow for. Set it when tokens are
	// verified on other machines.
	Leeway time.Duration
	// Now is the clock. Default time.Now; tests inject a fixed clock.
	Now func() time.Time
	// CacheSize bounds the verified access token cache (see VerifyAccess).
	// 0 means DefaultCacheSize; a negative value disables the cache.
	CacheSize int
}

// Subject is what a token is issued for.
type Subject struct {
	// UserID is the sub claim. Required.
	UserID string
	// Scopes is the scope claim.
	Scopes scope.Set
	// TokenVersion is the user's revocation epoch at issue time.
	TokenVersion uint64
	// SessionID is the sid claim: the session (one login on one device)
	// the token belongs to. Empty omits it.
	SessionID string
	// Generation is the gen claim of a refresh token: the session's
	// rotation it was issued for. 0 omits it.
	Generation uint64
	// IssuedAt is the iat (and nbf) of the token; zero means now. A
	// session's refresh token is issued at the moment its generation
	// moved, so that the successor handed out again within the reuse
	// grace is the same token.
	IssuedAt time.Time
	// NotAfter, when set, caps exp: no token outlives its session.
	NotAfter time.Time
}

// Claims is the verified content of a token. A Manager may hand the same
// *Claims to many callers (see VerifyAccess): treat it, Scopes included, as
// read-only.
type Claims struct {
	UserID       string    // sub
	Scopes       scope.Set // scope
	ScopeString  string    // Scopes.String(), computed once at verification
	TokenVersion uint64    // token_version
	SessionID    string    // sid, may be empty
	Generation   uint64    // gen, 0 when absent
	ID           string    // jti
	IssuedAt     time.Time // iat
	ExpiresAt    time.Time // exp
}

// Manager issues and verifies tokens. It is safe for concurrent use.
type Manager struct {
	alg        string
	keys       atomic.Pointer[keySet]
	issuer     string
	audience   string
	accessTTL  time.Duration
	refreshTTL time.Duration
	leeway     time.Duration
	now        func() time.Time

	parser    *jwt.Parser
	kfAccess  jwt.Keyfunc
	kfRefresh jwt.Keyfunc
	cache     *verifiedCache // nil when disabled

	// jtiSource replaces crypto/rand for jti in tests that need
	// reproducible tokens (the fuzz targets run in several processes).
	jtiSource io.Reader
}

// signingKey is one key of the key set, keyed by kid.
type signingKey struct {
	id     string
	method jwt.SigningMethod
	sign   any // []byte for HMAC, a crypto.Signer otherwise; nil: verifies only
	verify any // []byte for HMAC, the public key otherwise

	// Encoded JWS headers for issuing, one per token type.
	hdrAccess, hdrRefresh string
}

// keySet is immutable once built: SetKeys swaps in a new one.
type keySet struct {
	byID   map[string]*signingKey
	active *signingKey // the key new tokens are signed with; nil: none yet
}

// Key is an asymmetric key given to SetKeys.
type Key struct {
	// ID is the kid.
	ID string
	// Private signs: an ed25519.PrivateKey for AlgEdDSA, an
	// *ecdsa.PrivateKey on P-256 for AlgES256. Nil for a key that only
	// verifies.
	Private crypto.Signer
	// Public verifies: an ed25519.PublicKey or an *ecdsa.PublicKey on
	// P-256, the public half of Private when both are set.
	Public crypto.PublicKey
}

// keyID derives the kid of an HMAC key: base64url (no padding) of the first
// 9 bytes of SHA-256("crudauth-kid:" || key). It names the key without
// revealing anything usable about it, and is stable across restarts.
func keyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("crudauth-kid:"))
	h.Write(key)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:9])
}

func newHMACKey(secret []byte) *signingKey {
	s := append([]byte(nil), secret...)
	k := &signingKey{
		id:     keyID(secret),
		method: jwt.SigningMethodHS256,
		sign:   s,
		verify: s,
	}
	k.hdrAccess = encodeHeader(k, TypAccess)
	k.hdrRefresh = encodeHeader(k, TypRefresh)
	return k
}

// newAsymmetricKey checks that k's key types fit alg and builds its entry.
func newAsymmetricKey(alg string, k Key) (*signingKey, error) {
	if k.ID == "" {
		return nil, errors.New("token: key has no id")
	}
	if k.Public == nil {
		return nil, fmt.Errorf("token: key %q has no public key", k.ID)
	}
	sk := &signingKey{id: k.ID, verify: k.Public}
	switch alg {
	case AlgEdDSA:
		sk.method = jwt.SigningMethodEdDSA
		pub, ok := k.Public.(ed25519.PublicKey)
		if !ok || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("token: key %q: public key is not Ed25519", k.ID)
		}
		if k.Private != nil {
			priv, ok := k.Private.(ed25519.PrivateKey)
			if !ok || !pub.Equal(priv.Public()) {
				return nil, fmt.Errorf("token: key %q: private key is not the Ed25519 key of its public key", k.ID)
			}
			sk.sign = priv
		}
	case AlgES256:
		sk.method = jwt.SigningMethodES256
		pub, ok := k.Public.(*ecdsa.PublicKey)
		if !ok || pub.Curve == nil || pub.Curve.Params().Name != "P-256" {
			return nil, fmt.Errorf("token: key %q: public key is not ECDSA P-256", k.ID)
		}
		if k.Private != nil {
			priv, ok := k.Private.(*ecdsa.PrivateKey)
			if !ok || !pub.Equal(priv.Public()) {
				return nil, fmt.Errorf("token: key %q: private key is not the P-256 key of its public key", k.ID)
			}
			sk.sign = priv
		}
	default:
		return nil, fmt.Errorf("token: %q is not an asymmetric algorithm", alg)
	}
	sk.hdrAccess = encodeHeader(sk, TypAccess)
	sk.hdrRefresh = encodeHeader(sk, TypRefresh)
	return sk, nil
}

// SetKeys replaces the asymmetric key set of a Manager whose Alg is
// AlgEdDSA or AlgES256: tokens are verified with the keys given (each
// pinned to the Manager's algorithm) and nothing else, and new tokens are
// signed with the key whose ID is signer ("" signs nothing: Issue* fails
// until a signer is set). From the moment it returns, a token of a key
// left out is refused, even one verified before (see VerifyAccess).
func (m *Manager) SetKeys(signer string, keys []Key) error {
	if m.alg == AlgHS256 {
		return errors.New("token: an HS256 manager has its one key")
	}
	ks := &keySet{byID: make(map[string]*signingKey, len(keys))}
	for _, k := range keys {
		sk, err := newAsymmetricKey(m.alg, k)
		if err != nil {
			return err
		}
		if ks.byID[sk.id] != nil {
			return fmt.Errorf("token: key id %q given twice", sk.id)
		}
		ks.byID[sk.id] = sk
	}
	if signer != "" {
		ks.active = ks.byID[signer]
		if ks.active == nil || ks.active.sign == nil {
			return fmt.Errorf("token: signing key %q is not among the keys, or has no private key", signer)
		}
	}
	m.keys.Store(ks)
	return nil
}

func encodeHeader(k *signingKey, typ string) string {
	b, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
		Kid string `json:"kid"`
	}{k.method.Alg(), typ, k.id})
	if err != nil {
		panic(err) // three strings always marshal
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// New validates cfg, applies defaults and builds a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Alg == "" {
		cfg.Alg = AlgHS256
	}
	var method jwt.SigningMethod
	switch cfg.Alg {
	case AlgHS256:
		if len(cfg.Key) < MinKeyLen {
			return nil, fmt.Errorf("token: signing key is %d bytes, need at least %d", len(cfg.Key), MinKeyLen)
		}
		method = jwt.SigningMethodHS256
	case AlgEdDSA, AlgES256:
		if len(cfg.Key) != 0 {
			return nil, fmt.Errorf("token: %s signs with the keys of SetKeys, not a secret", cfg.Alg)
		}
		method = jwt.GetSigningMethod(cfg.Alg)
	default:
		return nil, fmt.Errorf("token: unknown signing algorithm %q (want %s, %s or %s)", cfg.Alg, AlgHS256, AlgEdDSA, AlgES256)
	}
	if cfg.Issuer == "" {
		return nil, errors.New("token: issuer is required")
	}
	if cfg.Audience == "" {
		return nil, errors.New("token: audience is required")
	}
	if cfg.AccessTTL < 0 || cfg.RefreshTTL < 0 {
		return nil, errors.New("token: access and refresh ttl must not be negative")
	}
	if cfg.Leeway < 0 {
		return nil, errors.New("token: leeway must not be negative")
	}
	if cfg.AccessTTL == 0 {
		cfg.AccessTTL = DefaultAccessTTL
	}
	if cfg.RefreshTTL == 0 {
		cfg.RefreshTTL = DefaultRefreshTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}

	m := &Manager{
		alg:        cfg.Alg,
		issuer:     cfg.Issuer,
		audience:   cfg.Audience,
		accessTTL:  cfg.AccessTTL,
		refreshTTL: cfg.RefreshTTL,
		leeway:     cfg.Leeway,
		now:        cfg.Now,
	}
	if cfg.Alg == AlgHS256 {
		k := newHMACKey(cfg.Key)
		m.keys.Store(&keySet{byID: map[string]*signingKey{k.id: k}, active: k})
	} else {
		m.keys.Store(&keySet{byID: map[string]*signingKey{}})
	}
	m.parser = jwt.NewParser(
		// The algorithm never comes from the token: only the Manager's
		// one algorithm is allowed, and the keyfunc also checks that the
		// alg is the one of the key named by kid.
		jwt.WithValidMethods([]string{method.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
		// Without strict decoding the unused low bits of the last base64
		// character of the signature can be changed without changing the
		// signature, giving several distinct strings for one token.
		jwt.WithStrictDecoding(),
	)
	m.kfAccess = m.keyfunc(TypAccess)
	m.kfRefresh = m.keyfunc(TypRefresh)
	if cfg.CacheSize > 0 {
		m.cache = newVerifiedCache(cfg.CacheSize, cfg.Now)
	}
	return m, nil
}

// RefreshTTL is the lifetime of a refresh token, and so of a session.
func (m *Manager) RefreshTTL() time.Duration { return m.refreshTTL }

// Alg is the Manager's signing algorithm.
func (m *Manager) Alg() string { return m.alg }

// KeyID returns the kid of the key new tokens are signed with ("" while
// there is none).
func (m *Manager) KeyID() string {
	if k := m.keys.Load().active; k != nil {
		return k.id
	}
	return ""
}

// IssueAccess issues an access token for s, valid from now for AccessTTL.
func (m *Manager) IssueAccess(s Subject) (tok string, exp time.Time, err error) {
	return m.issue(s, TypAccess, m.accessTTL)
}

// IssueRefresh issues a refresh token for s, valid from now for RefreshTTL.
func (m *Manager) IssueRefresh(s Subject) (tok string, exp time.Time, err error) {
	return m.issue(s, TypRefresh, m.refreshTTL)
}

// wirePayload is the payload as issued. Field order gives the JSON order.
// aud is a single string (RFC 7519 section 4.1.3 allows it), which
// jwt.RegisteredClaims would write as an array.
type wirePayload struct {
	Iss          string `json:"iss"`
	Sub          string `json:"sub"`
	Aud          string `json:"aud"`
	Exp          int64  `json:"exp"`
	Nbf          int64  `json:"nbf"`
	Iat          int64  `json:"iat"`
	Jti          string `json:"jti"`
	Scope        string `json:"scope,omitempty"`
	TokenVersion uint64 `json:"token_version"`
	Sid          string `json:"sid,omitempty"`
	Gen          uint64 `json:"gen,omitempty"`
}

var (
	errIssueNoUser = errors.New("token: subject has no user id")
	errIssueScope  = errors.New("token: subject has an invalid scope")
	// errIssueExpired: NotAfter is not after the issue time (a session
	// that ended).
	errIssueExpired = errors.New("token: the token would be expired at issue")
	// ErrNoSigningKey: an EdDSA or ES256 Manager was given no signing key.
	ErrNoSigningKey = errors.New("token: no signing key")
)

// jti returns the token's ID: random, except for a session's refresh
// token, whose ID names its session and generation, so that issuing it
// again (IssuedAt and NotAfter fixed by the session) gives the same token.
func (m *Manager) jti(s Subject) (string, error) {
	if s.SessionID != "" && s.Generation > 0 {
		return s.SessionID + "." + strconv.FormatUint(s.Generation, 10), nil
	}
	var id [16]byte
	src := m.jtiSource
	if src == nil {
		src = rand.Reader
	}
	if _, err := io.ReadFull(src, id[:]); err != nil {
		return "", fmt.Errorf("token: generating jti: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(id[:]), nil
}

func (m *Manager) issue(s Subject, typ string, ttl time.Duration) (string, time.Time, error) {
	k := m.keys.Load().active
	if k == nil {
		return "", time.Time{}, ErrNoSigningKey
	}
	header := k.hdrAccess
	if typ == TypRefresh {
		header = k.hdrRefresh
	}
	if s.UserID == "" {
		return "", time.Time{}, errIssueNoUser
	}
	if len(s.Scopes) > scope.MaxScopes {
		return "", time.Time{}, errIssueScope
	}
	for _, sc := range s.Scopes {
		if !scope.ValidToken(sc) {
			return "", time.Time{}, errIssueScope
		}
	}
	jti, err := m.jti(s)
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.IssuedAt
	if now.IsZero() {
		now = m.now()
	}
	// NumericDate is whole seconds. Truncating iat down keeps it <= now, so
	// a verifier with the same clock never sees it in the future.
	iat := now.Unix()
	exp := now.Add(ttl).Unix()
	if !s.NotAfter.IsZero() && s.NotAfter.Unix() < exp {
		exp = s.NotAfter.Unix()
	}
	if exp <= iat {
		return "", time.Time{}, errIssueExpired
	}
	payload, err := json.Marshal(wirePayload{
		Iss:          m.issuer,
		Sub:          s.UserID,
		Aud:          m.audience,
		Exp:          exp,
		Nbf:          iat,
		Iat:          iat,
		Jti:          jti,
		Scope:        s.Scopes.String(),
		TokenVersion: s.TokenVersion,
		Sid:          s.SessionID,
		Gen:          s.Generation,
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token: encoding payload: %w", err)
	}
	enc := base64.RawURLEncoding
	var sb strings.Builder
	sb.Grow(len(header) + 1 + enc.EncodedLen(len(payload)) + 1 + 86)
	sb.WriteString(header)
	sb.WriteByte('.')
	pl := make([]byte, enc.EncodedLen(len(payload)))
	enc.Encode(pl, payload)
	sb.Write(pl)
	sig, err := k.method.Sign(sb.String(), k.sign)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token: signing: %w", err)
	}
	sb.WriteByte('.')
	sigEnc := make([]byte, enc.EncodedLen(len(sig)))
	enc.Encode(sigEnc, sig)
	sb.Write(sigEnc)
	return sb.String(), time.Unix(exp, 0), nil
}

// wireClaims is the payload as verified. token_version is decoded leniently
// and judged after the signature verified (see tokenVersion).
type wireClaims struct {
	jwt.RegisteredClaims
	Scope        string       `json:"scope"`
	TokenVersion tokenVersion `json:"token_version"`
	SessionID    string       `json:"sid"`
	Generation   uint64       `json:"gen"`
}

// tokenVersion records what the token_version member held without failing
// the JSON decode, so that a bad value is reported as ErrInvalidClaims of an
// authentic token rather than as a malformed one. Only a plain JSON integer
// literal in [0, 2^64) is valid: "1" (a string), -1, 1.5, 1e3 and overflow
// are not.
type tokenVersion struct {
	v       uint64
	present bool // member present and not null
	valid   bool
}

func (t *tokenVersion) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = tokenVersion{}
		return nil
	}
	t.present = true
	t.v, t.valid = parseUint64(b)
	return nil
}

// parseUint64 parses a string of decimal digits without sign, fraction or
// exponent, refusing overflow.
func parseUint64(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

func (m *Manager) keyfunc(want string) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		h := t.Header
		typ, _ := h["typ"].(string)
		if !typMatches(typ, want) {
			return nil, errWrongTyp
		}
		for _, f := range &forbiddenHeaders {
			if _, ok := h[f.name]; ok {
				return nil, f.err
			}
		}
		kid, ok := h["kid"].(string)
		if !ok {
			return nil, errNoKid
		}
		k := m.keys.Load().byID[kid]
		if k == nil {
			return nil, errUnknownKid
		}
		if t.Method == nil || t.Method.Alg() != k.method.Alg() {
			return nil, errKidAlg
		}
		return k.verify, nil
	}
}

// typMatches compares a typ header with the expected type without regard to
// ASCII case, also accepting the full media type with its "application/"
// prefix (RFC 9068 section 4, RFC 7515 section 4.1.9).
func typMatches(typ, want string) bool {
	const prefix = "application/"
	if len(typ) == len(prefix)+len(want) && asciiEqualFold(typ[:len(prefix)], prefix) {
		typ = typ[len(prefix):]
	}
	return asciiEqualFold(typ, want)
}

// asciiEqualFold compares a with the ASCII string b without regard to ASCII
// case. strings.EqualFold alone also folds "ſ" to "s" and the Kelvin sign to
// "k"; those take more than one byte, so equal lengths rule them out.
func asciiEqualFold(a, b string) bool {
	return len(a) == len(b) && strings.EqualFold(a, b)
}

// VerifyAccess verifies an access token and returns its claims.
//
// An access token that verified before is served from a bounded cache
// (see verifiedCache) keyed by the whole token string: the signature and JSON are
// not looked at again, but exp, nbf and iat are re-checked against the clock
// on every hit, so a cached token expires exactly when an uncached one would.
// On a hit the *Claims returned is the one cached, shared with every other
// caller that presents the same token: never modify it. A hit also checks
// that the token's key is still in the key set, so that a key removed by
// SetKeys (a retired one) is refused from the next request on.
//
// The caller must still compare Claims.TokenVersion with the user's current
// epoch: revocation is not checked here.
func (m *Manager) VerifyAccess(tok string) (*Claims, error) {
	if len(tok) > MaxTokenLen {
		return nil, errTokenTooLong
	}
	if m.cache != nil {
		if ent, ok := m.cache.get(tok); ok {
			now := m.now()
			if !now.Before(ent.notAfter) {
				return nil, errExpired
			}
			if now.Before(ent.notBefore) { // only if the clock stepped back
				return nil, errNotYetValid
			}
			if m.keys.Load().byID[ent.kid] == nil {
				return nil, errUnknownKid
			}
			return ent.claims, nil
		}
	}
	ent, err := m.verify(tok, TypAccess)
	if err != nil {
		return nil, err
	}
	if m.cache != nil {
		m.cache.put(tok, ent)
	}
	return ent.claims, nil
}

// VerifyRefresh verifies a refresh token and returns its claims. Refresh
// tokens are never cached. The caller must still compare
// Claims.TokenVersion with the user's current epoch.
func (m *Manager) VerifyRefresh(tok string) (*Claims, error) {
	if len(tok) > MaxTokenLen {
		return nil, errTokenTooLong
	}
	ent, err := m.verify(tok, TypRefresh)
	if err != nil {
		return nil, err
	}
	return ent.claims, nil
}

// verify does the full check of one token of type typ (TypAccess or
// TypRefresh).
func (m *Manager) verify(tok, typ string) (cacheEntry, error) {
	if tok == "" {
		return cacheEntry{}, errEmptyToken
	}
	if !compactJWS(tok) {
		return cacheEntry{}, errJWTMalformed
	}
	kf := m.kfAccess
	if typ == TypRefresh {
		kf = m.kfRefresh
	}
	return m.parse(tok, kf)
}

// compactJWS reports whether tok is three segments of base64url characters
// separated by two dots, and nothing else. encoding/base64 skips '\r' and
// '\n' anywhere in its input, strict mode included, so without this check a
// token with line breaks added (in a refresh token's JSON body, say) would
// verify: several strings for one token.
func compactJWS(tok string) bool {
	dots := 0
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return dots == 2
}

// parse checks a token with golang-jwt, the one parser: the structure,
// alg, signature (via the keyfunc, which also checks typ, kid and the
// forbidden header parameters) and the registered claims; then, on the
// authentic token only, our own claim checks. It classifies the error.
//
// Duplicate member names are left to encoding/json (the last one wins):
// only a holder of the signing key can put them in a token that verifies.
func (m *Manager) parse(tok string, kf jwt.Keyfunc) (cacheEntry, error) {
	var wc wireClaims
	t, err := m.parser.ParseWithClaims(tok, &wc, kf)
	if err != nil {
		return cacheEntry{}, classify(err)
	}
	kid, _ := t.Header["kid"].(string) // the keyfunc required it
	if !wc.TokenVersion.present {
		return cacheEntry{}, errNoTokenVersion
	}
	if !wc.TokenVersion.valid {
		return cacheEntry{}, errBadTokenVersion
	}
	if wc.Subject == "" {
		return cacheEntry{}, errNoSubject
	}
	if wc.IssuedAt == nil {
		return cacheEntry{}, errNoIssuedAt
	}
	if wc.ID == "" {
		return cacheEntry{}, errNoID
	}
	scopes, err := scope.Parse(wc.Scope)
	if err != nil {
		return cacheEntry{}, errBadScope
	}
	c := &Claims{
		UserID:       wc.Subject,
		Scopes:       scopes,
		ScopeString:  scopes.String(),
		TokenVersion: wc.TokenVersion.v,
		SessionID:    wc.SessionID,
		Generation:   wc.Generation,
		ID:           wc.ID,
		IssuedAt:     wc.IssuedAt.Time,
		ExpiresAt:    wc.ExpiresAt.Time, // WithExpirationRequired: non-nil
	}
	notBefore := c.IssuedAt
	if wc.NotBefore != nil && wc.NotBefore.After(notBefore) {
		notBefore = wc.NotBefore.Time
	}
	return cacheEntry{
		kid:       kid,
		claims:    c,
		notBefore: notBefore.Add(-m.leeway),
		notAfter:  c.ExpiresAt.Add(m.leeway),
	}, nil
}
