package caddymodule

import (
	"strings"
	"testing"
)

// The advice every same-site refusal gives.
const sameSiteAdvice = "set cookie_same_site none, or serve the app from the gateway's site"

// TestAdaptCookieSameSite pins the subdirective's JSON field, and its
// refusals.
func TestAdaptCookieSameSite(t *testing.T) {
	out, err := adapt(t, "http://localhost:9080 {\n\tcrudauth {\n\t\tcookie_same_site none\n\t\tallowed_origins https://a.example https://b.example\n\t}\n}")
	if err != nil {
		t.Fatal(err)
	}
	if got := handlerJSON(t, out)["cookie_same_site"]; got != "none" {
		t.Errorf("cookie_same_site = %v, want none", got)
	}
	for _, tc := range []struct{ block, want string }{
		{"cookie_same_site", "wrong argument count"},
		{"cookie_same_site lax strict", "wrong argument count"},
		{"cookie_same_site lax\n\t\tcookie_same_site none", "cookie_same_site is given twice"},
	} {
		_, err := adapt(t, "http://localhost:9080 {\n\tcrudauth {\n\t\t"+tc.block+"\n\t}\n}")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error = %v, want one containing %q", tc.block, err, tc.want)
		}
	}
}
