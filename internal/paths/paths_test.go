package paths

import (
	"errors"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// target splits a request target as net/http does, into the escaped path
// as forwarded, the decoded path and the query.
func target(t testing.TB, raw string) (escaped, decoded, query string) {
	t.Helper()
	u, err := url.ParseRequestURI(raw)
	if err != nil {
		t.Fatalf("ParseRequestURI(%q): %v", raw, err)
	}
	return u.EscapedPath(), u.Path, u.RawQuery
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		method, target string
		want           error
	}{
		{"GET", "/api/users", nil},
		{"GET", "/file.txt", nil},
		{"GET", "/.well-known/x", nil},
		{"GET", "/a..b/c", nil},
		{"GET", "/a/b.", nil}, // trailing dot, no dot segment: judged under AltPaths instead
		{"GET", "/", nil},
		{"GET", "/reports?x=1&method=y", nil},
		{"M-SEARCH", "/", nil},
		{"GET", "/admin/../public/x", ErrDotSegment},
		{"GET", "/admin/./x", ErrDotSegment},
		{"GET", "/admin/..", ErrDotSegment},
		{"GET", "/.", ErrDotSegment},
		{"GET", "/admin/delete-everything/..%2f..%2fpublic/x", ErrDotSegment},
		{"GET", "/admin/%2e%2e/public", ErrDotSegment},
		{"GET", "/admin/%2E./public", ErrDotSegment},
		{"GET", "/admin/%252e%252e/public", ErrDotSegment},
		{"GET", "/admin/%25252e%25252e/public", ErrDotSegment},
		{"GET", `/admin\..\public`, ErrDotSegment},
		{"GET", "/admin%5c..%5cpublic", ErrDotSegment},
		{"GET", "/admin/..;/public", ErrDotSegment},
		{"GET", "/admin/..;x=y/public", ErrDotSegment},
		{"GET", "/admin/.../public", ErrDotSegment},
		{"GET", "/admin/..%20/public", ErrDotSegment},
		{"GET", "/admin/.%20./public", ErrDotSegment},
		{"GET", "/admin/x%00", ErrControl},
		{"GET", "/admin/x%0a", ErrControl},
		{"GET", "/admin/x%2500", ErrControl},
		{"get", "/", ErrMethodCase},
		{"Delete", "/reports/q3", ErrMethodCase},
		{"pOST", "/", ErrMethodCase},
		{"POST", "/reports?_method=DELETE", ErrMethodOverride},
		{"POST", "/reports?a=1&_METHOD=DELETE", ErrMethodOverride},
		{"POST", "/reports?%5Fmethod=DELETE", ErrMethodOverride},
		{"POST", "/reports?a=1;_method=DELETE", ErrMethodOverride},
		{"GET", "/reports?x=_method", nil},
		{"POST", "/files/a?.method=DELETE", ErrMethodOverride},
		{"POST", "/files/a?%2Emethod=DELETE", ErrMethodOverride},
		{"POST", "/files/a?+_method=DELETE", ErrMethodOverride},
		{"POST", "/files/a?_method%zz=1&_method=DELETE", ErrMethodOverride},
		{"GET", "/public/%252e%252e/admin/%25zz", ErrDotSegment},
		{"GET", "/public/%252e%252e/admin%25", ErrDotSegment},
		{"GET", "/public/%EF%BC%8E%EF%BC%8E/admin", ErrDotSegment},
		{"GET", "/public/%EF%BC%8E%EF%BC%8E%EF%BC%8Fadmin", ErrDotSegment},
	} {
		e, d, q := target(t, tc.target)
		if got := Check(tc.method, e, d, q); !errors.Is(got, tc.want) || (tc.want == nil) != (got == nil) {
			t.Errorf("Check(%q, %q) = %v, want %v", tc.method, tc.target, got, tc.want)
		}
	}
}

func TestCheckAllocations(t *testing.T) {
	e, d, q := target(t, "/api/v1/reports/q3.json?limit=10")
	if n := testing.AllocsPerRun(100, func() { _ = Check("GET", e, d, q) }); n != 0 {
		t.Errorf("Check allocates %v times on an ordinary request", n)
	}
	if n := testing.AllocsPerRun(100, func() { AltPaths(e, d); AltMethods("GET", false) }); n != 0 {
		t.Errorf("AltPaths and AltMethods allocate %v times on an ordinary request", n)
	}
}

