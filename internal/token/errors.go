package token

import (
	"errors"

	"github.com/golang-jwt/jwt/v5"
)

// Sentinel errors of verification. Every error VerifyAccess and
// VerifyRefresh return wraps exactly one of them (errors.Is). Callers map all
// of them to RFC 6750 invalid_token; they stay distinct for logs and metrics.
// No error message ever contains any part of the token.
var (
	// ErrMalformed: not a compact JWS we can read (also used by
	// ParseAuthorization for a header that is not "Bearer <b64token>").
	ErrMalformed = errors.New("malformed token")
	// ErrSignature: the signature does not verify, or the token names an
	// algorithm or key we do not accept.
	ErrSignature = errors.New("invalid token signature")
	// ErrExpired: the exp claim has passed (leeway included).
	ErrExpired = errors.New("token expired")
	// ErrWrongType: the typ header is not the one expected, for example a
	// refresh token presented as an access token.
	ErrWrongType = errors.New("wrong token type")
	// ErrInvalidClaims: the token is authentic but its claims or header are
	// not acceptable (issuer, audience, times, token_version, sub, scope,
	// forbidden header parameters).
	ErrInvalidClaims = errors.New("invalid token claims")
)

// reasonError is one of the sentinels above plus a fixed explanation and,
// where one applies, the golang-jwt sentinel behind it. Its text is fixed at
// compile time, so nothing from the token reaches a log line, and the values
// below are preallocated so a refusal costs no allocation.
type reasonError struct {
	kind  error  // one of our sentinels
	cause error  // a golang-jwt sentinel (fixed text) or nil
	msg   string // fixed text
}

func (e *reasonError) Error() string { return e.kind.Error() + ": " + e.msg }

func (e *reasonError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

var (
	errEmptyToken   = &reasonError{kind: ErrMalformed, msg: "empty token"}
	errTokenTooLong = &reasonError{kind: ErrMalformed, msg: "token too long"}
	errJWTMalformed = &reasonError{kind: ErrMalformed, cause: jwt.ErrTokenMalformed, msg: "not a well-formed compact jws"}

	errAlgUnusable  = &reasonError{kind: ErrSignature, cause: jwt.ErrTokenUnverifiable, msg: "alg missing or unknown"}
	errAlgNotValid  = &reasonError{kind: ErrSignature, cause: jwt.ErrTokenSignatureInvalid, msg: "alg not allowed"}
	errBadSignature = &reasonError{kind: ErrSignature, cause: jwt.ErrTokenSignatureInvalid, msg: "signature mismatch"}
	errNoKid        = &reasonError{kind: ErrSignature, msg: "kid header missing or not a string"}
	errUnknownKid   = &reasonError{kind: ErrSignature, msg: "unknown kid"}
	errKidAlg       = &reasonError{kind: ErrSignature, msg: "alg does not match the key named by kid"}

	errWrongTyp = &reasonError{kind: ErrWrongType, msg: "typ header is not the expected token type"}

	errExpired = &reasonError{kind: ErrExpired, cause: jwt.ErrTokenExpired, msg: "exp has passed"}

	errIssuer          = &reasonError{kind: ErrInvalidClaims, cause: jwt.ErrTokenInvalidIssuer, msg: "wrong iss"}
	errAudience        = &reasonError{kind: ErrInvalidClaims, cause: jwt.ErrTokenInvalidAudience, msg: "aud does not name us"}
	errRequiredMissing = &reasonError{kind: ErrInvalidClaims, cause: jwt.ErrTokenRequiredClaimMissing, msg: "exp, iss or aud missing"}
	errNotYetValid     = &reasonError{kind: ErrInvalidClaims, cause: jwt.ErrTokenNotValidYet, msg: "nbf in the future"}
	errIssuedInFuture  = &reasonError{kind: ErrInvalidClaims, cause: jwt.ErrTokenUsedBeforeIssued, msg: "iat in the future"}
	errClaimsRejected  = &reasonError{kind: ErrInvalidClaims, cause: jwt.ErrTokenInvalidClaims, msg: "claims rejected"}
	errNoTokenVersion  = &reasonError{kind: ErrInvalidClaims, msg: "token_version missing"}
	errBadTokenVersion = &reasonError{kind: ErrInvalidClaims, msg: "token_version is not a non-negative integer"}
	errNoSubject       = &reasonError{kind: ErrInvalidClaims, msg: "sub missing or empty"}
	errNoIssuedAt      = &reasonError{kind: ErrInvalidClaims, msg: "iat missing"}
	errNoID            = &reasonError{kind: ErrInvalidClaims, msg: "jti missing or empty"}
	errBadScope        = &reasonError{kind: ErrInvalidClaims, msg: "scope is not a valid rfc 6749 scope string"}
)

// forbiddenHeaders are header parameters we refuse outright. jku, jwk, x5u
// and x5c let a token name its own verification key (RFC 8725 section 3.10
// warns against trusting them); crit announces extensions that RFC 7515
// section 4.1.11 obliges us to understand, and we understand none (this also
// covers b64:false of RFC 7797, which needs crit).
var forbiddenHeaders = [...]struct {
	name string
	err  error
}{
	{"jku", &reasonError{kind: ErrInvalidClaims, msg: "header parameter jku not allowed"}},
	{"jwk", &reasonError{kind: ErrInvalidClaims, msg: "header parameter jwk not allowed"}},
	{"x5u", &reasonError{kind: ErrInvalidClaims, msg: "header parameter x5u not allowed"}},
	{"x5c", &reasonError{kind: ErrInvalidClaims, msg: "header parameter x5c not allowed"}},
	{"crit", &reasonError{kind: ErrInvalidClaims, msg: "header parameter crit not allowed"}},
}

// classify maps an error of jwt.Parser.ParseWithClaims to one of ours,
// dropping golang-jwt's detail text, which can quote the token (the alg name,
// JSON decoder messages).
func classify(err error) error {
	var re *reasonError
	if errors.As(err, &re) { // raised by our keyfunc
		return re
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errJWTMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return errAlgUnusable
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if errors.Is(err, jwt.ErrSignatureInvalid) {
			return errBadSignature
		}
		return errAlgNotValid
	}
	// Claim validation: golang-jwt joins every failure. Report the one that
	// says most about where the token came from first.
	switch {
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return errIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errAudience
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return errRequiredMissing
	case errors.Is(err, jwt.ErrTokenExpired):
		return errExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errNotYetValid
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errIssuedInFuture
	}
	return errClaimsRejected
}
