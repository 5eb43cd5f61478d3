package endpoints

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestSameOrigin: origins match on scheme, host and port, with default
// ports made explicit, for the request's own origin and allowed_origins.
func TestSameOrigin(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tls     bool
		host    string
		allowed []string
		origin  string
		want    bool
	}{
		{"same origin", false, "localhost:9080", nil, "http://localhost:9080", true},
		{"same origin, letter case", false, "LocalHost:9080", nil, "HTTP://localhost:9080", true},
		{"https for an http site", false, "localhost:9080", nil, "https://localhost:9080", false},
		{"http for an https site", true, "example.com", nil, "http://example.com", false},
		{"https site", true, "example.com", nil, "https://example.com", true},
		{"https site, default port written", true, "example.com", nil, "https://example.com:443", true},
		{"https site, host with default port", true, "example.com:443", nil, "https://example.com", true},
		{"http site, default port written", false, "example.com", nil, "http://example.com:80", true},
		{"http site, the https port", false, "example.com", nil, "http://example.com:443", false},
		{"https origin on the http port", false, "example.com", nil, "https://example.com:80", false},
		{"other port", false, "localhost:9080", nil, "http://localhost:9081", false},
		{"no port for a site on a port", false, "localhost:9080", nil, "http://localhost", false},
		{"port for a site on the default port", true, "example.com", nil, "https://example.com:8443", false},
		{"IPv6", false, "[::1]:9080", nil, "http://[::1]:9080", true},
		{"IPv6, other port", false, "[::1]:9080", nil, "http://[::1]:9081", false},
		{"userinfo", false, "localhost:9080", nil, "http://localhost:9080@evil.example", false},
		{"userinfo naming the site", false, "localhost:9080", nil, "http://x@localhost:9080", false},
		{"path", false, "localhost:9080", nil, "http://localhost:9080/", false},
		{"query", false, "localhost:9080", nil, "http://localhost:9080?", false},
		{"fragment", false, "localhost:9080", nil, "http://localhost:9080#", false},
		{"null", false, "localhost:9080", nil, "null", false},
		{"another scheme", false, "localhost:9080", nil, "ftp://localhost:9080", false},
		{"lookalike", false, "localhost:9080", nil, "http://localhost:9080.evil.example", false},
		{"allowed", false, "localhost:9080", []string{"https://app.example"}, "https://app.example", true},
		{"allowed, default port written", false, "localhost:9080", []string{"https://app.example"}, "https://app.example:443", true},
		{"allowed with its default port", false, "localhost:9080", []string{"https://app.example:443"}, "https://app.example", true},
		{"allowed, letter case", false, "localhost:9080", []string{"https://App.Example"}, "https://app.example", true},
		{"allowed, other scheme", false, "localhost:9080", []string{"https://app.example"}, "http://app.example", false},
		{"allowed, other port", false, "localhost:9080", []string{"https://app.example"}, "https://app.example:8443", false},
		{"allowed, http port for https", false, "localhost:9080", []string{"https://app.example"}, "https://app.example:80", false},
		{"allowed on a port, no port", false, "localhost:9080", []string{"http://app.example:8080"}, "http://app.example", false},
		{"allowed, a subdomain", false, "localhost:9080", []string{"https://app.example"}, "https://x.app.example", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Config{AllowedOrigins: tc.allowed})
			r := httptest.NewRequest(http.MethodPost, "http://"+tc.host+"/refresh", nil)
			r.Host = tc.host
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			r.Header.Set("Origin", tc.origin)
			if got := s.sameOrigin(r); got != tc.want {
				t.Errorf("sameOrigin(Origin %q, Host %q, TLS %v, allowed %q) = %v, want %v",
					tc.origin, tc.host, tc.tls, tc.allowed, got, tc.want)
			}
		})
	}
}
