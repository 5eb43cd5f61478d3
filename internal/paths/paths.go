// Package paths decides how the gateway reads a request's method and target
// before any access rule is matched, so that the rules hold for the request
// the upstream acts on and not only for the one Caddy's matchers see.
//
// Caddy's path matcher judges a cleaned path (dot segments resolved, case
// folded, slashes merged, %2F compared as "/"), but reverse_proxy forwards
// the target as it arrived. A backend that routes on the raw target reads
// /admin/../public/x under /admin/, where the matcher saw /public/x. Two
// policies meet that:
//
//   - Refuse what cannot be read one way only. Check refuses a path with a
//     dot segment ("." or ".." and their disguises) in any reading (raw,
//     percent-decoded once or more, `\` read as `/`, `;params` dropped,
//     trailing dots and spaces dropped), a control character, a method that
//     is not in upper case, and a `_method` override in the query. Refusing
//     is simpler to prove than rewriting: what is forwarded is then what was
//     judged, byte for byte.
//   - Judge the rest under every reading a backend may give it, and keep the
//     strictest outcome. AltPaths lists the other readings of a path
//     (servlet `;params`, Windows `\` and trailing dots, double decoding);
//     AltMethods lists the other methods a backend may act on (HEAD is
//     served by GET handlers; a form POST may carry a `_method` override).
//
// Ordinary requests pay a scan of the path and the method, and allocate
// nothing.
package paths

import (
	"errors"
	"slices"
	"strings"
)

// Refusals, each answered with 400 Bad Request.
var (
	ErrDotSegment     = errors.New("request path has a dot segment (. or ..) in some reading")
	ErrControl        = errors.New("request path holds a control character")
	ErrMethodCase     = errors.New("request method is not in upper case")
	ErrMethodOverride = errors.New("request query carries a _method override")
)

// maxDecodes is how many times a path is percent-decoded to look for
// disguised dot segments: %252e%252e is ".." after two decodes, and some
// stacks decode once more than they should.
const maxDecodes = 3

// Check refuses a request whose method or target a backend could read
// differently from the rules: method is the request method as sent,
// escaped the path as forwarded (url.URL.EscapedPath), decoded the path
// decoded once (url.URL.Path) and rawQuery the query as forwarded.
func Check(method, escaped, decoded, rawQuery string) error {
	// Methods are case-sensitive (RFC 9110 section 9.1) and Caddy's method
	// matcher compares them as such, but Flask, Django and ASP.NET Core
	// upper-case them: "delete" would miss `method DELETE` and still delete.
	for i := 0; i < len(method); i++ {
		if 'a' <= method[i] && method[i] <= 'z' {
			return ErrMethodCase
		}
	}
	if hasControl(decoded) || hasControl(escaped) {
		return ErrControl
	}
	if hasDotSegment(escaped) || hasDotSegment(decoded) {
		return ErrDotSegment
	}
	if strings.IndexByte(decoded, '%') >= 0 {
		p := decoded
		for i := 1; i < maxDecodes && strings.IndexByte(p, '%') >= 0; i++ {
			p = lenientUnescape(p)
			if hasControl(p) {
				return ErrControl
			}
			if hasDotSegment(p) {
				return ErrDotSegment
			}
		}
	}
	if hasMethodOverride(rawQuery) {
		return ErrMethodOverride
	}
	return nil
}

