package headers

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/auth"
)

// TestStrip: every spelling a server may fold into an identity header is
// removed, other headers stay, and Connection loses the identity headers'
// names only.
func TestStrip(t *testing.T) {
	ih := NewIdentity("X-User-Id", "X-User-Name", "X-User-Scopes", []string{"X-Tenant"})
	for _, tc := range []struct {
		name     string
		in, want http.Header
	}{
		{"own, any case", http.Header{"X-User-Id": {"1"}, "x-user-name": {"a"}, "X-USER-SCOPES": {"s"}, "Accept": {"*/*"}},
			http.Header{"Accept": {"*/*"}}},
		{"CGI spellings", http.Header{"X_User_Id": {"1"}, "X.User.Name": {"a"}, "X~User+Scopes": {"s"}}, http.Header{}},
		{"foreign", http.Header{"X-Forwarded-User": {"root"}, "Remote-User": {"root"}, "X_Webauth_User": {"root"}}, http.Header{}},
		{"extra", http.Header{"X-Tenant": {"t"}, "X-Tenants": {"kept"}}, http.Header{"X-Tenants": {"kept"}}},
		{"connection names", http.Header{"Connection": {"keep-alive, X-User-Id", "x_user_scopes"}},
			http.Header{"Connection": {"keep-alive"}}},
		{"connection emptied", http.Header{"Connection": {"X-User-Name"}}, http.Header{}},
		{"connection untouched", http.Header{"Connection": {"close"}}, http.Header{"Connection": {"close"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.in.Clone()
			ih.Strip(h)
			if !reflect.DeepEqual(h, tc.want) {
				t.Errorf("Strip(%v) = %v, want %v", tc.in, h, tc.want)
			}
		})
	}
	h := http.Header{}
	ih.Set(h, auth.Principal{UserID: "1", Username: "alice", ScopeString: "me:read"})
	if want := (http.Header{"X-User-Id": {"1"}, "X-User-Name": {"alice"}, "X-User-Scopes": {"me:read"}}); !reflect.DeepEqual(h, want) {
		t.Errorf("Set: %v", h)
	}
}

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check func(string) error
		in    string
		ok    bool
	}{
		{"identity", CheckIdentityName, "X-User-Id", true},
		{"identity hop-by-hop", CheckIdentityName, "Connection", false},
		{"identity routing, other spelling", CheckIdentityName, "X_Forwarded_For", false},
		{"identity empty", CheckIdentityName, "", false},
		{"token", CheckToken, "X-Custom-1", true},
		{"token underscore", CheckToken, "X_Custom", false},
		{"cookie", func(s string) error { return CheckCookieName(s, "/auth/refresh") }, "__Secure-rt", true},
		{"cookie separator", func(s string) error { return CheckCookieName(s, "/") }, "a;b", false},
		{"cookie __Host- off root", func(s string) error { return CheckCookieName(s, "/auth/refresh") }, "__Host-rt", false},
		{"cookie __Host- at root", func(s string) error { return CheckCookieName(s, "/") }, "__host-rt", true},
	} {
		if err := tc.check(tc.in); (err == nil) != tc.ok {
			t.Errorf("%s: %q: %v, want ok=%v", tc.name, tc.in, err, tc.ok)
		}
	}
}

func TestStripCookie(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string // nil: no Cookie header left
	}{
		{[]string{"rt=secret; theme=dark"}, []string{"theme=dark"}},
		{[]string{"rt=secret", "a=1; rt=2"}, []string{"a=1"}},
		{[]string{"rt=secret"}, nil},
		{[]string{"rtx=1; a=2"}, []string{"rtx=1; a=2"}},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header["Cookie"] = tc.in
		StripCookie(r, "rt")
		if got := r.Header["Cookie"]; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("StripCookie(%q) left %q, want %q", tc.in, got, tc.want)
		}
	}
}
