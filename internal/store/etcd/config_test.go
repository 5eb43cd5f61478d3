package etcd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string // "": accepted
	}{
		{"minimal", Config{Endpoints: []string{"a:1"}}, ""},
		{"full", Config{Endpoints: []string{"a:1"}, Prefix: "/gw/", DialTimeout: time.Second, MaxStaleness: time.Second,
			TLS: &TLSFiles{CA: "/ca.pem", Cert: "/c.pem", Key: "/k.pem"}, Username: "gw", Password: "pw"}, ""},
		{"no endpoints", Config{}, "store etcd: endpoints are required"},
		{"prefix without slashes", Config{Endpoints: []string{"a:1"}, Prefix: "crudauth"}, `store etcd: prefix "crudauth" must start and end with /`},
		{"negative dial_timeout", Config{Endpoints: []string{"a:1"}, DialTimeout: -1}, "store etcd: dial_timeout and max_staleness must be positive"},
		{"negative max_staleness", Config{Endpoints: []string{"a:1"}, MaxStaleness: -1}, "store etcd: dial_timeout and max_staleness must be positive"},
		{"cert without key", Config{Endpoints: []string{"a:1"}, TLS: &TLSFiles{Cert: "/c.pem"}}, "store etcd: tls: cert and key go together"},
		{"key without cert", Config{Endpoints: []string{"a:1"}, TLS: &TLSFiles{Key: "/k.pem"}}, "store etcd: tls: cert and key go together"},
		{"password without username", Config{Endpoints: []string{"a:1"}, Password: "x"}, "store etcd: a password needs a username"},
	} {
		err := tc.c.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || err.Error() != tc.want) {
			t.Errorf("%s: Check() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestConfigOptions: the files are read into a TLS 1.2+ configuration,
// and a file that holds no certificate is refused by name.
func TestConfigOptions(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	ca, cert, key, junk := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), filepath.Join(dir, "junk.pem")
	for p, b := range map[string][]byte{ca: certPEM, cert: certPEM, key: keyPEM, junk: []byte("not a certificate\n")} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	o, err := (&Config{Endpoints: []string{"a:1"}, TLS: &TLSFiles{CA: ca, Cert: cert, Key: key}}).Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.Prefix != DefaultPrefix || o.TLS == nil || o.TLS.MinVersion != tls.VersionTLS12 || o.TLS.RootCAs == nil || len(o.TLS.Certificates) != 1 {
		t.Errorf("options %+v, want the default prefix and TLS 1.2+ with the CA and the client certificate", o)
	}

	_, err = (&Config{Endpoints: []string{"a:1"}, TLS: &TLSFiles{CA: junk}}).Options()
	if want := "store etcd: tls: ca " + junk + ": no certificate in it"; err == nil || err.Error() != want {
		t.Errorf("a CA file without a certificate: %v, want %q", err, want)
	}
	_, err = (&Config{Endpoints: []string{"a:1"}, TLS: &TLSFiles{CA: filepath.Join(dir, "missing.pem")}}).Options()
	if err == nil || !strings.HasPrefix(err.Error(), "store etcd: tls: ") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing CA file: %v", err)
	}
	if _, err := (&Config{}).Options(); err == nil || err.Error() != "store etcd: endpoints are required" {
		t.Errorf("Options without endpoints: %v, want the check's error", err)
	}
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}
