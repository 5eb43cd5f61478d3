// Package reqbody parses the bodies of the gateway's own endpoints: the
// application/x-www-form-urlencoded body of /token, the JSON body of
// /refresh, and either kind on the password endpoint. The functions are
// pure, so they can be fuzzed without a server; the caller enforces the size
// cap before calling.
package reqbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// Errors, each a client mistake answered with invalid_request. Their text
// is safe to show to the client: it never holds a value from the body.
var (
	ErrNotUTF8      = errors.New("the body is not valid UTF-8")
	ErrBadForm      = errors.New("the body is not a valid form")
	ErrRepeated     = errors.New("a parameter is repeated")
	ErrNotJSON      = errors.New("the body must be a JSON object with a string refresh_token")
	ErrDuplicateKey = errors.New("refresh_token is given more than once")

	// ErrNotObject and ErrRepeatedMember are ParseJSONStrings' errors; the
	// member name they may carry is the caller's, never the body's.
	ErrNotObject      = errors.New("the body must be a JSON object with string members")
	ErrRepeatedMember = errors.New("a member is given more than once")
)

// ParseForm parses a urlencoded body strictly: valid UTF-8 (before and after
// percent-decoding), well-formed escapes, and no parameter more than once
// (RFC 6749 section 3.2), so that no two readers of the same body can
// disagree on which value counts.
func ParseForm(body []byte) (url.Values, error) {
	if !utf8.Valid(body) {
		return nil, ErrNotUTF8
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, ErrBadForm
	}
	for k, v := range form {
		if len(v) > 1 {
			return nil, fmt.Errorf("%w: %.64q", ErrRepeated, k)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v[0]) {
			return nil, ErrNotUTF8
		}
	}
	return form, nil
}

// ParseRefreshJSON returns the refresh_token member of a JSON object body,
// "" when absent or null. Unlike encoding/json it refuses a repeated
// member, in any letter case (encoding/json matches names without case and
// keeps the last), and trailing data.
func ParseRefreshJSON(body []byte) (string, error) {
	vals, err := ParseJSONStrings(body, "refresh_token")
	switch {
	case errors.Is(err, ErrRepeatedMember):
		return "", ErrDuplicateKey
	case err != nil:
		return "", ErrNotJSON
	}
	return vals[0], nil
}

// ParseJSONStrings reads a body that must be one JSON object and returns the
// string values of the named members, in the order of names; an absent or
// null member gives "". Names are matched without regard to letter case, as
// encoding/json matches them, but a name given more than once in any case
// is refused (encoding/json would keep the last one, so a check and a use
// of the same body could see different values). Other members may hold any
// JSON value and are ignored. The body must be valid UTF-8 and a value
// must not escape half a surrogate pair (\ud800), since encoding/json would
// silently turn either into U+FFFD on its way to a password hash; nothing
// may follow the object. names must be distinct under case
// folding.
func ParseJSONStrings(body []byte, names ...string) ([]string, error) {
	if !utf8.Valid(body) {
		return nil, ErrNotUTF8
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, ErrNotObject
	}
	vals := make([]string, len(names))
	seen := make([]bool, len(names))
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, ErrNotObject
		}
		key, ok := k.(string)
		if !ok {
			return nil, ErrNotObject
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, ErrNotObject
		}
		i := slices.IndexFunc(names, func(n string) bool { return strings.EqualFold(key, n) })
		if i < 0 {
			continue
		}
		if seen[i] {
			return nil, fmt.Errorf("%w: %s", ErrRepeatedMember, names[i])
		}
		seen[i] = true
		if string(raw) == "null" {
			continue
		}
		if err := json.Unmarshal(raw, &vals[i]); err != nil || loneSurrogate(raw) {
			return nil, fmt.Errorf("%w: %s is not a string", ErrNotObject, names[i])
		}
	}
	if end, err := dec.Token(); err != nil || end != json.Delim('}') {
		return nil, ErrNotObject
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, ErrNotObject // trailing data
	}
	return vals, nil
}

// loneSurrogate reports whether the JSON string literal raw holds a \u
// escape of a UTF-16 surrogate that is not half of a high-low pair.
func loneSurrogate(raw []byte) bool {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if i >= len(raw) || raw[i] != 'u' {
			continue
		}
		r := hex4(raw[i+1:])
		i += 4
		switch {
		case r < 0xd800 || r > 0xdfff:
		case r >= 0xdc00:
			return true // a low half first
		case i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u':
			return true // a high half alone
		default:
			if lo := hex4(raw[i+3:]); lo < 0xdc00 || lo > 0xdfff {
				return true
			}
			i += 6
		}
	}
	return false
}

// hex4 decodes the four hex digits at the start of b, which the JSON
// decoder has already checked are there; -1 if they are not.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return -1
		}
	}
	return r
}
