package caddymodule

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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
			if got := isPreflight(r); got != tc.want {
				t.Errorf("isPreflight = %v, want %v", got, tc.want)
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
			h := &Handler{AllowedOrigins: tc.allowed}
			r := httptest.NewRequest(http.MethodPost, "http://localhost:9080/refresh", nil)
			r.Header.Set("Sec-Fetch-Site", "cross-site")
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if got := h.sameOrigin(r); got != tc.want {
				t.Errorf("sameOrigin = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCheckCookieSameSite: the load-time rule. With a strict or lax cookie
// in cookie mode, allowed_origins must lie on one site (scheme and
// registrable domain), since the gateway is on one site at most.
func TestCheckCookieSameSite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		refresh  string
		sameSite string
		allowed  []string
		want     string // "" for none; else a part of the error
	}{
		{"default, no origins", RefreshModeCookie, "", nil, ""},
		{"strict, one origin", RefreshModeCookie, "strict", []string{"https://app.example"}, ""},
		{"strict, one site", RefreshModeCookie, "strict", []string{"https://app.example.com", "https://admin.example.com:8443", "https://example.com"}, ""},
		{"lax, one site", RefreshModeCookie, "lax", []string{"http://localhost:3000", "http://localhost:5173"}, ""},
		{"strict, two sites", RefreshModeCookie, "strict", []string{"https://app.example", "https://admin.example"}, sameSiteAdvice},
		{"default, two sites", RefreshModeCookie, "", []string{"https://app.example", "https://admin.example"}, "SameSite=strict"},
		{"lax, two sites", RefreshModeCookie, "lax", []string{"https://a.example.com", "https://b.example.org"}, "SameSite=lax"},
		{"strict, scheme differs", RefreshModeCookie, "strict", []string{"https://app.example.com", "http://admin.example.com"}, sameSiteAdvice},
		{"strict, localhost and 127.0.0.1", RefreshModeCookie, "strict", []string{"http://localhost:3000", "http://127.0.0.1:3000"}, sameSiteAdvice},
		{"strict, github.io users", RefreshModeCookie, "strict", []string{"https://alice.github.io", "https://bob.github.io"}, sameSiteAdvice},
		{"none, two sites", RefreshModeCookie, "none", []string{"https://app.example", "https://admin.example"}, ""},
		{"body mode, two sites", RefreshModeBody, "", []string{"https://app.example", "https://admin.example"}, ""},
		{"unknown value", RefreshModeCookie, "Strict", nil, `cookie_same_site: "Strict" is not one of strict, lax, none`},
		{"unknown value in body mode", RefreshModeBody, "off", nil, "cookie_same_site"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{Refresh: tc.refresh, CookieSameSite: tc.sameSite, AllowedOrigins: tc.allowed}
			err := h.checkCookieSameSite()
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
		refresh  string
		sameSite string
		tls      bool
		host     string
		origin   string
		ep       endpoint
		refused  bool
	}{
		{"another site", RefreshModeCookie, "", false, "localhost:9080", "https://app.example", endpointRefresh, true},
		{"another site, login", RefreshModeCookie, "strict", false, "localhost:9080", "https://app.example", endpointToken, true},
		{"another site, password", RefreshModeCookie, "lax", false, "localhost:9080", "https://app.example", endpointPassword, true},
		{"127.0.0.1 against localhost", RefreshModeCookie, "strict", false, "localhost:9080", "http://127.0.0.1:9081", endpointRefresh, true},
		{"another port of the same host", RefreshModeCookie, "strict", false, "localhost:9080", "http://localhost:9081", endpointRefresh, false},
		{"a sibling subdomain over TLS", RefreshModeCookie, "strict", true, "api.example.com", "https://app.example.com", endpointRefresh, false},
		{"http page against a TLS gateway", RefreshModeCookie, "strict", true, "api.example.com", "http://app.example.com", endpointRefresh, true},
		{"TLS terminated in front: scheme unknown", RefreshModeCookie, "strict", false, "api.example.com", "https://app.example.com", endpointRefresh, false},
		{"none", RefreshModeCookie, "none", false, "localhost:9080", "https://app.example", endpointRefresh, false},
		{"body mode", RefreshModeBody, "", false, "localhost:9080", "https://app.example", endpointRefresh, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.ErrorLevel)
			h := &Handler{Refresh: tc.refresh, CookieSameSite: tc.sameSite, AllowedOrigins: []string{tc.origin},
				logger: zap.New(core), crossSiteLogged: new(sync.Map)}
			for range 3 {
				w := httptest.NewRecorder()
				r := httptest.NewRequest(http.MethodPost, "http://"+tc.host+"/refresh", nil)
				r.Host = tc.host
				if tc.tls {
					r.TLS = &tls.ConnectionState{}
				}
				r.Header.Set("Origin", tc.origin)
				done, err := h.endpointCORS(w, r, tc.ep)
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
