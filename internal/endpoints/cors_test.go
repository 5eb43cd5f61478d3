package endpoints

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// The advice every same-site refusal gives.
const sameSiteAdvice = "set cookie_same_site none, or serve the app from the gateway's site"

func TestIsPreflight(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		hdr    []string
		body   string
		want   bool
	}{
		{"preflight", http.MethodOptions, []string{"Origin", "https://app.example", "Access-Control-Request-Method", "DELETE"}, "", true},
		{"with request headers", http.MethodOptions, []string{"Origin", "https://app.example", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "authorization"}, "", true},
		{"no Origin", http.MethodOptions, []string{"Access-Control-Request-Method", "DELETE"}, "", false},
		{"no request method", http.MethodOptions, []string{"Origin", "https://app.example"}, "", false},
		{"empty request method", http.MethodOptions, []string{"Origin", "https://app.example", "Access-Control-Request-Method", ""}, "", false},
		{"two Origins", http.MethodOptions, []string{"Origin", "https://app.example", "Origin", "https://b.example", "Access-Control-Request-Method", "GET"}, "", false},
		{"a body", http.MethodOptions, []string{"Origin", "https://app.example", "Access-Control-Request-Method", "GET"}, "_method=DELETE", false},
		{"GET", http.MethodGet, []string{"Origin", "https://app.example", "Access-Control-Request-Method", "GET"}, "", false},
		{"lower case options", "options", []string{"Origin", "https://app.example", "Access-Control-Request-Method", "GET"}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "http://localhost:9080/api", strings.NewReader(tc.body))
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				r.Header.Add(tc.hdr[i], tc.hdr[i+1])
			}
			if got := IsPreflight(r); got != tc.want {
				t.Errorf("IsPreflight = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSameOriginFetchSite: Sec-Fetch-Site: cross-site is refused unless
// the origin is listed; a listed origin on another site (cookie_same_site
// none) says cross-site, and the list decides.
func TestSameOriginFetchSite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		allowed []string
		origin  string
		want    bool
	}{
		{"listed, cross-site", []string{"https://app.example"}, "https://app.example", true},
		{"not listed, cross-site", []string{"https://app.example"}, "https://evil.example", false},
		{"own origin, cross-site", nil, "http://localhost:9080", false},
		{"no Origin, cross-site", []string{"https://app.example"}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Config{AllowedOrigins: tc.allowed})
			r := httptest.NewRequest(http.MethodPost, "http://localhost:9080/refresh", nil)
			r.Header.Set("Sec-Fetch-Site", "cross-site")
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if got := s.sameOrigin(r); got != tc.want {
				t.Errorf("sameOrigin = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCheckSameSite: the load-time rule. With a strict or lax cookie
// in cookie mode, allowed_origins must lie on one site (scheme and
// registrable domain), since the gateway is on one site at most.
func TestCheckSameSite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cookie   bool // cookie mode, else body mode
		sameSite string
		allowed  []string
		want     string // "" for none; else a part of the error
	}{
		{"default, no origins", true, "", nil, ""},
		{"strict, one origin", true, "strict", []string{"https://app.example"}, ""},
		{"strict, one site", true, "strict", []string{"https://app.example.com", "https://admin.example.com:8443", "https://example.com"}, ""},
		{"lax, one site", true, "lax", []string{"http://localhost:3000", "http://localhost:5173"}, ""},
		{"strict, two sites", true, "strict", []string{"https://app.example", "https://admin.example"}, sameSiteAdvice},
		{"default, two sites", true, "", []string{"https://app.example", "https://admin.example"}, "SameSite=strict"},
		{"lax, two sites", true, "lax", []string{"https://a.example.com", "https://b.example.org"}, "SameSite=lax"},
		{"strict, scheme differs", true, "strict", []string{"https://app.example.com", "http://admin.example.com"}, sameSiteAdvice},
		{"strict, localhost and 127.0.0.1", true, "strict", []string{"http://localhost:3000", "http://127.0.0.1:3000"}, sameSiteAdvice},
		{"strict, github.io users", true, "strict", []string{"https://alice.github.io", "https://bob.github.io"}, sameSiteAdvice},
		{"none, two sites", true, "none", []string{"https://app.example", "https://admin.example"}, ""},
		{"body mode, two sites", false, "", []string{"https://app.example", "https://admin.example"}, ""},
		{"unknown value", true, "Strict", nil, `cookie_same_site: "Strict" is not one of strict, lax, none`},
		{"unknown value in body mode", false, "off", nil, "cookie_same_site"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{CookieMode: tc.cookie, CookieSameSite: tc.sameSite, AllowedOrigins: tc.allowed}
			err := c.CheckSameSite()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestCrossSiteCookieRequest: at request time, an allowed origin that is
// cross-site with the request's own origin is refused on the cookie
// endpoints while the cookie is strict or lax, with one error log line per
// origin however many requests come.
func TestCrossSiteCookieRequest(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cookie   bool // cookie mode, else body mode
		sameSite string
		tls      bool
		host     string
		origin   string
		ep       Endpoint
		refused  bool
	}{
		{"another site", true, "", false, "localhost:9080", "https://app.example", Refresh, true},
		{"another site, login", true, "strict", false, "localhost:9080", "https://app.example", Token, true},
		{"another site, password", true, "lax", false, "localhost:9080", "https://app.example", Password, true},
		{"127.0.0.1 against localhost", true, "strict", false, "localhost:9080", "http://127.0.0.1:9081", Refresh, true},
		{"another port of the same host", true, "strict", false, "localhost:9080", "http://localhost:9081", Refresh, false},
		{"a sibling subdomain over TLS", true, "strict", true, "api.example.com", "https://app.example.com", Refresh, false},
		{"http page against a TLS gateway", true, "strict", true, "api.example.com", "http://app.example.com", Refresh, true},
		{"TLS terminated in front: scheme unknown", true, "strict", false, "api.example.com", "https://app.example.com", Refresh, false},
		{"none", true, "none", false, "localhost:9080", "https://app.example", Refresh, false},
		{"body mode", false, "", false, "localhost:9080", "https://app.example", Refresh, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.ErrorLevel)
			s := New(Config{CookieMode: tc.cookie, CookieSameSite: tc.sameSite, AllowedOrigins: []string{tc.origin},
				Logger: zap.New(core)})
			for range 3 {
				w := httptest.NewRecorder()
				r := httptest.NewRequest(http.MethodPost, "http://"+tc.host+"/refresh", nil)
				r.Host = tc.host
				if tc.tls {
					r.TLS = &tls.ConnectionState{}
				}
				r.Header.Set("Origin", tc.origin)
				done, err := s.CORS(w, r, tc.ep)
				if err != nil {
					t.Fatal(err)
				}
				if done != tc.refused {
					t.Fatalf("refused = %v, want %v (%d %s)", done, tc.refused, w.Code, w.Body)
				}
				if got := w.Header().Get("Access-Control-Allow-Origin"); got != tc.origin {
					t.Errorf("Access-Control-Allow-Origin = %q, want %q (the app must read the answer)", got, tc.origin)
				}
				if tc.refused {
					if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `"invalid_request"`) ||
						!strings.Contains(w.Body.String(), sameSiteAdvice) {
						t.Errorf("refusal: %d %s", w.Code, w.Body)
					}
				}
			}
			want := 0
			if tc.refused {
				want = 1
			}
			if logs.Len() != want {
				t.Errorf("%d error log lines after three requests, want %d", logs.Len(), want)
			}
			for _, e := range logs.All() {
				if !strings.Contains(e.Message, sameSiteAdvice) || e.ContextMap()["origin"] != tc.origin {
					t.Errorf("log line %q %v", e.Message, e.ContextMap())
				}
			}
		})
	}
}

func TestOriginString(t *testing.T) {
	for in, want := range map[string]string{
		"https://app.example":      "https://app.example",
		"https://App.Example:443":  "https://app.example",
		"http://localhost:3000":    "http://localhost:3000",
		"http://[::1]:3000":        "http://[::1]:3000",
		"http://[::1]":             "http://[::1]",
		"https://app.example:8443": "https://app.example:8443",
	} {
		o, ok := parseOrigin(in)
		if !ok {
			t.Fatalf("parseOrigin(%q) failed", in)
		}
		if got := o.String(); got != want {
			t.Errorf("%q: String() = %q, want %q", in, got, want)
		}
	}
}
