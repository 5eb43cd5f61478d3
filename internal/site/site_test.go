package site

import "testing"

func TestSame(t *testing.T) {
	for _, tc := range []struct {
		name           string
		schemeA, hostA string
		schemeB, hostB string
		want           bool
	}{
		{"same host", "https", "example.com", "https", "example.com", true},
		{"subdomain and apex", "https", "app.example.com", "https", "example.com", true},
		{"sibling subdomains", "https", "app.example.com", "https", "api.example.com", true},
		{"deep subdomains", "https", "a.b.example.com", "https", "c.example.com", true},
		{"another domain", "https", "example.com", "https", "example.org", false},
		{"scheme differs", "http", "example.com", "https", "example.com", false},
		{"scheme differs on subdomains", "http", "app.example.com", "https", "api.example.com", false},
		{"letter case", "HTTPS", "App.Example.COM", "https", "api.example.com", true},
		{"trailing dot", "https", "app.example.com.", "https", "example.com", true},
		{"multi-label public suffix", "https", "a.example.co.uk", "https", "b.example.co.uk", true},
		{"two domains under a multi-label suffix", "https", "example.co.uk", "https", "other.co.uk", false},
		{"private suffix: github.io users", "https", "alice.github.io", "https", "bob.github.io", false},
		{"private suffix: same user", "https", "x.alice.github.io", "https", "alice.github.io", true},
		{"a public suffix itself", "https", "co.uk", "https", "co.uk", true},
		{"a public suffix and a domain under it", "https", "co.uk", "https", "example.co.uk", false},
		{"localhost", "http", "localhost", "http", "localhost", true},
		{"localhost and a subdomain", "http", "app.localhost", "http", "localhost", false},
		{"two names under an unknown label", "http", "a.b.internal-zone", "http", "c.b.internal-zone", false},
		{"IPv4 equal", "http", "127.0.0.1", "http", "127.0.0.1", true},
		{"IPv4 differs", "http", "127.0.0.1", "http", "127.0.0.2", false},
		{"IPv4 against localhost", "http", "127.0.0.1", "http", "localhost", false},
		{"IPv6 equal", "http", "::1", "http", "::1", true},
		{"IPv6 against IPv4", "http", "::1", "http", "127.0.0.1", false},
		{"IP that looks like a domain's tail", "https", "1.2.3.4", "https", "2.3.4", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Same(tc.schemeA, tc.hostA, tc.schemeB, tc.hostB); got != tc.want {
				t.Errorf("Same(%s://%s, %s://%s) = %v, want %v", tc.schemeA, tc.hostA, tc.schemeB, tc.hostB, got, tc.want)
			}
			if got := Same(tc.schemeB, tc.hostB, tc.schemeA, tc.hostA); got != tc.want {
				t.Errorf("Same is not symmetric for %s://%s and %s://%s", tc.schemeA, tc.hostA, tc.schemeB, tc.hostB)
			}
		})
	}
}

func TestSameDomain(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"app.example.com", "api.example.com", true},
		{"example.com", "example.org", false},
		{"localhost", "127.0.0.1", false},
		{"localhost", "localhost", true},
	} {
		if got := SameDomain(tc.a, tc.b); got != tc.want {
			t.Errorf("SameDomain(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
