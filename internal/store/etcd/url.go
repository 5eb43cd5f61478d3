package etcd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// URL schemes: etcd:// connects in plain text, etcds:// with TLS checked
// against the system's roots.
const (
	Scheme    = "etcd"
	SchemeTLS = "etcds"
)

// defaultClientPort is etcd's registered client port, used for an endpoint
// given without one.
const defaultClientPort = "2379"

// IsURL reports whether s names an etcd store (etcd:// or etcds://) rather
// than a file.
func IsURL(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	return ok && (strings.EqualFold(scheme, Scheme) || strings.EqualFold(scheme, SchemeTLS))
}

// ParseURL reads a store URL,
//
//	etcd://HOST:PORT[,HOST:PORT...][/PREFIX/][?dial_timeout=2s]
//	etcds://...      the same over TLS, checked against the system roots
//
// into Options with Endpoints, Prefix, DialTimeout and TLS set. The prefix
// is the path: absent, it is DefaultPrefix; a missing trailing "/" is
// added (a prefix always ends in one); the bare root "/" is refused, since
// it more likely means "the default" than "mix crudauth's keys with every
// other key of the cluster". A port left out is 2379.
//
// Credentials are never read from the URL, which ends up in shell history
// and process listings: a URL with user information is refused, and the
// caller supplies Username and Password some other way. No error repeats
// the URL, so that a password typed into it by mistake is not printed.
func ParseURL(raw string) (Options, error) {
	var o Options
	scheme, rest, ok := strings.Cut(raw, "://")
	switch {
	case !ok:
		return o, errors.New("store URL: want etcd://HOST:PORT[,HOST:PORT]/PREFIX/ or etcds://...")
	case strings.EqualFold(scheme, Scheme):
	case strings.EqualFold(scheme, SchemeTLS):
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	default:
		return o, fmt.Errorf("store URL: scheme %.16q: want etcd:// or etcds://", scheme)
	}
	if strings.Contains(rest, "#") {
		return o, errors.New("store URL: a fragment (#...) has no meaning here")
	}
	rest, rawQuery, _ := strings.Cut(rest, "?")
	authority, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	if strings.Contains(authority, "@") {
		return o, errors.New("store URL: credentials are not read from the URL (it would land in shell history and process listings): " +
			"set CRUDAUTH_ETCD_USERNAME and CRUDAUTH_ETCD_PASSWORD")
	}
	if authority == "" {
		return o, errors.New("store URL: no endpoint: want etcd://HOST:PORT[,HOST:PORT]/PREFIX/")
	}
	for _, ep := range strings.Split(authority, ",") {
		hp, err := endpoint(ep)
		if err != nil {
			return Options{}, fmt.Errorf("store URL: endpoint %d: %w", len(o.Endpoints)+1, err)
		}
		o.Endpoints = append(o.Endpoints, hp)
	}

	prefix, err := url.PathUnescape(path)
	if err != nil {
		return Options{}, errors.New("store URL: the prefix holds an invalid %-escape")
	}
	switch {
	case prefix == "":
		o.Prefix = DefaultPrefix
	case strings.Trim(prefix, "/") == "":
		return Options{}, fmt.Errorf("store URL: the root prefix %q is refused: name one (etcd://HOST:PORT/crudauth/), or leave the path out for the default %s", prefix, DefaultPrefix)
	default:
		if !strings.HasSuffix(prefix, "/") {
			prefix += "/"
		}
		o.Prefix = prefix
	}

	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return Options{}, errors.New("store URL: the query is malformed")
	}
	for k, vs := range q {
		switch k {
		case "dial_timeout":
			if len(vs) != 1 {
				return Options{}, errors.New("store URL: dial_timeout given more than once")
			}
			d, err := time.ParseDuration(vs[0])
			if err != nil || d <= 0 {
				return Options{}, fmt.Errorf("store URL: dial_timeout %.32q: want a positive duration such as 2s", vs[0])
			}
			o.DialTimeout = d
		default:
			return Options{}, fmt.Errorf("store URL: unknown parameter %.32q (known: dial_timeout)", k)
		}
	}
	return o, nil
}

// endpoint checks one HOST[:PORT] of a store URL and returns it as
// host:port.
func endpoint(ep string) (string, error) {
	if ep == "" {
		return "", errors.New("empty")
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		// No port: a name, an IPv4 address or a bracketed IPv6 one.
		switch {
		case strings.HasPrefix(ep, "[") && strings.HasSuffix(ep, "]"):
			host = ep[1 : len(ep)-1]
		case strings.ContainsAny(ep, ":[]"):
			return "", fmt.Errorf("%.64q is not HOST:PORT (write an IPv6 address in brackets: [::1]:2379)", ep)
		default:
			host = ep
		}
		port = defaultClientPort
	}
	if host == "" {
		return "", fmt.Errorf("%.64q has no host", ep)
	}
	if strings.ContainsAny(host, "/\\ \t%") {
		return "", fmt.Errorf("%.64q is not a host name or address", host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("port %.16q is not a number from 1 to 65535", port)
	}
	return net.JoinHostPort(host, port), nil
}

// URL is the store URL of o, without credentials: what messages show.
func (o Options) URL() string {
	scheme := Scheme
	if o.TLS != nil {
		scheme = SchemeTLS
	}
	prefix := o.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return scheme + "://" + strings.Join(o.Endpoints, ",") + prefix
}
