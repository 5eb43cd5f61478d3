package token

import "errors"

// MaxAuthorizationLen is the longest Authorization header value that
// ParseAuthorization looks at. Our tokens are a few hundred bytes; anything
// near this size is an attack or a misconfigured client, and refusing it
// before any scan keeps the cost of a hostile header constant.
const MaxAuthorizationLen = 8192

// ErrNoToken means the request carried no Authorization header at all. RFC
// 6750 section 3.1 says the challenge for such a request should carry no
// error code, so callers treat it apart from ErrMalformed.
var ErrNoToken = errors.New("no bearer token")

// Fixed errors for the header parser: they wrap ErrMalformed, never quote the
// header, and cost no allocation.
var (
	errHeaderTooLong = &reasonError{kind: ErrMalformed, msg: "authorization header too long"}
	errNotBearer     = &reasonError{kind: ErrMalformed, msg: "authorization scheme is not bearer"}
	errNoSeparator   = &reasonError{kind: ErrMalformed, msg: "bearer scheme not followed by a space"}
	errEmptyBearer   = &reasonError{kind: ErrMalformed, msg: "bearer credentials are empty"}
	errBadB64Token   = &reasonError{kind: ErrMalformed, msg: "bearer credentials are not a b64token"}
)

// b64tokenChar marks the bytes of the b64token production of RFC 6750
// section 2.1 other than the trailing "=" padding:
// ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/".
var b64tokenChar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~+/" {
		t[c] = true
	}
	return t
}()

// ParseAuthorization extracts the token from an Authorization header value
// of the form RFC 6750 section 2.1 defines:
//
//	credentials = "Bearer" 1*SP b64token
//	b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
//
// The scheme is matched without regard to ASCII case (RFC 7235 section 2.1).
// Only spaces separate it from the token; tabs, trailing whitespace and any
// other trailing bytes are refused. An empty header gives ErrNoToken; every
// other failure, other schemes such as Basic included, wraps ErrMalformed.
//
// The length is checked before anything else. The scan is a single pass and
// the token returned is a substring of header: success allocates nothing.
func ParseAuthorization(header string) (tok string, err error) {
	if len(header) > MaxAuthorizationLen {
		return "", errHeaderTooLong
	}
	if header == "" {
		return "", ErrNoToken
	}
	const scheme = "bearer"
	if len(header) < len(scheme) {
		return "", errNotBearer
	}
	for i := 0; i < len(scheme); i++ {
		// Every byte of "bearer" is a lower-case letter, and c|0x20 equals
		// such a letter only for that letter and its upper-case form.
		if header[i]|0x20 != scheme[i] {
			return "", errNotBearer
		}
	}
	i := len(scheme)
	if i == len(header) {
		return "", errEmptyBearer
	}
	if header[i] != ' ' {
		// "Bearerx", "Bearer\t..." and the like.
		return "", errNoSeparator
	}
	for i < len(header) && header[i] == ' ' {
		i++
	}
	start := i
	for i < len(header) && b64tokenChar[header[i]] {
		i++
	}
	if i == start {
		if i == len(header) {
			return "", errEmptyBearer
		}
		return "", errBadB64Token
	}
	for i < len(header) && header[i] == '=' {
		i++
	}
	if i != len(header) {
		return "", errBadB64Token
	}
	return header[start:], nil
}
