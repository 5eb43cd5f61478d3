package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// The fast path.
//
// Almost every token the gateway sees is one it issued: its header segment
// is, byte for byte, one of the headers this Manager writes (signingKey's
// hdrAccess or hdrRefresh), and its payload is the compact JSON of
// wirePayload. For such a token the general path (golang-jwt's parse: the
// header decoded into a map, the claims through encoding/json and
// reflection, then our duplicate-member scan over both segments again) does
// about ten times the work of the HMAC itself.
//
// verifyFast checks exactly those tokens directly: the header by string
// comparison (it is ours, so alg, typ, kid and the absence of crit, jku and
// the like are already known to be right), the HMAC-SHA256 with a pooled
// keyed hash, then one pass over the payload that accepts only the subset of
// JSON we write: the ten member names in lower case, each at most once,
// strings without escapes or control bytes, and numbers as plain digits.
//
// It only ever accepts. Anything it does not positively recognise, a bad
// signature, an expired token and a payload written any other way included,
// makes it report "not handled", and the caller runs the general path, which
// decides and classifies the error exactly as before. So the fast path can
// only be wrong by accepting a token the general path refuses, or by
// returning different claims; TestFastPathAgrees and FuzzFastPathAgrees
// check both against the general path on tokens signed with our key.

// strictB64 is the decoding golang-jwt uses with WithStrictDecoding.
var strictB64 = base64.RawURLEncoding.Strict()

// hs256SigLen is the length of an HS256 signature segment: 32 bytes in
// unpadded base64url.
const hs256SigLen = 43

// macState is a keyed HMAC-SHA256 and scratch space, pooled per key.
type macState struct {
	mac      hash.Hash
	sig, sum [sha256.Size]byte
	scratch  []byte
}

// macPool hands out keyed HMAC-SHA256 states for one key. Reset returns a
// keyed HMAC to its just-keyed state, so a pooled one is as good as new.
func macPool(secret []byte) *sync.Pool {
	return &sync.Pool{New: func() any {
		return &macState{mac: hmac.New(sha256.New, secret), scratch: make([]byte, 0, 1024)}
	}}
}

// payload member names the fast path knows, in the bit order of seen.
const (
	fIss = iota
	fSub
	fAud
	fExp
	fNbf
	fIat
	fJti
	fScope
	fTokenVersion
	fSid
)

// fastClaims holds the members of a payload as spans of the decoded bytes.
type fastClaims struct {
	seen            uint16
	iss, sub, aud   []byte
	jti, scope, sid []byte
	exp, nbf, iat   int64
	tokenVersion    uint64
}

// verifyFast verifies tok if it is a token of type typ in the exact form this
// Manager issues. handled is false for every other input: the caller must
// then run the general path, which gives the verdict.
func (m *Manager) verifyFast(tok, typ string) (ent cacheEntry, handled bool) {
	dot1 := strings.IndexByte(tok, '.')
	if dot1 < 0 {
		return ent, false
	}
	var k *signingKey
	for _, c := range m.keys.list {
		hdr := c.hdrAccess
		if typ == TypRefresh {
			hdr = c.hdrRefresh
		}
		if hdr == tok[:dot1] {
			k = c
			break
		}
	}
	if k == nil || k.macs == nil {
		return ent, false
	}
	dot2 := strings.IndexByte(tok[dot1+1:], '.') + dot1 + 1
	if dot2 == dot1 || len(tok)-dot2-1 != hs256SigLen {
		return ent, false
	}

	st := k.macs.Get().(*macState)
	defer k.macs.Put(st)

	// Signature: strict base64url of exactly 32 bytes, compared in
	// constant time with the HMAC of the signing input. The token is
	// copied into the scratch buffer because hash.Hash takes bytes.
	buf := append(st.scratch[:0], tok...)
	n, err := strictB64.Decode(st.sig[:], buf[dot2+1:])
	if err != nil || n != len(st.sig) {
		return ent, false
	}
	st.mac.Reset()
	st.mac.Write(buf[:dot2])
	if !hmac.Equal(st.sig[:], st.mac.Sum(st.sum[:0])) {
		return ent, false
	}

	// Payload: decoded after the token bytes in the same scratch buffer.
	seg := buf[dot1+1 : dot2]
	start := len(buf)
	buf = append(buf, make([]byte, strictB64.DecodedLen(len(seg)))...)
	st.scratch = buf[:0] // keep the grown buffer for the next token
	n, err = strictB64.Decode(buf[start:], seg)
	if err != nil {
		return ent, false
	}
	var fc fastClaims
	if !parseFastPayload(buf[start:start+n], &fc) {
		return ent, false
	}
	return m.fastEntry(&fc)
}

