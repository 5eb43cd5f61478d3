package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// The auth bucket maps a user ID to the user's store.AuthState in a compact
// binary record, so that an AuthState miss reads a few dozen bytes instead of
// decoding the whole JSON user (password hash and timestamps included), and
// a million users' records fit in a few dozen MB of pages instead of the
// whole file.
//
// The record also lists the user's session IDs, so that a miss needs
// nothing else: scanning the user's keys in the sessions bucket instead
// would page in the leaves that hold their JSON records (hundreds of bytes
// each) on every miss, and a gateway serving many distinct users would
// end up with the whole sessions bucket resident.
//
// Format 1, in order:
//
//	format        1 byte, authFormat1
//	flags         1 byte: authFlagDisabled | authFlagScoped | authFlagSessions;
//	              other bits must be 0
//	token_version uvarint
//	username      uvarint length, then that many bytes
//	scopes        only when authFlagScoped: uvarint count, then count times
//	              (uvarint length, bytes)
//	sessions      only when authFlagSessions: uvarint count (at least 1), then
//	              count times (uvarint length, bytes), the session IDs in
//	              strictly ascending byte order, none empty or holding 0x00
//
// authFlagScoped distinguishes a nil AllowedScopes (flag clear: unrestricted)
// from a non-nil one, empty included (flag set, count 0: no scope at all).
// Sessions has no such distinction: a user without sessions has the flag
// clear and decodes to a nil Sessions.
// Uvarints must be minimal, and nothing may follow the last field, so every
// state has exactly one encoding and decodeAuthRecord(b) succeeding implies
// appendAuthRecord(nil, state) == b.
//
// authFlagSessions came with schema version 5: records written under
// schema 4 never have it, whatever sessions their user had, and Open's
// upgrade to 5 rewrites the record of every user with sessions. Builds
// that know only schema 4 refuse a schema 5 file, so no reader ever meets
// the flag without knowing it.
const (
	authFormat1 = 1

	authFlagDisabled = 1 << 0
	authFlagScoped   = 1 << 1
	authFlagSessions = 1 << 2
	authFlagsKnown   = authFlagDisabled | authFlagScoped | authFlagSessions
)

// errAuthRecord is wrapped by every decoding error.
var errAuthRecord = errors.New("malformed auth record")

// appendAuthRecord appends the format-1 encoding of st to dst. st.Sessions
// must be sorted, without duplicates, empty IDs or 0x00 bytes, as the
// sessions bucket's keys give them.
func appendAuthRecord(dst []byte, st store.AuthState) []byte {
	var flags byte
	if st.Disabled {
		flags |= authFlagDisabled
	}
	if st.AllowedScopes != nil {
		flags |= authFlagScoped
	}
	if len(st.Sessions) > 0 {
		flags |= authFlagSessions
	}
	dst = append(dst, authFormat1, flags)
	dst = binary.AppendUvarint(dst, st.TokenVersion)
	dst = appendLenString(dst, st.Username)
	if st.AllowedScopes != nil {
		dst = binary.AppendUvarint(dst, uint64(len(st.AllowedScopes)))
		for _, s := range st.AllowedScopes {
			dst = appendLenString(dst, s)
		}
	}
	if len(st.Sessions) > 0 {
		dst = binary.AppendUvarint(dst, uint64(len(st.Sessions)))
		for _, s := range st.Sessions {
			dst = appendLenString(dst, s)
		}
	}
	return dst
}

func appendLenString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decodeAuthRecord decodes a format-1 record. The result shares no memory
// with data (which may point into the mmap): all strings are substrings of
// one copy of data, so a decode costs one allocation, plus one for scopes
// and one for sessions.
func decodeAuthRecord(data []byte) (store.AuthState, error) {
	var st store.AuthState
	if len(data) < 2 {
		return st, fmt.Errorf("%w: %d bytes", errAuthRecord, len(data))
	}
	if data[0] != authFormat1 {
		return st, fmt.Errorf("%w: unknown format %d", errAuthRecord, data[0])
	}
	flags := data[1]
	if flags&^authFlagsKnown != 0 {
		return st, fmt.Errorf("%w: unknown flags %#x", errAuthRecord, flags)
	}
	d := authDecoder{b: data, s: string(data), i: 2}
	st.Disabled = flags&authFlagDisabled != 0
	st.TokenVersion = d.uvarint()
	st.Username = d.str()
	if flags&authFlagScoped != 0 {
		n := d.uvarint()
		// Every scope takes at least its one-byte length: a count larger
		// than what is left is garbage, and must not size an allocation.
		if d.err == nil && n > uint64(len(d.b)-d.i) {
			d.fail("scope count %d exceeds the record", n)
		}
		if d.err == nil {
			st.AllowedScopes = []string{} // non-nil even when n == 0
			if n > 0 {
				st.AllowedScopes = make([]string, n)
				for k := range st.AllowedScopes {
					st.AllowedScopes[k] = d.str()
				}
			}
		}
	}
	if flags&authFlagSessions != 0 {
		n := d.uvarint()
		switch {
		case d.err != nil:
		case n == 0:
			d.fail("session flag with no session")
		case n > uint64(len(d.b)-d.i):
			// As for scopes: garbage must not size an allocation.
			d.fail("session count %d exceeds the record", n)
		default:
			st.Sessions = make([]string, n)
			for k := range st.Sessions {
				sid := d.str()
				switch {
				case d.err != nil:
				case sid == "" || strings.IndexByte(sid, 0) >= 0:
					d.fail("session id %q cannot name a session", sid)
				case k > 0 && sid <= st.Sessions[k-1]:
					d.fail("session ids not strictly ascending")
				}
				st.Sessions[k] = sid
			}
		}
	}
	if d.err == nil && d.i != len(d.b) {
		d.fail("%d trailing bytes", len(d.b)-d.i)
	}
	if d.err != nil {
		return store.AuthState{}, d.err
	}
	return st, nil
}

// authDecoder reads fields from b at i; s is string(b), the one copy all
// decoded strings are cut from. After the first error every read returns a
// zero value and err keeps that error.
type authDecoder struct {
	b   []byte
	s   string
	i   int
	err error
}

func (d *authDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s (at byte %d)", errAuthRecord, fmt.Sprintf(format, args...), d.i)
	}
}

func (d *authDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.i:])
	switch {
	case n == 0:
		d.fail("truncated uvarint")
		return 0
	case n < 0:
		d.fail("uvarint overflows 64 bits")
		return 0
	case n > 1 && d.b[d.i+n-1] == 0:
		// A multi-byte uvarint ending in 0x00 has a shorter form.
		d.fail("non-minimal uvarint")
		return 0
	}
	d.i += n
	return v
}

func (d *authDecoder) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)-d.i) {
		d.fail("string of %d bytes exceeds the record", n)
		return ""
	}
	s := d.s[d.i : d.i+int(n)]
	d.i += int(n)
	return s
}

// sameAuthState reports whether a and b are equal, telling a nil
// AllowedScopes from an empty one (but not a nil Sessions from an empty
// one: both mean no session).
func sameAuthState(a, b store.AuthState) bool {
	return a.Username == b.Username && a.TokenVersion == b.TokenVersion && a.Disabled == b.Disabled &&
		(a.AllowedScopes == nil) == (b.AllowedScopes == nil) && slices.Equal(a.AllowedScopes, b.AllowedScopes) &&
		slices.Equal(a.Sessions, b.Sessions)
}
