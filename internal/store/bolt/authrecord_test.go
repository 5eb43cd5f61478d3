package bolt

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

var authRecordCases = []struct {
	name string
	st   store.AuthState
	want []byte // nil: not checked
}{
	{"zero", store.AuthState{}, []byte{1, 0, 0, 0}},
	{"plain", store.AuthState{Username: "alice", TokenVersion: 3},
		[]byte{1, 0, 3, 5, 'a', 'l', 'i', 'c', 'e'}},
	{"disabled", store.AuthState{Username: "b", Disabled: true}, []byte{1, 1, 0, 1, 'b'}},
	{"empty scopes", store.AuthState{Username: "c", AllowedScopes: []string{}}, []byte{1, 2, 0, 1, 'c', 0}},
	{"one empty scope", store.AuthState{Username: "d", AllowedScopes: []string{""}}, []byte{1, 2, 0, 1, 'd', 1, 0}},
	{"scopes", store.AuthState{Username: "e", TokenVersion: 128, Disabled: true, AllowedScopes: []string{"read", "api:write"}},
		[]byte{1, 3, 0x80, 1, 1, 'e', 2, 4, 'r', 'e', 'a', 'd', 9, 'a', 'p', 'i', ':', 'w', 'r', 'i', 't', 'e'}},
	{"max version", store.AuthState{Username: "f", TokenVersion: math.MaxUint64}, nil},
	{"empty username", store.AuthState{TokenVersion: 1, AllowedScopes: []string{"x"}}, nil},
	{"unicode and bytes", store.AuthState{Username: "Zoë\x00\xff", AllowedScopes: []string{"é", "\x00"}}, nil},
	{"long", store.AuthState{Username: strings.Repeat("n", 300), AllowedScopes: []string{strings.Repeat("s", 200), "t"}}, nil},
	{"many scopes", store.AuthState{Username: "g", AllowedScopes: strings.Split(strings.Repeat("a,", 199)+"z", ",")}, nil},
	{"one session", store.AuthState{Username: "h", Sessions: []string{"sa"}}, []byte{1, 4, 0, 1, 'h', 1, 2, 's', 'a'}},
	{"sessions and scopes", store.AuthState{Username: "i", TokenVersion: 2, Disabled: true, AllowedScopes: []string{}, Sessions: []string{"a", "ab", "b"}},
		[]byte{1, 7, 2, 1, 'i', 0, 3, 1, 'a', 2, 'a', 'b', 1, 'b'}},
	{"many sessions", store.AuthState{Username: "j", AllowedScopes: []string{"x"}, Sessions: manySessions(300)}, nil},
}

// manySessions returns n distinct session IDs in ascending order.
func manySessions(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("s%05d%s", i, strings.Repeat("z", 20))
	}
	return out
}

func TestAuthRecordRoundTrip(t *testing.T) {
	for _, tc := range authRecordCases {
		t.Run(tc.name, func(t *testing.T) {
			rec := appendAuthRecord(nil, tc.st)
			if tc.want != nil && !bytes.Equal(rec, tc.want) {
				t.Errorf("encoded % x, want % x", rec, tc.want)
			}
			got, err := decodeAuthRecord(rec)
			if err != nil {
				t.Fatalf("decode % x: %v", rec, err)
			}
			if !sameAuthState(got, tc.st) {
				t.Errorf("round trip: %#v, want %#v", got, tc.st)
			}
			// Appending to a non-empty buffer leaves its prefix alone.
			prefixed := appendAuthRecord([]byte("xy"), tc.st)
			if string(prefixed[:2]) != "xy" || !bytes.Equal(prefixed[2:], rec) {
				t.Errorf("append to a prefix: % x", prefixed)
			}
			// The result does not alias the input (which is the mmap in
			// the store).
			for i := range rec {
				rec[i] = 0xee
			}
			if !sameAuthState(got, tc.st) {
				t.Errorf("decoded state changed with its input: %#v", got)
			}
			// Every strict prefix is refused, and so is any suffix.
			rec = appendAuthRecord(nil, tc.st)
			for n := range len(rec) {
				if _, err := decodeAuthRecord(rec[:n]); !errors.Is(err, errAuthRecord) {
					t.Errorf("prefix of %d bytes: %v, want errAuthRecord", n, err)
				}
			}
			if _, err := decodeAuthRecord(append(rec, 0)); !errors.Is(err, errAuthRecord) {
				t.Errorf("trailing byte: %v, want errAuthRecord", err)
			}
		})
	}
}

