package etcd

import (
	"strings"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		raw       string
		endpoints string // joined with ","
		prefix    string
		tls       bool
		timeout   time.Duration
	}{
		{"etcd://127.0.0.1:2379/crudauth/", "127.0.0.1:2379", "/crudauth/", false, 0},
		{"etcd://h1:2379,h2:22379/prefix/", "h1:2379,h2:22379", "/prefix/", false, 0},
		{"etcd://h1:2379", "h1:2379", DefaultPrefix, false, 0},
		{"etcd://h1:2379?dial_timeout=5s", "h1:2379", DefaultPrefix, false, 5 * time.Second},
		{"etcd://h1/a/b", "h1:2379", "/a/b/", false, 0},
		{"etcd://[::1]:2379,[2001:db8::1]/p/", "[::1]:2379,[2001:db8::1]:2379", "/p/", false, 0},
		{"etcds://etcd.example.com:2379/crudauth/?dial_timeout=750ms", "etcd.example.com:2379", "/crudauth/", true, 750 * time.Millisecond},
		{"ETCD://h:1/x/", "h:1", "/x/", false, 0},
		{"etcd://h:2379/with%20space/", "h:2379", "/with space/", false, 0},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			o, err := ParseURL(tc.raw)
			if err != nil {
				t.Fatalf("ParseURL: %v", err)
			}
			if got := strings.Join(o.Endpoints, ","); got != tc.endpoints {
				t.Errorf("endpoints %q, want %q", got, tc.endpoints)
			}
			if o.Prefix != tc.prefix {
				t.Errorf("prefix %q, want %q", o.Prefix, tc.prefix)
			}
			if (o.TLS != nil) != tc.tls {
				t.Errorf("TLS %v, want %v", o.TLS != nil, tc.tls)
			}
			if o.TLS != nil && (o.TLS.RootCAs != nil || o.TLS.InsecureSkipVerify) {
				t.Errorf("TLS is not checked against the system roots: %+v", o.TLS)
			}
			if o.DialTimeout != tc.timeout {
				t.Errorf("dial timeout %v, want %v", o.DialTimeout, tc.timeout)
			}
			if o.Username != "" || o.Password != "" {
				t.Errorf("credentials from the URL: %q", o.Username)
			}
			if !IsURL(tc.raw) {
				t.Errorf("IsURL is false")
			}
			// What messages show parses back to the same place.
			back, err := ParseURL(o.URL())
			if err != nil || strings.Join(back.Endpoints, ",") != tc.endpoints || back.Prefix != tc.prefix || (back.TLS != nil) != tc.tls {
				t.Errorf("URL() %q does not parse back: %+v, %v", o.URL(), back, err)
			}
		})
	}
}

func TestParseURLRefused(t *testing.T) {
	for _, tc := range []struct {
		raw, want string
	}{
		{"/var/lib/caddy/crudauth.db", "want etcd://"},
		{"http://h:2379/crudauth/", "scheme"},
		{"etcd://", "no endpoint"},
		{"etcd:///crudauth/", "no endpoint"},
		{"etcd://h1:2379,,h2:2379/p/", "endpoint 2: empty"},
		{"etcd://h1:2379,/p/", "endpoint 2: empty"},
		{"etcd://h1:notaport/p/", "port"},
		{"etcd://h1:0/p/", "port"},
		{"etcd://h1:65536/p/", "port"},
		{"etcd://:2379/p/", "no host"},
		{"etcd://::1/p/", "IPv6"},
		{"etcd://root:hunter2@h1:2379/p/", "CRUDAUTH_ETCD_PASSWORD"},
		{"etcd://root@h1:2379/p/", "credentials"},
		{"etcd://h1:2379/", "root prefix"},
		{"etcd://h1:2379//", "root prefix"},
		{"etcd://h1:2379/p/%zz", "escape"},
		{"etcd://h1:2379/p/?dial_timeout=soon", "dial_timeout"},
		{"etcd://h1:2379/p/?dial_timeout=-1s", "dial_timeout"},
		{"etcd://h1:2379/p/?dial_timeout=0s", "dial_timeout"},
		{"etcd://h1:2379/p/?dial_timeout=1s&dial_timeout=2s", "more than once"},
		{"etcd://h1:2379/p/?password=x", "unknown parameter"},
		{"etcd://h1:2379/p/?username=root", "unknown parameter"},
		{"etcd://h1:2379/p/?a=%zz", "malformed"},
		{"etcd://h1:2379/p/#frag", "fragment"},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			o, err := ParseURL(tc.raw)
			if err == nil {
				t.Fatalf("accepted: %+v", o)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error repeats the password: %q", err)
			}
		})
	}
	if IsURL("/var/lib/caddy/crudauth.db") || IsURL("crudauth.db") {
		t.Error("a file path is taken for a URL")
	}
}