// lenientUnescape decodes every valid %XX escape of s and keeps the rest
// as it is, as Python's unquote and many hand-written decoders do: a stray
// `%zz` elsewhere in a path must not stop the search for a disguised dot
// segment (url.PathUnescape refuses the whole path instead).
func lenientUnescape(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// fullwidth maps the fullwidth forms of '.', '/' and '\' (U+FF0E, U+FF0F,
// U+FF3C), which Unicode normalization (NFKC) and Windows best-fit
// mappings turn into their ASCII forms, to those forms.
var fullwidth = strings.NewReplacer("\uff0e", ".", "\uff0f", "/", "\uff3c", `\`)

// hasDotSegment reports a segment, with `/` and `\` both taken as
// separators, that is made only of dots and spaces and holds a dot, once its
// `;params` are dropped: ".", "..", "..;x", ".. " and "..." all qualify.
// Windows drops trailing dots and spaces of a name, and servlet containers
// drop `;params`, so each of them can act as a dot segment somewhere.
func hasDotSegment(p string) bool {
	if strings.IndexByte(p, 0xef) >= 0 { // the lead byte of U+FF0E and friends
		p = fullwidth.Replace(p)
	}
	if strings.IndexByte(p, '.') < 0 {
		return false
	}
	start := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' && p[i] != '\\' {
			continue
		}
		seg := p[start:i]
		start = i + 1
		if j := strings.IndexByte(seg, ';'); j >= 0 {
			seg = seg[:j]
		}
		if dotty(seg) {
			return true
		}
	}
	return false
}

func dotty(seg string) bool {
	dot := false
	for i := 0; i < len(seg); i++ {
		switch seg[i] {
		case '.':
			dot = true
		case ' ':
		default:
			return false
		}
	}
	return dot
}

// hasMethodOverride reports a `_method` query parameter, in any letter case
// and percent-encoding of its name. Rack, Laravel and Symfony let it replace
// the method of a POST.
func hasMethodOverride(rawQuery string) bool {
	if rawQuery == "" {
		return false
	}
	if !strings.Contains(rawQuery, "%") && !containsFold(rawQuery, "method") {
		return false
	}
	for part := range strings.SplitSeq(rawQuery, "&") {
		for sub := range strings.SplitSeq(part, ";") {
			name, _, _ := strings.Cut(sub, "=")
			name = strings.ReplaceAll(name, "+", " ")
			if strings.EqualFold(phpName(lenientUnescape(name)), "_method") {
				return true
			}
		}
	}
	return false
}

// phpName is a parameter name as PHP stores it: leading spaces dropped,
// and '.', ' ' and '[' turned into '_' (so `.method` reaches Laravel and
// Symfony as `_method`), the trailing space trimmed too.
func phpName(name string) string {
	name = strings.TrimLeft(name, " ")
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		switch r {
		case '.', ' ', '[':
			return '_'
		}
		return r
	}, name))
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// hasControl reports a control character (NUL included) in p: no resource
// has one in its name, and C-based backends cut the path at NUL.
func hasControl(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return true
		}
	}
	return false
}

// overrideMethods are the methods a `_method` field of a form POST can
// name in the frameworks that honour it (Rack and Laravel take any method;
// these are the ones an API's rules gate). HEAD needs no entry: it is
// judged as GET anyway.
var overrideMethods = []string{"GET", "PUT", "PATCH", "DELETE"}

// AltMethods returns the methods besides method that a backend may act on
// for a request with that method: GET for HEAD (net/http, Flask, Express
// and most others serve HEAD with their GET handler), and for a POST with a
// form body (formBody), every method a `_method` field can name.
func AltMethods(method string, formBody bool) []string {
	switch {
	case method == "HEAD":
		return []string{"GET"}
	case method == "POST" && formBody:
		return overrideMethods
	}
	return nil
}

// IsFormBody reports whether a Content-Type value names an HTML form body,
// the only bodies that frameworks read `_method` from.
// An empty value counts: Rack reads a POST without a media type as a form.
// The media type is cut at ';', ',' or white space, as Rack and PHP cut it.
func IsFormBody(contentType string) bool {
	mt := strings.TrimSpace(contentType)
	if i := strings.IndexAny(mt, ";, \t"); i >= 0 {
		mt = mt[:i]
	}
	return mt == "" || strings.EqualFold(mt, "application/x-www-form-urlencoded") || strings.EqualFold(mt, "multipart/form-data")
}

// AltPaths returns the other readings a backend might give a request path,
// each different from decoded, for the rules to be judged under as well:
// escaped is the path as forwarded (url.URL.EscapedPath) and decoded the
// path as Caddy's matchers read it (url.URL.Path). The readings are the
// raw path (a router on the raw target sees /public%2Fadmin as one
// segment, not under /public/), the path decoded up to maxDecodes times,
// and of each: `;params` dropped (Tomcat, Jetty, Spring), `\` as `/` and
// trailing dots and spaces of names dropped (IIS and Windows stacks), a
// trailing slash dropped (routers that ignore it), and empty segments kept
// (routers that do not merge slashes, where Caddy's matchers do).
// Ordinary paths have none.
func AltPaths(escaped, decoded string) []string {
	if escaped == decoded && !strings.ContainsAny(decoded, ";\\") && !trailingDotOrSpace(decoded) &&
		!strings.Contains(decoded, "//") && (len(decoded) < 2 || decoded[len(decoded)-1] != '/') {
		return nil
	}
	var out []string
	add := func(s string) {
		if s != decoded && s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	bases := []string{decoded, escaped}
	full := decoded
	for i := 1; i < maxDecodes && strings.Contains(full, "%"); i++ {
		full = lenientUnescape(full)
		bases = append(bases, full)
	}
	for _, b := range bases {
		params := stripPathParams(b)
		slashes := strings.ReplaceAll(b, `\`, "/")
		windows := trimSegments(stripPathParams(slashes))
		for _, r := range []string{b, params, slashes, windows} {
			for _, v := range []string{r, strings.TrimRight(r, "/")} {
				add(v)
				if strings.Contains(v, "//") {
					add(markEmptySegments(v))
				}
			}
		}
	}
	return out
}

// EmptySegment stands for an empty path segment in the reading of a router
// that does not merge slashes. Caddy's path matcher merges them, so
// //public/x would match /public/*; /(empty)/public/x matches no rule
// written for /public/.
const EmptySegment = "(empty)"

// markEmptySegments replaces every empty segment of p but the last (a
// trailing slash) with EmptySegment.
func markEmptySegments(p string) string {
	segs := strings.Split(p, "/")
	for i := 1; i < len(segs)-1; i++ {
		if segs[i] == "" {
			segs[i] = EmptySegment
		}
	}
	return strings.Join(segs, "/")
}

// stripPathParams drops the `;params` of every segment, as servlet
// containers do: /admin;x/y -> /admin/y.
func stripPathParams(p string) string {
	if !strings.Contains(p, ";") {
		return p
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	return strings.Join(segs, "/")
}

// trailingDotOrSpace reports a segment ending in '.' or ' '. It runs on
// every request, so it scans in place instead of splitting.
func trailingDotOrSpace(p string) bool {
	start := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			continue
		}
		seg := p[start:i]
		start = i + 1
		if seg == "" {
			continue
		}
		if c := seg[len(seg)-1]; c == '.' || c == ' ' {
			return true
		}
	}
	return false
}

// trimSegments drops the trailing dots and spaces of every segment, as
// Windows does with file names.
func trimSegments(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = strings.TrimRight(s, ". ")
	}
	return strings.Join(segs, "/")
}
