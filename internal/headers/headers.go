// Package headers keeps clients from speaking for the gateway: it strips
// identity headers (the gateway's own, other auth layers', routing
// overrides) in every spelling a backend or a proxy might fold into the
// same name, sets the gateway's identity headers, and checks the names an
// operator configures.
package headers

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"github.com/crudauth/caddy-crudauth/internal/auth"
)

// Identity are the request headers through which the gateway tells the
// backend who is calling. A client must never be able to set them, in any
// spelling a backend or a proxy in between might fold into the same name.
type Identity struct {
	id, name, scopes string   // canonical MIME header keys, as set
	norm             []string // normalized forms (see Normalize)
	// dropByLen holds, by length, the normalized names Strip removes:
	// norm, the identity headers of other auth layers (Foreign) and the
	// extra names given to NewIdentity. A request header is compared only
	// with names of its own length.
	dropByLen [][]string
}

// Foreign are headers through which other auth proxies and
// servers tell a backend who is calling (oauth2-proxy, Authelia, Apache and
// CGI's REMOTE_USER, Grafana's auth proxy, Kong). Frameworks trust some of
// them (Django's RemoteUserMiddleware, Grafana), so a client must not be
// able to send them through the gateway: they are removed from every
// request, in every spelling, like the gateway's own.
var Foreign = []string{
	"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Preferred-Username", "X-Forwarded-Groups",
	"X-Forwarded-Access-Token", "X-Auth-Request-User", "X-Auth-Request-Email",
	"X-Auth-Request-Preferred-Username", "X-Auth-Request-Groups", "X-Auth-Request-Access-Token",
	"X-Remote-User", "X-Remote-Email", "X-Remote-Name", "X-Remote-Groups", "Remote-User", "Remote-Email",
	"Remote-Name", "Remote-Groups", "X-Webauth-User", "X-Webauth-Email", "X-Webauth-Name",
	"X-Authenticated-User", "X-Authenticated-Userid", "X-Auth-User", "X-Consumer-Id",
	"X-Consumer-Username", "X-Credential-Identifier",
}

// NewIdentity returns the identity headers id, name and scopes; Strip also
// removes the Foreign headers and extra (routing overrides, the operator's
// strip_headers), in every spelling.
func NewIdentity(id, name, scopes string, extra []string) Identity {
	ih := Identity{
		id:     textproto.CanonicalMIMEHeaderKey(id),
		name:   textproto.CanonicalMIMEHeaderKey(name),
		scopes: textproto.CanonicalMIMEHeaderKey(scopes),
	}
	ih.norm = []string{Normalize(id), Normalize(name), Normalize(scopes)}
	drop := slices.Clone(ih.norm)
	for _, h := range slices.Concat(Foreign, extra) {
		drop = append(drop, Normalize(h))
	}
	for _, n := range drop {
		for len(ih.dropByLen) <= len(n) {
			ih.dropByLen = append(ih.dropByLen, nil)
		}
		if !slices.Contains(ih.dropByLen[len(n)], n) {
			ih.dropByLen[len(n)] = append(ih.dropByLen[len(n)], n)
		}
	}
	return ih
}

// Normalize folds the spellings that servers treat as the same
// header: letter case, and any byte other than a letter or a digit in
// place of `-` (CGI-style servers map `_`, `.`, `~`, `+` and the like all
// to `_` when they build HTTP_X_USER_ID).
func Normalize(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			b[i] = '-'
		}
	}
	return string(b)
}

// sameHeader reports whether key normalizes to norm, without allocating.
func sameHeader(key, norm string) bool {
	if len(key) != len(norm) {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case !('a' <= c && c <= 'z' || '0' <= c && c <= '9'):
			c = '-'
		}
		if c != norm[i] {
			return false
		}
	}
	return true
}

func (ih *Identity) isIdentity(key string) bool {
	for _, n := range ih.norm {
		if sameHeader(key, n) {
			return true
		}
	}
	return false
}

