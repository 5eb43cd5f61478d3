// Package site decides whether two origins are same-site, as browsers do
// when they decide whether a SameSite=Strict or Lax cookie goes along with a
// request: schemeful same-site (RFC 6265bis, "same-site" and "schemeful
// same-site"; the HTML standard's "site" of an origin).
//
// The site of an origin is its scheme and its registrable domain (the
// public suffix plus one label, from the Public Suffix List), or its host
// when it has none: an IP address, a host that is a public suffix itself,
// and a host under a top-level label the list does not know (localhost,
// internal names). For the last, browsers know no registry either and fall
// back to the host, so app.localhost and localhost are two sites; counting
// them as one would promise a cookie the browser does not send.
package site

import (
	"net/netip"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// Site is the site of an origin: its scheme and its registrable domain or,
// without one, its host.
type Site struct {
	Scheme string
	Domain string
}

// Of returns the site of the origin with the given scheme and host (no
// port; an IPv6 address without brackets). Scheme and host are compared
// without regard to letter case, and a trailing dot of a domain name is
// dropped, as URL parsers keep it and the list does not.
func Of(scheme, host string) Site {
	scheme = strings.ToLower(scheme)
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return Site{Scheme: scheme, Domain: registrable(host)}
}

// Same reports whether the two origins are schemeful same-site: the same
// scheme and the same registrable domain (or host, without one).
func Same(schemeA, hostA, schemeB, hostB string) bool {
	return Of(schemeA, hostA) == Of(schemeB, hostB)
}

// SameDomain is Same without the scheme, for a side whose scheme cannot be
// known (a gateway behind a proxy that terminates TLS sees plain http).
func SameDomain(hostA, hostB string) bool {
	return Of("", hostA).Domain == Of("", hostB).Domain
}

// registrable returns the registrable domain of a lower case host, or the
// host itself when it has none.
func registrable(host string) string {
	if host == "" {
		return ""
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return host
	}
	suffix, icann := publicsuffix.PublicSuffix(host)
	if !icann && !strings.Contains(suffix, ".") {
		// No rule of the list matched: PublicSuffix applied its default
		// "*" rule. Browsers treat such a registry as unknown and use the
		// host.
		return host
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(host)
	if err != nil {
		return host // the host is a public suffix itself
	}
	return d
}
