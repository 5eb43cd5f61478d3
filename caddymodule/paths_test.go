package caddymodule

import (
	"slices"
	"testing"
)

func TestPathInterpretations(t *testing.T) {
	for p, want := range map[string][]string{
		"/api/users":          nil,
		"/file.txt":           nil,
		"/admin;x/y":          {"/admin/y"},
		`/public\..\admin\x`:  {"/public/../admin/x"},
		"/public/%2e%2e/x":    {"/public/../x"},
		"/admin./x":           {"/admin/x"},
		"/admin /x":           {"/admin/x"},
		"/public/..;/admin/x": {"/public/../admin/x"},
	} {
		got := pathInterpretations(p)
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("pathInterpretations(%q) = %q, missing %q", p, got, w)
			}
		}
		if want == nil && got != nil {
			t.Errorf("pathInterpretations(%q) = %q, want none", p, got)
		}
	}
}

func TestStricter(t *testing.T) {
	h := &Handler{Realm: "r"}
	pub := &Rule{Public: true}
	free := &Rule{}
	admin := &Rule{scopes: []string{"admin"}}
	write := &Rule{scopes: []string{"write"}}
	for _, tc := range []struct {
		a, b *Rule
		want []string // scopes; nil: no scope needed
		pub  bool
	}{
		{pub, pub, nil, true},
		{pub, nil, nil, false},
		{nil, pub, nil, false},
		{pub, free, nil, false},
		{free, admin, []string{"admin"}, false},
		{admin, pub, []string{"admin"}, false},
		{admin, admin, []string{"admin"}, false},
		{admin, write, []string{"admin", "write"}, false},
	} {
		got := h.stricter(tc.a, tc.b)
		isPub := got != nil && got.Public
		var scopes []string
		if got != nil {
			scopes = got.scopes
		}
		if isPub != tc.pub || !slices.Equal(scopes, tc.want) {
			t.Errorf("stricter(%+v, %+v) = %+v", tc.a, tc.b, got)
		}
	}
}

func TestTrailingDotOrSpace(t *testing.T) {
	for p, want := range map[string]bool{
		"": false, "/": false, "/admin/x": false, "/a/./b/../c": false, "/.": false, "/..": false,
		"/admin./x": true, "/admin /x": true, "/x/y.": true, "/x/y ": true, "/a/.../b": true, "//": false,
	} {
		if got := trailingDotOrSpace(p); got != want {
			t.Errorf("trailingDotOrSpace(%q) = %v, want %v", p, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { trailingDotOrSpace("/api/v1/reports/q3") }); n != 0 {
		t.Errorf("trailingDotOrSpace allocates %v times on an ordinary path", n)
	}
}