// Strip removes every client-sent identity header (the gateway's own, other
// auth layers' and the extra names), and removes the identity headers'
// names from Connection, where a client could otherwise have a proxy drop the
// headers the gateway sets (reverse_proxy removes headers that Connection
// names).
func (ih *Identity) Strip(h http.Header) {
	for k := range h {
		if len(k) >= len(ih.dropByLen) {
			continue
		}
		for _, n := range ih.dropByLen[len(k)] {
			if sameHeader(k, n) {
				delete(h, k)
				break
			}
		}
	}
	conn, ok := h["Connection"]
	if !ok {
		return
	}
	var kept []string
	changed := false
	for _, v := range conn {
		for _, tok := range strings.Split(v, ",") {
			tok = strings.TrimSpace(tok)
			if tok == "" {
				continue
			}
			if ih.isIdentity(tok) {
				changed = true
				continue
			}
			kept = append(kept, tok)
		}
	}
	if !changed {
		return
	}
	if len(kept) == 0 {
		delete(h, "Connection")
		return
	}
	h["Connection"] = []string{strings.Join(kept, ", ")}
}

// Set sets the identity headers to p's.
func (ih *Identity) Set(h http.Header, p auth.Principal) {
	h[ih.id] = []string{p.UserID}
	h[ih.name] = []string{p.Username}
	h[ih.scopes] = []string{p.ScopeString}
}

// hopOrRoutingHeaders are names an identity header must not take: hop-by-hop
// headers (RFC 9110 section 7.6.1) are dropped by proxies, and the others
// steer routing, authentication or caching.
var hopOrRoutingHeaders = []string{
	"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
	"te", "trailer", "transfer-encoding", "upgrade", "host", "authorization", "cookie", "set-cookie",
	"content-length", "content-type", "forwarded", "x-forwarded-for", "x-forwarded-host",
	"x-forwarded-proto", "x-real-ip", "via", "expect",
	// headers that rewrite the path or method upstream, or claim a
	// client address
	"x-forwarded-port", "x-forwarded-prefix", "x-forwarded-uri", "x-forwarded-path", "x-forwarded-server",
	"x-original-url", "x-original-uri", "x-original-method", "x-rewrite-url", "x-http-method-override",
	"x-http-method", "x-method-override", "true-client-ip", "x-client-ip", "cf-connecting-ip",
	"origin", "referer", "cache-control", "range", "cookie2",
}

// CheckIdentityName accepts a name for an identity header: a header
// name that is not hop-by-hop and steers nothing.
func CheckIdentityName(name string) error {
	if err := CheckToken(name); err != nil {
		return err
	}
	n := Normalize(name)
	for _, bad := range hopOrRoutingHeaders {
		if n == bad {
			return fmt.Errorf("%q is a hop-by-hop or routing header and cannot carry identity", name)
		}
	}
	return nil
}

// CheckToken accepts the header names the gateway may set or strip:
// letters, digits and '-'.
func CheckToken(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%q: only letters, digits and '-' are allowed", name)
		}
	}
	return nil
}

// CheckCookieName enforces RFC 6265 token syntax and the rules browsers
// apply to the __Secure- and __Host- prefixes with the attributes we set
// (Secure always; Path=refresh_path, no Domain).
func CheckCookieName(name, refreshPath string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return fmt.Errorf("%q is not a valid cookie name", name)
		}
	}
	if len(name) >= 7 && strings.EqualFold(name[:7], "__Host-") && refreshPath != "/" {
		return fmt.Errorf("%q: browsers accept a __Host- cookie only with Path=/, but the refresh cookie has Path=%s; use the __Secure- prefix", name, refreshPath)
	}
	return nil
}

// StripCookie removes the named cookie from the request's Cookie headers,
// keeping the others.
func StripCookie(r *http.Request, name string) {
	vals, ok := r.Header["Cookie"]
	if !ok {
		return
	}
	prefix := name + "="
	found := false
	for _, v := range vals {
		if strings.Contains(v, prefix) {
			found = true
			break
		}
	}
	if !found {
		return
	}
	var kept []string
	for _, v := range vals {
		parts := strings.Split(v, ";")
		var keep []string
		for _, p := range parts {
			if strings.HasPrefix(strings.TrimSpace(p), prefix) {
				continue
			}
			keep = append(keep, strings.TrimSpace(p))
		}
		if len(keep) > 0 {
			kept = append(kept, strings.Join(keep, "; "))
		}
	}
	if len(kept) == 0 {
		delete(r.Header, "Cookie")
		return
	}
	r.Header["Cookie"] = kept
}
