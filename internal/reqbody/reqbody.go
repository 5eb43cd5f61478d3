// Package reqbody parses the bodies of the token endpoints: the
// application/x-www-form-urlencoded body of /token and the JSON body of
// /refresh. The functions are pure, so they can be fuzzed without a server
// (issue 4, "Fuzzing"); the caller enforces the size cap before calling.
package reqbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
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
			return nil, fmt.Errorf("%w: %q", ErrRepeated, truncate(k))
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
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", ErrNotJSON
	}
	var (
		tok  string
		seen bool
	)
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return "", ErrNotJSON
		}
		key, ok := k.(string)
		if !ok {
			return "", ErrNotJSON
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return "", ErrNotJSON
		}
		if !strings.EqualFold(key, "refresh_token") {
			continue
		}
		if seen {
			return "", ErrDuplicateKey
		}
		seen = true
		if string(raw) == "null" {
			continue
		}
		if err := json.Unmarshal(raw, &tok); err != nil {
			return "", ErrNotJSON
		}
	}
	if end, err := dec.Token(); err != nil || end != json.Delim('}') {
		return "", ErrNotJSON
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", ErrNotJSON // trailing data
	}
	if !utf8.ValidString(tok) {
		return "", ErrNotJSON
	}
	return tok, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
