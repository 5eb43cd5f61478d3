package gate

import (
	"slices"
	"testing"
)

func TestStricter(t *testing.T) {
	g := &Gate{realm: "r"}
	pub := &Rule{Public: true}
	free := &Rule{}
	admin := &Rule{Scopes: []string{"admin"}}
	write := &Rule{Scopes: []string{"write"}}
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
		got := g.stricter(tc.a, tc.b)
		isPub := got != nil && got.Public
		var scopes []string
		if got != nil {
			scopes = got.Scopes
		}
		if isPub != tc.pub || !slices.Equal(scopes, tc.want) {
			t.Errorf("stricter(%+v, %+v) = %+v", tc.a, tc.b, got)
		}
	}
}