func TestAuthRecordRejects(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		rec        []byte
	}{
		{"empty", "0 bytes", nil},
		{"format only", "1 bytes", []byte{1}},
		{"unknown format", "unknown format 2", []byte{2, 0, 0, 0}},
		{"format zero", "unknown format 0", []byte{0, 0, 0, 0}},
		{"unknown flag", "unknown flags 0x8", []byte{1, 8, 0, 0}},
		{"high flag", "unknown flags 0x80", []byte{1, 0x80, 0, 0}},
		{"no version", "truncated uvarint", []byte{1, 0}},
		{"truncated version", "truncated uvarint", []byte{1, 0, 0x80}},
		{"non-minimal version", "non-minimal uvarint", []byte{1, 0, 0x80, 0, 0}},
		{"non-minimal length", "non-minimal uvarint", []byte{1, 0, 0, 0x81, 0, 'a'}},
		{"version overflow", "overflows", []byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0}},
		{"version too long", "overflows", []byte{1, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0}},
		{"no username", "truncated uvarint", []byte{1, 0, 0}},
		{"short username", "exceeds the record", []byte{1, 0, 0, 3, 'a', 'b'}},
		{"huge username", "exceeds the record", []byte{1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a'}},
		{"scoped without count", "truncated uvarint", []byte{1, 2, 0, 0}},
		{"huge scope count", "scope count", []byte{1, 2, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"count above the rest", "scope count 3", []byte{1, 2, 0, 0, 3, 0, 0}},
		{"short scope", "exceeds the record", []byte{1, 2, 0, 0, 1, 2, 'a'}},
		{"missing scope", "truncated uvarint", []byte{1, 2, 0, 0, 2, 1, 'a'}},
		{"trailing", "1 trailing bytes", []byte{1, 0, 0, 0, 0}},
		{"scopes without flag", "2 trailing bytes", []byte{1, 0, 0, 0, 1, 0}},
		{"trailing after scopes", "1 trailing bytes", []byte{1, 2, 0, 0, 1, 0, 'x'}},
		{"sessions flag, no count", "truncated uvarint", []byte{1, 4, 0, 0}},
		{"sessions flag, count 0", "session flag with no session", []byte{1, 4, 0, 0, 0}},
		{"huge session count", "session count", []byte{1, 4, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"short session", "exceeds the record", []byte{1, 4, 0, 0, 1, 2, 'a'}},
		{"missing session", "truncated uvarint", []byte{1, 4, 0, 0, 2, 1, 'a'}},
		{"empty session id", "cannot name a session", []byte{1, 4, 0, 0, 1, 0}},
		{"separator in session id", "cannot name a session", []byte{1, 4, 0, 0, 1, 2, 'a', 0}},
		{"duplicate session", "not strictly ascending", []byte{1, 4, 0, 0, 2, 1, 'a', 1, 'a'}},
		{"unsorted sessions", "not strictly ascending", []byte{1, 4, 0, 0, 2, 1, 'b', 1, 'a'}},
		{"sessions without flag", "3 trailing bytes", []byte{1, 0, 0, 0, 1, 1, 'a'}},
		{"both flags, one list", "truncated uvarint", []byte{1, 6, 0, 0, 1, 1, 'a'}},
		{"trailing after sessions", "1 trailing bytes", []byte{1, 4, 0, 0, 1, 1, 'a', 'x'}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := decodeAuthRecord(tc.rec)
			if !errors.Is(err, errAuthRecord) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decode % x = %#v, %v; want an errAuthRecord mentioning %q", tc.rec, st, err, tc.want)
			}
			if !sameAuthState(st, store.AuthState{}) {
				t.Errorf("failed decode returned %#v, want the zero state", st)
			}
		})
	}
}

// FuzzAuthRecord: decoding arbitrary bytes never panics and accepts only
// canonical encodings (re-encoding gives the same bytes), and encoding any
// state decodes to it.
func FuzzAuthRecord(f *testing.F) {
	for _, tc := range authRecordCases {
		rec := appendAuthRecord(nil, tc.st)
		f.Add(rec, tc.st.Username, tc.st.TokenVersion, tc.st.Disabled, tc.st.AllowedScopes != nil, strings.Join(tc.st.AllowedScopes, "\x00"), strings.Join(tc.st.Sessions, "\x00"))
		f.Add(rec[:len(rec)-1], "", uint64(0), false, false, "", "")
		f.Add(append(rec, 0), "", uint64(0), false, false, "", "")
	}
	f.Add([]byte{1, 2, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, "", uint64(0), false, true, "", "")
	f.Add([]byte{1, 4, 0, 0, 2, 1, 'b', 1, 'a'}, "", uint64(0), false, false, "", "b\x00a\x00a")
	f.Fuzz(func(t *testing.T, data []byte, username string, version uint64, disabled, scoped bool, scopes, sessions string) {
		if st, err := decodeAuthRecord(data); err == nil {
			if again := appendAuthRecord(nil, st); !bytes.Equal(again, data) {
				t.Fatalf("decode(% x) = %#v re-encodes as % x", data, st, again)
			}
		} else if !errors.Is(err, errAuthRecord) {
			t.Fatalf("decode(% x): error %v does not wrap errAuthRecord", data, err)
		}

		st := store.AuthState{Username: username, TokenVersion: version, Disabled: disabled}
		if scoped {
			st.AllowedScopes = []string{}
			if scopes != "" {
				st.AllowedScopes = strings.Split(scopes, "\x00")
			}
		}
		// As the sessions bucket's keys give them: sorted, distinct, none
		// empty, no 0x00 (the separator here).
		if sessions != "" {
			st.Sessions = slices.Compact(slices.Sorted(slices.Values(strings.Split(sessions, "\x00"))))
			st.Sessions = slices.DeleteFunc(st.Sessions, func(s string) bool { return s == "" })
		}
		rec := appendAuthRecord(nil, st)
		got, err := decodeAuthRecord(rec)
		if err != nil {
			t.Fatalf("decode(encode(%#v)) = %v", st, err)
		}
		if !sameAuthState(got, st) {
			t.Fatalf("decode(encode(%#v)) = %#v", st, got)
		}
	})
}
