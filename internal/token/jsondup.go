package token

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode"
	"unicode/utf8"
)

// Duplicate member names in a JWS header or JWT payload are refused (RFC 7515
// section 5.2 step 4, RFC 7519 section 7.2 step 4, RFC 8725 section 3.11).
// encoding/json silently keeps the last of two equal names, and it matches
// struct fields without regard to case, with Unicode simple folding ("SUB",
// "ſub" and "\u0073ub" all fill the sub field). So two names collide here
// when they are equal under the same folding encoding/json uses, which is
// stricter than the RFCs and costs nothing for the tokens we issue.
//
// Only the top level is checked: nothing we read lives deeper.
//
// The common case (ASCII names without escapes, as we issue) is handled by a
// single allocation-free pass over the bytes. Any escaped or non-ASCII name
// sends the object to duplicateMembersSlow, which unquotes names with
// encoding/json's own Decoder.Token.

var errNotObject = errors.New("not a json object")

type span struct{ lo, hi int }

// duplicateMembers reports whether the JSON object b has two top-level
// members whose names collide. b must already have been accepted by
// encoding/json (golang-jwt decodes it before we look); other input gives an
// error or an arbitrary answer, never a panic.
func duplicateMembers(b []byte) (bool, error) {
	var arr [24]span
	keys, slow, err := topLevelKeys(b, arr[:0])
	if err != nil {
		return false, err
	}
	if slow {
		return duplicateMembersSlow(b)
	}
	for i := 1; i < len(keys); i++ {
		ki := b[keys[i].lo:keys[i].hi]
		for j := 0; j < i; j++ {
			if asciiEqualFold(ki, b[keys[j].lo:keys[j].hi]) {
				return true, nil
			}
		}
	}
	return false, nil
}

// topLevelKeys returns the raw (still quoted-content) spans of the top-level
// member names of the object b, and slow=true when any name holds an escape
// or a non-ASCII byte.
func topLevelKeys(b []byte, keys []span) (_ []span, slow bool, _ error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false, errNotObject
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			if i >= len(b) || b[i] != '"' {
				return nil, false, errNotObject
			}
			end, special := scanString(b, i)
			if end < 0 {
				return nil, false, errNotObject
			}
			slow = slow || special
			keys = append(keys, span{i + 1, end - 1})
			i = skipWS(b, end)
			if i >= len(b) || b[i] != ':' {
				return nil, false, errNotObject
			}
			i = skipValue(b, skipWS(b, i+1))
			if i < 0 {
				return nil, false, errNotObject
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return nil, false, errNotObject
			}
			if b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if b[i] != '}' {
				return nil, false, errNotObject
			}
			i++
			break
		}
	}
	if skipWS(b, i) != len(b) {
		return nil, false, errNotObject
	}
	return keys, slow, nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString scans the string starting at the quote b[i]. It returns the
// index just past the closing quote (-1 if there is none) and whether the
// content holds a backslash or a non-ASCII byte.
func scanString(b []byte, i int) (end int, special bool) {
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, special
		case c == '\\':
			special = true
			i++ // skip the escaped byte; \uXXXX digits need no care
		case c >= utf8.RuneSelf:
			special = true
		}
	}
	return -1, special
}

// skipValue returns the index just past the JSON value starting at b[i], or
// -1. Containers are skipped by depth counting: the input was validated.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := scanString(b, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, _ := scanString(b, i)
				if end < 0 {
					return -1
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	}
	// number, true, false, null
	start := i
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if i == start {
				return -1
			}
			return i
		}
		i++
	}
	if i == start {
		return -1
	}
	return i
}

// asciiEqualFold is encoding/json's name folding restricted to ASCII: letters
// compare without regard to case, every other byte exactly.
func asciiEqualFold[T string | []byte](a, b T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// duplicateMembersSlow is the reference implementation: it unquotes every
// top-level name with encoding/json's Decoder.Token and compares the names
// folded as encoding/json folds them.
func duplicateMembersSlow(b []byte) (bool, error) {
	// The copy keeps b from escaping (the decoder does), so the fast path's
	// callers can decode into a stack buffer.
	dec := json.NewDecoder(bytes.NewReader(bytes.Clone(b)))
	t, err := dec.Token()
	if err != nil {
		return false, errNotObject
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return false, errNotObject
	}
	seen := make(map[string]struct{}, 16)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false, errNotObject
		}
		name, ok := t.(string)
		if !ok {
			return false, errNotObject
		}
		f := foldName(name)
		if _, dup := seen[f]; dup {
			return true, nil
		}
		seen[f] = struct{}{}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false, errNotObject
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return false, errNotObject
	}
	if _, err := dec.Token(); err != io.EOF {
		return false, errNotObject
	}
	return false, nil
}

// foldName folds a member name the way encoding/json does when it matches a
// name to a struct field (its fold.go): ASCII letters to upper case, other
// runes to the smallest rune of their simple fold orbit.
func foldName(s string) string {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		switch {
		case r < utf8.RuneSelf:
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			out = append(out, byte(r))
		default:
			out = utf8.AppendRune(out, foldRune(r))
		}
	}
	return string(out)
}

func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}
