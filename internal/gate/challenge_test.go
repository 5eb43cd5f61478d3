package gate

import "testing"

// TestBuildChallenge pins the WWW-Authenticate values of RFC 6750 section
// 3, all built by buildChallenge: the plain one, one per error code, and
// insufficient_scope with the scope a request lacked (a rule's, or the
// union stricter builds for two readings of one request).
func TestBuildChallenge(t *testing.T) {
	for _, tc := range []struct{ realm, code, scopes, want string }{
		{"crudauth", "", "", `Bearer realm="crudauth"`},
		{"crudauth", "invalid_token", "", `Bearer realm="crudauth", error="invalid_token"`},
		{"crudauth", "invalid_request", "", `Bearer realm="crudauth", error="invalid_request"`},
		{"crudauth", "insufficient_scope", "reports:read", `Bearer realm="crudauth", error="insufficient_scope", scope="reports:read"`},
		{"crudauth", "insufficient_scope", "admin reports:read", `Bearer realm="crudauth", error="insufficient_scope", scope="admin reports:read"`},
		{`my "realm"`, "", "", `Bearer realm="my \"realm\""`},
	} {
		if got := buildChallenge(tc.realm, tc.code, tc.scopes); got != tc.want {
			t.Errorf("buildChallenge(%q, %q, %q) = %s, want %s", tc.realm, tc.code, tc.scopes, got, tc.want)
		}
	}
}
