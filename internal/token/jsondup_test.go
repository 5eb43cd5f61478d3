package token

import (
	"encoding/json"
	"testing"
)

var dupCases = []struct {
	in  string
	dup bool
	err bool
}{
	{`{}`, false, false},
	{` { } `, false, false},
	{`{"a":1}`, false, false},
	{`{"a":1,"b":2}`, false, false},
	{`{"a":1,"a":2}`, true, false},
	{`{"a":1,"A":2}`, true, false},
	{`{"sub":"x","SUB":"y"}`, true, false},
	{`{"sub":"x","\u0073ub":"y"}`, true, false},
	{`{"sub":"x","ſub":"y"}`, true, false},
	{`{"k":"x","\u212a":"y"}`, true, false}, // Kelvin sign folds to k
	{`{"a":{"a":1,"a":2}}`, false, false},
	{`{"a":[{"b":1}],"b":"}\"{","c":null,"d":true,"e":-1.5e3}`, false, false},
	{`{"a":[{"b":1}],"b":"}\"{","c":null,"d":true,"e":-1.5e3,"e":0}`, true, false},
	{`{"a\"b":1,"a\"b":2}`, true, false},
	{`{"ab":1,"a_b":2}`, false, false},
	{`{"a@":1,"a` + "`" + `":2}`, false, false}, // @ and ` are not letters: no folding
	{`{"[":1,"{":2}`, false, false},             // [ and { differ by 0x20 but are not letters
	{`{"é":1,"É":2}`, true, false},
	{`{"é":1,"e":2}`, false, false},
	{`{"a":1`, false, true},
	{`[1,2]`, false, true},
	{`"a"`, false, true},
	{`{"a":1}x`, false, true},
	{``, false, true},
}

func TestDuplicateMembers(t *testing.T) {
	for _, tt := range dupCases {
		dup, err := duplicateMembers([]byte(tt.in))
		if (err != nil) != tt.err || dup != tt.dup {
			t.Errorf("duplicateMembers(%s) = %v, %v; want dup %v err %v", tt.in, dup, err, tt.dup, tt.err)
		}
		sdup, serr := duplicateMembersSlow([]byte(tt.in))
		if (serr != nil) != tt.err || sdup != tt.dup {
			t.Errorf("duplicateMembersSlow(%s) = %v, %v; want dup %v err %v", tt.in, sdup, serr, tt.dup, tt.err)
		}
	}
}

// FuzzDuplicateMembers checks the fast scanner against the Decoder.Token
// reference on every valid JSON object.
func FuzzDuplicateMembers(f *testing.F) {
	for _, tt := range dupCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		b := []byte(in)
		dup, err := duplicateMembers(b) // must not panic on anything
		if !json.Valid(b) {
			return
		}
		sdup, serr := duplicateMembersSlow(b)
		if (err == nil) != (serr == nil) {
			t.Fatalf("fast err %v, slow err %v", err, serr)
		}
		if err == nil && dup != sdup {
			t.Fatalf("fast dup %v, slow dup %v", dup, sdup)
		}
	})
}