func TestAltPaths(t *testing.T) {
	for raw, want := range map[string][]string{
		"/api/users":        nil,
		"/file.txt":         nil,
		"/":                 nil,
		"/admin;x/y":        {"/admin/y"},
		`/public\admin`:     {"/public/admin"},
		"/public%2fx":       {"/public%2fx"},
		"/public%2Fx":       {"/public%2Fx"},
		"/admin./x":         {"/admin/x"},
		"/admin%20/x":       {"/admin/x", "/admin%20/x"},
		"/admin%3bx/y":      {"/admin/y"},
		"/%2561dmin/x":      {"/admin/x", "/%2561dmin/x"},
		"/admin.%20./x":     {"/admin/x"},
		`/admin%5cx`:        {"/admin/x"},
		"/public/x;/y":      {"/public/x/y"},
		"/reports%252fx":    {"/reports/x"},
		"/public/":          {"/public"},
		"/public//":         {"/public"},
		"//public/x":        {"/(empty)/public/x"},
		"/a//b/":            {"/a/(empty)/b/", "/a//b", "/a/(empty)/b"},
		"/%2561dmin/x%25zz": {"/admin/x%zz"},
	} {
		e, d, _ := target(t, raw)
		got := AltPaths(e, d)
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("AltPaths(%q, %q) = %q, missing %q", e, d, got, w)
			}
		}
		if want == nil && got != nil {
			t.Errorf("AltPaths(%q, %q) = %q, want none", e, d, got)
		}
		if slices.Contains(got, d) || slices.Contains(got, "") {
			t.Errorf("AltPaths(%q, %q) = %q lists the path itself or an empty one", e, d, got)
		}
	}
}

func TestAltMethods(t *testing.T) {
	for _, tc := range []struct {
		method string
		form   bool
		want   []string
	}{
		{"GET", false, nil},
		{"GET", true, nil},
		{"HEAD", false, []string{"GET"}},
		{"POST", false, nil},
		{"POST", true, []string{"GET", "PUT", "PATCH", "DELETE"}},
		{"PUT", true, nil},
	} {
		if got := AltMethods(tc.method, tc.form); !slices.Equal(got, tc.want) {
			t.Errorf("AltMethods(%q, %v) = %q, want %q", tc.method, tc.form, got, tc.want)
		}
	}
}

func TestIsFormBody(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/x-www-form-urlencoded":                true,
		"Application/X-WWW-Form-Urlencoded; charset=utf-8": true,
		"multipart/form-data; boundary=x":                  true,
		" multipart/form-data":                             true,
		"application/json":                                 false,
		"text/plain":                                       false,
		"":                                                 true, // Rack reads a POST without a media type as a form
		"application/x-www-form-urlencoded, text/plain": true,
		"application/x-www-form-urlencoded x":           true,
		"multipart/form-data,text/plain":                true,
	} {
		if got := IsFormBody(ct); got != want {
			t.Errorf("IsFormBody(%q) = %v, want %v", ct, got, want)
		}
	}
}

// lenientReadings are the readings a backend may give a path: decoded up
// to maxDecodes times, with `\` as `/` or not, `;params` dropped or not.
func lenientReadings(p string) []string {
	var out []string
	for i := 0; i < maxDecodes; i++ {
		for _, q := range []string{p, strings.NewReplacer("\uff0e", ".", "\uff0f", "/", "\uff3c", `\`).Replace(p)} {
			out = append(out, q, strings.ReplaceAll(q, `\`, "/"))
		}
		s := oracleUnescape(p)
		if s == p {
			break
		}
		p = s
	}
	for _, r := range slices.Clone(out) {
		segs := strings.Split(r, "/")
		for i, s := range segs {
			s, _, _ = strings.Cut(s, ";")
			segs[i] = strings.TrimRight(s, ". ")
			if segs[i] == "" && strings.Contains(s, ".") {
				segs[i] = "<dots>" // a name of only dots and spaces
			}
		}
		out = append(out, strings.Join(segs, "/"))
	}
	return out
}

// FuzzCheck: whatever Check accepts has no dot segment and no control
// character in any reading a lenient backend may give it, and Check never
// panics. The oracle is written apart from the code under test.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		"/admin/../public/x", "/admin/%2e%2e/x", "/a/%252e%252e/b", `/a\..\b`, "/a/..;/b", "/a/.../b",
		"/api/users", "/a/b.c", "/x%00", "/a%5c..%5cb", "/a/.%20./b", "/a?_method=PUT",
	} {
		f.Add("GET", s)
	}
	f.Fuzz(func(t *testing.T, method, raw string) {
		u, err := url.ParseRequestURI(raw)
		if err != nil {
			return
		}
		if Check(method, u.EscapedPath(), u.Path, u.RawQuery) != nil {
			return
		}
		if strings.ContainsAny(method, "abcdefghijklmnopqrstuvwxyz") {
			t.Fatalf("accepted method %q", method)
		}
		for _, r := range append(lenientReadings(u.EscapedPath()), lenientReadings(u.Path)...) {
			for _, seg := range strings.FieldsFunc(r, func(c rune) bool { return c == '/' || c == '\\' }) {
				if seg == "." || seg == ".." || seg == "<dots>" {
					t.Fatalf("accepted %q: reading %q has segment %q", raw, r, seg)
				}
			}
			for i := 0; i < len(r); i++ {
				if r[i] < 0x20 || r[i] == 0x7f {
					t.Fatalf("accepted %q: reading %q has a control character", raw, r)
				}
			}
		}
	})
}

// oracleUnescape decodes the valid %XX escapes of s and keeps the rest, as
// lenient decoders do; written apart from lenientUnescape.
func oracleUnescape(s string) string {
	return regexp.MustCompile(`%[0-9A-Fa-f]{2}`).ReplaceAllStringFunc(s, func(m string) string {
		b, _ := strconv.ParseUint(m[1:], 16, 8)
		return string([]byte{byte(b)})
	})
}
