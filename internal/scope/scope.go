// Package scope is the scope algebra of the gateway: parsing scope strings as
// RFC 6749 section 3.3 defines them, and the set operations that decide what a
// token may hold (narrow, never widen).
package scope

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// MaxScopeLen is the longest single scope token accepted.
const MaxScopeLen = 128

// MaxScopes is the largest number of scope tokens accepted in one request.
const MaxScopes = 64

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid scope")

// Set is a sorted list of distinct scope tokens. The zero value is the empty
// set. A Set is never modified in place once built; operations return new
// sets.
type Set []string

// ValidToken reports whether s is a scope-token of RFC 6749 section 3.3:
// one or more of %x21 / %x23-5B / %x5D-7E (printable ASCII except space,
// double quote and backslash).
func ValidToken(s string) bool {
	if s == "" || len(s) > MaxScopeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Parse parses a scope parameter: scope tokens separated by single spaces
// (RFC 6749 section 3.3). Leading, trailing and repeated spaces are
// tolerated; any other whitespace or character outside the grammar is an
// error. Duplicates collapse. The empty string gives the empty set.
func Parse(s string) (Set, error) {
	if s == "" {
		return nil, nil
	}
	return New(strings.Split(s, " ")...)
}

// New builds a Set from individual tokens, rejecting invalid ones. Empty
// strings are skipped (they come from repeated separators).
func New(tokens ...string) (Set, error) {
	out := make(Set, 0, len(tokens))
	for _, t := range tokens {
		if t == "" {
			continue
		}
		if !ValidToken(t) {
			return nil, fmt.Errorf("%w: %.32q is not a valid scope token", ErrInvalid, t)
		}
		out = append(out, t)
		if len(out) > MaxScopes {
			return nil, fmt.Errorf("%w: more than %d scopes", ErrInvalid, MaxScopes)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// MustNew is New for constants in tests and defaults; it panics on error.
func MustNew(tokens ...string) Set {
	s, err := New(tokens...)
	if err != nil {
		panic(err)
	}
	return s
}

// String joins the set with single spaces, the wire form of a scope parameter.
func (s Set) String() string { return strings.Join(s, " ") }

// Contains reports whether tok is in s.
func (s Set) Contains(tok string) bool {
	_, ok := slices.BinarySearch(s, tok)
	return ok
}

// ContainsAll reports whether every element of sub is in s.
func (s Set) ContainsAll(sub Set) bool {
	i := 0
	for _, want := range sub {
		for i < len(s) && s[i] < want {
			i++
		}
		if i == len(s) || s[i] != want {
			return false
		}
		i++
	}
	return true
}

// Intersect returns the elements present in both s and o.
func (s Set) Intersect(o Set) Set {
	var out Set
	i, j := 0, 0
	for i < len(s) && j < len(o) {
		switch {
		case s[i] == o[j]:
			out = append(out, s[i])
			i++
			j++
		case s[i] < o[j]:
			i++
		default:
			j++
		}
	}
	return out
}

// Missing returns the elements of want that are not in s.
func (s Set) Missing(want Set) Set {
	var out Set
	for _, w := range want {
		if !s.Contains(w) {
			out = append(out, w)
		}
	}
	return out
}

// Equal reports whether s and o hold the same tokens.
func (s Set) Equal(o Set) bool { return slices.Equal(s, o) }

// Grant computes the scopes a login or refresh may hold: requested (or
// defaults, when nothing is requested) intersected with the ceiling and,
// when userAllowed is non-nil, with the user's own allowed list. A client can
// narrow but never widen.
func Grant(requested, defaults, ceiling Set, userAllowed *Set) Set {
	want := requested
	if len(want) == 0 {
		want = defaults
	}
	got := want.Intersect(ceiling)
	if userAllowed != nil {
		got = got.Intersect(*userAllowed)
	}
	return got
}