// fastEntry applies the checks of the general path (golang-jwt's validator
// with our parser options, then verify's own) to a parsed payload, and builds
// the entry verify would build.
func (m *Manager) fastEntry(fc *fastClaims) (ent cacheEntry, handled bool) {
	const required = 1<<fExp | 1<<fIat | 1<<fTokenVersion | 1<<fIss | 1<<fAud | 1<<fSub | 1<<fJti
	if fc.seen&required != required || len(fc.sub) == 0 || len(fc.jti) == 0 {
		return ent, false
	}
	if string(fc.iss) != m.issuer || string(fc.aud) != m.audience {
		return ent, false
	}
	scopes, err := scope.Parse(string(fc.scope))
	if err != nil {
		return ent, false
	}
	iat := time.Unix(fc.iat, 0)
	notBefore := iat
	if fc.seen&(1<<fNbf) != 0 && fc.nbf > fc.iat {
		notBefore = time.Unix(fc.nbf, 0)
	}
	exp := time.Unix(fc.exp, 0)
	ent = cacheEntry{
		notBefore: notBefore.Add(-m.leeway),
		notAfter:  exp.Add(m.leeway),
	}
	now := m.now()
	if now.Before(ent.notBefore) || !now.Before(ent.notAfter) {
		return cacheEntry{}, false
	}
	ent.claims = &Claims{
		UserID:       string(fc.sub),
		Scopes:       scopes,
		ScopeString:  scopes.String(),
		TokenVersion: fc.tokenVersion,
		SessionID:    string(fc.sid),
		ID:           string(fc.jti),
		IssuedAt:     iat,
		ExpiresAt:    exp,
	}
	return ent, true
}

// parseFastPayload parses b if it is a JSON object in the subset the fast
// path accepts (see the comment at the top of this file), filling fc. It
// returns false for anything else, valid JSON included.
func parseFastPayload(b []byte, fc *fastClaims) bool {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return false // nothing in it: the required members are missing
	}
	for {
		name, end, ok := plainString(b, i)
		if !ok {
			return false
		}
		f := fieldOf(name)
		if f < 0 || fc.seen&(1<<f) != 0 {
			return false
		}
		fc.seen |= 1 << f
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipWS(b, i+1)
		switch f {
		case fExp, fNbf, fIat, fTokenVersion:
			digits, end, ok := plainNumber(b, i)
			if !ok {
				return false
			}
			i = end
			if f == fTokenVersion {
				v, ok := parseUint64(digits)
				if !ok {
					return false
				}
				fc.tokenVersion = v
				break
			}
			// NumericDate goes through float64: up to 15 digits the
			// conversion is exact, beyond it we leave the rounding to
			// the general path.
			if len(digits) > 15 {
				return false
			}
			v, _ := parseUint64(digits)
			switch f {
			case fExp:
				fc.exp = int64(v)
			case fNbf:
				fc.nbf = int64(v)
			default:
				fc.iat = int64(v)
			}
		default:
			s, end, ok := plainString(b, i)
			if !ok {
				return false
			}
			i = end
			switch f {
			case fIss:
				fc.iss = s
			case fSub:
				fc.sub = s
			case fAud:
				fc.aud = s
			case fJti:
				fc.jti = s
			case fScope:
				fc.scope = s
			default:
				fc.sid = s
			}
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return false
		}
		if b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if b[i] != '}' {
			return false
		}
		return skipWS(b, i+1) == len(b)
	}
}

// fieldOf maps a member name, exactly as written (encoding/json would also
// match other spellings, which the fast path leaves to the general one), to
// its field, or -1.
func fieldOf(name []byte) int {
	switch string(name) {
	case "iss":
		return fIss
	case "sub":
		return fSub
	case "aud":
		return fAud
	case "exp":
		return fExp
	case "nbf":
		return fNbf
	case "iat":
		return fIat
	case "jti":
		return fJti
	case "scope":
		return fScope
	case "token_version":
		return fTokenVersion
	case "sid":
		return fSid
	}
	return -1
}

// plainString reads the JSON string starting at b[i] if it holds no escape,
// no control byte and only valid UTF-8, so that its content is its bytes. It
// returns the content and the index past the closing quote.
func plainString(b []byte, i int) (s []byte, end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	ascii := true
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s = b[i+1 : j]
			if !ascii && !utf8.Valid(s) {
				// encoding/json would substitute U+FFFD.
				return nil, 0, false
			}
			return s, j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, 0, false
}

// plainNumber reads a JSON number at b[i] that is a non-negative integer
// without leading zeros, fraction or exponent, and returns its digits.
func plainNumber(b []byte, i int) (digits []byte, end int, ok bool) {
	j := i
	for j < len(b) && '0' <= b[j] && b[j] <= '9' {
		j++
	}
	if j == i || (b[i] == '0' && j-i > 1) {
		return nil, 0, false
	}
	if j < len(b) {
		switch b[j] {
		case ',', '}', ' ', '\t', '\n', '\r':
		default:
			return nil, 0, false // '.', 'e', 'E' or junk
		}
	}
	return b[i:j], j, true
}
