package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// goldenPath holds what each case of TestCaddyfileGolden adapts to: the
// whole adapted JSON, or the whole error (its text and the file:line the
// Dispenser added). Regenerate it with CRUDAUTH_UPDATE_GOLDEN=1 only when
// the Caddyfile syntax is meant to change, and read the diff.
const goldenPath = "testdata/caddyfile_golden.json"

// goldenHandler wraps the lines of a crudauth handler block in a site; the
// block's first line is line 3.
func goldenHandler(lines string) string {
	return "http://localhost:9080 {\n\tcrudauth {\n" + lines + "\n\t}\n}\n"
}

// goldenRealm wraps the lines of a realm block of the global option; the
// block's first line is line 4.
func goldenRealm(lines string) string {
	return "{\n\tcrudauth {\n\t\trealm r {\n" + lines + "\n\t\t}\n\t}\n}\n"
}

// goldenCases are Caddyfiles for every subdirective of every parser: each
// form it accepts and each error it gives. The key names the case in the
// golden file.
var goldenCases = []struct{ name, src string }{
	// The handler's own subdirectives.
	{"handler/empty", "http://localhost:9080 {\n\tcrudauth\n}\n"},
	{"handler/empty block", goldenHandler("")},
	{"handler/argument on directive", "http://localhost:9080 {\n\tcrudauth now\n}\n"},
	{"handler/argument on directive with block", "http://localhost:9080 {\n\tcrudauth now {\n\t\trefresh body\n\t}\n}\n"},
	{"handler/unrecognized", goldenHandler("refresh body\nbogus 1")},
	{"handler/unrecognized without argument", goldenHandler("bogus")},
	{"handler/every string", goldenHandler(`refresh body
token_path /auth/token
refresh_path /auth/refresh
issuer https://gw.example
audience api
realm example
cookie_name __Secure-rt
user_id_header X-Auth-Id
user_name_header X-Auth-Name
scopes_header X-Auth-Scopes
password_path /auth/password
cookie_same_site Strict`)},
	{"handler/string missing", goldenHandler("refresh")},
	{"handler/string extra", goldenHandler("issuer a b")},
	{"handler/string followed by block", goldenHandler("audience {\n}")},
	{"handler/cookie_same_site missing", goldenHandler("cookie_same_site")},
	{"handler/password_path extra", goldenHandler("password_path /a /b")},
	{"handler/string repeated", goldenHandler("issuer a\nrefresh body\nissuer b")},
	{"handler/realm missing", goldenHandler("realm")},
	{"handler/ttls", goldenHandler("access_ttl 10m\nrefresh_ttl 2d")},
	{"handler/ttl missing", goldenHandler("access_ttl")},
	{"handler/ttl extra", goldenHandler("refresh_ttl 1h 2h")},
	{"handler/ttl not a duration", goldenHandler("access_ttl soon")},
	{"handler/ttl negative", goldenHandler("refresh_ttl -5m")},
	{"handler/ttl zero", goldenHandler("access_ttl 0s")},
	{"handler/ttl repeated", goldenHandler("access_ttl 5m\nrefresh body\naccess_ttl 10m")},
	{"handler/lists", goldenHandler(`default_scopes me:read
grantable_scopes me:read reports:read reports:write
allowed_origins https://app.example https://admin.example
strip_headers X-A X-B X-C`)},
	{"handler/default_scopes missing", goldenHandler("default_scopes")},
	{"handler/grantable_scopes missing", goldenHandler("grantable_scopes")},
	{"handler/allowed_origins missing", goldenHandler("allowed_origins")},
	{"handler/strip_headers missing", goldenHandler("strip_headers")},
	{"handler/list repeated", goldenHandler("grantable_scopes a\ngrantable_scopes b")},
	{"handler/rules", "http://localhost:9080 {\n\t@writes {\n\t\tmethod POST\n\t}\n\tcrudauth {\n" +
		"public /public/*\nrequire @writes reports:write\nrequire /r /r/* reports:read\nrequire * a b\npublic *\nrequire /x\n\t}\n}\n"},
	{"handler/rule without matcher", goldenHandler("require")},
	{"handler/rule with bare word", goldenHandler("require admin")},
	{"handler/public with scopes", goldenHandler("public /p/* admin")},
	{"handler/unknown named matcher", goldenHandler("require @nope admin")},
	{"handler/second matcher", goldenHandler("require * /b admin")},
	{"handler/second named matcher", goldenHandler("require /a @b admin")},
	{"handler/star as scope", goldenHandler("require /a x *")},

	// The realm subdirectives, in a handler's block.
	{"handler realm/all", goldenHandler(`db /var/lib/crudauth/users.db
secret {env.CRUDAUTH_SECRET}
signing_alg EdDSA
key_publish_delay 2h
argon2 65536 3 2
max_concurrent_hashes 3
hash_queue_timeout 500ms
password_min_length 12
password_max_length 128`)},
	{"handler realm/db missing", goldenHandler("db")},
	{"handler realm/db extra", goldenHandler("db a b")},
	{"handler realm/secret missing", goldenHandler("secret")},
	{"handler realm/secret extra", goldenHandler("secret a b")},
	{"handler realm/signing_alg missing", goldenHandler("signing_alg")},
	{"handler realm/signing_alg extra", goldenHandler("signing_alg EdDSA ES256")},
	{"handler realm/key_publish_delay missing", goldenHandler("key_publish_delay")},
	{"handler realm/key_publish_delay extra", goldenHandler("key_publish_delay 1h 2h")},
	{"handler realm/key_publish_delay bad", goldenHandler("key_publish_delay later")},
	{"handler realm/key_publish_delay zero", goldenHandler("key_publish_delay 0")},
	{"handler realm/hash_queue_timeout missing", goldenHandler("hash_queue_timeout")},
	{"handler realm/hash_queue_timeout bad", goldenHandler("hash_queue_timeout 5")},
	{"handler realm/hash_queue_timeout negative", goldenHandler("hash_queue_timeout -1s")},
	{"handler realm/argon2 arity", goldenHandler("argon2 1 2")},
	{"handler realm/argon2 extra", goldenHandler("argon2 1 2 3 4")},
	{"handler realm/argon2 missing", goldenHandler("argon2")},
	{"handler realm/argon2 not numbers", goldenHandler("argon2 a 2 1")},
	{"handler realm/argon2 threads overflow", goldenHandler("argon2 65536 2 256")},
	{"handler realm/argon2 memory overflow", goldenHandler("argon2 4294967296 2 1")},
	{"handler realm/argon2 negative", goldenHandler("argon2 65536 -2 1")},
	{"handler realm/max_concurrent_hashes missing", goldenHandler("max_concurrent_hashes")},
	{"handler realm/max_concurrent_hashes extra", goldenHandler("max_concurrent_hashes 1 2")},
	{"handler realm/max_concurrent_hashes zero", goldenHandler("max_concurrent_hashes 0")},
	{"handler realm/max_concurrent_hashes word", goldenHandler("max_concurrent_hashes lots")},
	{"handler realm/password_min_length negative", goldenHandler("password_min_length -8")},
	{"handler realm/password_max_length word", goldenHandler("password_max_length long")},
	{"handler realm/password_max_length missing", goldenHandler("password_max_length")},
	{"handler realm/repeated", goldenHandler("secret a\nsecret b")},
	{"handler realm/db then store", goldenHandler("db a.db\nstore memory")},
	{"handler realm/store then db", goldenHandler("store memory\ndb a.db")},
	{"handler realm/store missing backend", goldenHandler("store")},
	{"handler realm/store unknown backend", goldenHandler("store nosuch")},

	// The store modules.
	{"store/memory", goldenHandler("store memory")},
	{"store/memory empty block", goldenHandler("store memory {\n}")},
	{"store/memory name", goldenHandler("store memory {\n name shared\n}")},
	{"store/memory argument", goldenHandler("store memory shared")},
	{"store/memory name missing", goldenHandler("store memory {\n name\n}")},
	{"store/memory name extra", goldenHandler("store memory {\n name a b\n}")},
	{"store/memory name repeated", goldenHandler("store memory {\n name a\n name b\n}")},
	{"store/memory unrecognized", goldenHandler("store memory {\n path x\n}")},
	{"store/bolt", goldenHandler("store bolt {\n path /tmp/x.db\n timeout 5s\n}")},
	{"store/bolt bare", goldenHandler("store bolt")},
	{"store/bolt argument", goldenHandler("store bolt /tmp/x.db")},
	{"store/bolt path missing", goldenHandler("store bolt {\n path\n}")},
	{"store/bolt path extra", goldenHandler("store bolt {\n path a b\n}")},
	{"store/bolt timeout missing", goldenHandler("store bolt {\n timeout\n}")},
	{"store/bolt timeout extra", goldenHandler("store bolt {\n timeout 1s 2s\n}")},
	{"store/bolt timeout bad", goldenHandler("store bolt {\n timeout soon\n}")},
	{"store/bolt timeout zero", goldenHandler("store bolt {\n timeout 0s\n}")},
	{"store/bolt timeout negative", goldenHandler("store bolt {\n timeout -1s\n}")},
	{"store/bolt repeated", goldenHandler("store bolt {\n path a\n timeout 1s\n path b\n}")},
	{"store/bolt unrecognized", goldenHandler("store bolt {\n name x\n}")},
	{"store/etcd all", goldenHandler(`store etcd {
 endpoints 10.0.0.1:2379 https://10.0.0.2:2379
 prefix /gw/
 dial_timeout 3s
 tls {
  ca /etc/ca.pem
  cert /etc/c.pem
  key /etc/k.pem
 }
 username gw
 password {env.ETCD_PASSWORD}
 max_staleness 30s
}`)},
	{"store/etcd minimal", goldenHandler("store etcd {\n endpoints 127.0.0.1:2379\n}")},
	{"store/etcd tls part", goldenHandler("store etcd {\n endpoints e:1\n tls {\n  ca /ca.pem\n }\n}")},
	{"store/etcd tls empty", goldenHandler("store etcd {\n endpoints e:1\n tls {\n }\n}")},
	{"store/etcd no endpoints", goldenHandler("store etcd {\n prefix /x/\n}")},
	{"store/etcd bare", goldenHandler("store etcd")},
	{"store/etcd argument", goldenHandler("store etcd e:1")},
	{"store/etcd endpoints missing", goldenHandler("store etcd {\n endpoints\n}")},
	{"store/etcd endpoints repeated", goldenHandler("store etcd {\n endpoints a:1\n endpoints b:1\n}")},
	{"store/etcd prefix missing", goldenHandler("store etcd {\n endpoints e:1\n prefix\n}")},
	{"store/etcd prefix extra", goldenHandler("store etcd {\n endpoints e:1\n prefix a b\n}")},
	{"store/etcd username missing", goldenHandler("store etcd {\n endpoints e:1\n username\n}")},
	{"store/etcd password extra", goldenHandler("store etcd {\n endpoints e:1\n password a b\n}")},
	{"store/etcd dial_timeout missing", goldenHandler("store etcd {\n endpoints e:1\n dial_timeout\n}")},
	{"store/etcd dial_timeout extra", goldenHandler("store etcd {\n endpoints e:1\n dial_timeout 1s 2s\n}")},
	{"store/etcd dial_timeout bad", goldenHandler("store etcd {\n endpoints e:1\n dial_timeout soon\n}")},
	{"store/etcd dial_timeout zero", goldenHandler("store etcd {\n endpoints e:1\n dial_timeout 0\n}")},
	{"store/etcd max_staleness negative", goldenHandler("store etcd {\n endpoints e:1\n max_staleness -1s\n}")},
	{"store/etcd max_staleness bad", goldenHandler("store etcd {\n endpoints e:1\n max_staleness x\n}")},
	{"store/etcd tls argument", goldenHandler("store etcd {\n endpoints e:1\n tls on {\n  ca x\n }\n}")},
	{"store/etcd tls key missing", goldenHandler("store etcd {\n endpoints e:1\n tls {\n  ca\n }\n}")},
	{"store/etcd tls key extra", goldenHandler("store etcd {\n endpoints e:1\n tls {\n  cert a b\n }\n}")},
	{"store/etcd tls repeated", goldenHandler("store etcd {\n endpoints e:1\n tls {\n  key a\n  key b\n }\n}")},
	{"store/etcd tls unrecognized", goldenHandler("store etcd {\n endpoints e:1\n tls {\n  pin x\n }\n}")},
	{"store/etcd tls unrecognized without argument", goldenHandler("store etcd {\n endpoints e:1\n tls {\n  pin\n }\n}")},
	{"store/etcd tls repeated block", goldenHandler("store etcd {\n endpoints e:1\n tls {\n  ca a\n }\n tls {\n  ca b\n }\n}")},
	{"store/etcd unrecognized", goldenHandler("store etcd {\n endpoints e:1\n path x\n}")},
	{"store/etcd repeated", goldenHandler("store etcd {\n endpoints e:1\n prefix /a/\n prefix /b/\n}")},

	// The throttle.
	{"throttle/off", goldenHandler("throttle off")},
	{"throttle/off with block", goldenHandler("throttle off {\n window 1m\n}")},
	{"throttle/off extra", goldenHandler("throttle off now")},
	{"throttle/on", goldenHandler("throttle on")},
	{"throttle/bare", goldenHandler("throttle")},
	{"throttle/empty block", goldenHandler("throttle {\n}")},
	{"throttle/all", goldenHandler(`throttle {
 max_failures 3
 user_max_failures -1
 ip_max_failures 40
 window 2m
 lockout 30s
 max_lockout 2h
 max_entries 5000
}`)},
	{"throttle/limit zero", goldenHandler("throttle {\n max_failures 0\n}")},
	{"throttle/limit below -1", goldenHandler("throttle {\n user_max_failures -2\n}")},
	{"throttle/limit word", goldenHandler("throttle {\n ip_max_failures many\n}")},
	{"throttle/max_entries -1", goldenHandler("throttle {\n max_entries -1\n}")},
	{"throttle/max_entries zero", goldenHandler("throttle {\n max_entries 0\n}")},
	{"throttle/limit missing", goldenHandler("throttle {\n max_failures\n}")},
	{"throttle/limit extra", goldenHandler("throttle {\n max_failures 1 2\n}")},
	{"throttle/window bad", goldenHandler("throttle {\n window soon\n}")},
	{"throttle/lockout zero", goldenHandler("throttle {\n lockout 0s\n}")},
	{"throttle/max_lockout negative", goldenHandler("throttle {\n max_lockout -1h\n}")},
	{"throttle/window missing", goldenHandler("throttle {\n window\n}")},
	{"throttle/repeated", goldenHandler("throttle {\n window 1m\n window 2m\n}")},
	{"throttle/unrecognized", goldenHandler("throttle {\n bogus 1\n}")},
	{"throttle/unrecognized without argument", goldenHandler("throttle {\n bogus\n}")},
	{"throttle/unrecognized with two arguments", goldenHandler("throttle {\n bogus 1 2\n}")},
	{"throttle/repeated directive", goldenHandler("throttle off\nthrottle off")},

	// The session subdirectives.
	{"sessions/all", goldenHandler(`rotate_refresh off
refresh_reuse_grace 30s
refresh_sliding on
max_sessions 5
logout_path /auth/logout
sessions_path /auth/sessions`)},
	{"sessions/on and off", goldenHandler("rotate_refresh on\nrefresh_sliding off")},
	{"sessions/grace zero", goldenHandler("refresh_reuse_grace 0s")},
	{"sessions/grace longest", goldenHandler("refresh_reuse_grace 5m")},
	{"sessions/grace too long", goldenHandler("refresh_reuse_grace 5m1s")},
	{"sessions/grace negative", goldenHandler("refresh_reuse_grace -1s")},
	{"sessions/grace bad", goldenHandler("refresh_reuse_grace soon")},
	{"sessions/grace missing", goldenHandler("refresh_reuse_grace")},
	{"sessions/grace extra", goldenHandler("refresh_reuse_grace 1s 2s")},
	{"sessions/rotate_refresh yes", goldenHandler("rotate_refresh yes")},
	{"sessions/refresh_sliding On", goldenHandler("refresh_sliding On")},
	{"sessions/rotate_refresh missing", goldenHandler("rotate_refresh")},
	{"sessions/refresh_sliding extra", goldenHandler("refresh_sliding on off")},
	{"sessions/max_sessions zero", goldenHandler("max_sessions 0")},
	{"sessions/max_sessions word", goldenHandler("max_sessions many")},
	{"sessions/max_sessions missing", goldenHandler("max_sessions")},
	{"sessions/logout_path trailing slash", goldenHandler("logout_path /auth/logout/")},
	{"sessions/logout_path relative", goldenHandler("logout_path logout")},
	{"sessions/logout_path off", goldenHandler("logout_path off")},
	{"sessions/sessions_path wildcard", goldenHandler("sessions_path /s/*")},
	{"sessions/sessions_path missing", goldenHandler("sessions_path")},
	{"sessions/logout_path extra", goldenHandler("logout_path /a /b")},
	{"sessions/repeated", goldenHandler("max_sessions 2\nmax_sessions 3")},

	// The discovery subdirectives.
	{"discovery/all", goldenHandler("jwks_path /keys\nmetadata_path /meta\nforward_token on")},
	{"discovery/off", goldenHandler("jwks_path off\nmetadata_path off\nforward_token off")},
	{"discovery/forward_token yes", goldenHandler("forward_token yes")},
	{"discovery/forward_token missing", goldenHandler("forward_token")},
	{"discovery/forward_token extra", goldenHandler("forward_token on off")},
	{"discovery/jwks_path relative", goldenHandler("jwks_path keys")},
	{"discovery/metadata_path trailing slash", goldenHandler("metadata_path /meta/")},
	{"discovery/jwks_path missing", goldenHandler("jwks_path")},
	{"discovery/metadata_path extra", goldenHandler("metadata_path /a /b")},
	{"discovery/repeated", goldenHandler("forward_token on\nforward_token on")},

	// The global option and its realms.
	{"global/realm all", goldenRealm(`db /var/lib/crudauth/r.db
secret {env.S}
signing_alg ES256
key_publish_delay 3h
argon2 65536 3 2
max_concurrent_hashes 2
hash_queue_timeout 1s
password_min_length 10
password_max_length 100
throttle {
 window 5m
}`)},
	{"global/realm store", goldenRealm("store etcd {\n endpoints e:1\n}\nthrottle off")},
	{"global/realm empty", "{\n\tcrudauth {\n\t\trealm r\n\t}\n}\n"},
	{"global/two realms and a handler", "{\n\tcrudauth {\n\t\trealm a {\n\t\t\tstore memory\n\t\t}\n\t\trealm b.c {\n\t\t\tdb b.db\n\t\t}\n\t}\n}\n" +
		"http://localhost:9080 {\n\tcrudauth {\n\t\trealm a\n\t}\n}\n"},
	{"global/empty", "{\n\tcrudauth\n}\n"},
	{"global/argument", "{\n\tcrudauth x\n}\n"},
	{"global/given twice", "{\n\tcrudauth {\n\t\trealm a\n\t}\n\tcrudauth {\n\t\trealm b\n\t}\n}\n"},
	{"global/unrecognized option", "{\n\tcrudauth {\n\t\tstore memory\n\t}\n}\n"},
	{"global/realm missing name", "{\n\tcrudauth {\n\t\trealm\n\t}\n}\n"},
	{"global/realm bad name", "{\n\tcrudauth {\n\t\trealm a/b\n\t}\n}\n"},
	{"global/realm declared twice", "{\n\tcrudauth {\n\t\trealm a\n\t\trealm a\n\t}\n}\n"},
	{"global/realm extra argument", "{\n\tcrudauth {\n\t\trealm a b\n\t}\n}\n"},
	{"global/realm unrecognized", goldenRealm("access_ttl 5m")},
	{"global/realm unrecognized without argument", goldenRealm("issuer")},
	{"global/realm repeated", goldenRealm("db a\ndb b")},
	{"global/realm db and store", goldenRealm("store memory\ndb x")},
	{"global/realm bad argon2", goldenRealm("argon2 1 2")},
	{"global/realm bad duration", goldenRealm("hash_queue_timeout 0s")},
	{"global/realm bad throttle", goldenRealm("throttle {\n max_entries 0\n}")},
	{"global/realm throttle repeated option", goldenRealm("throttle {\n lockout 1m\n lockout 2m\n}")},
}

// goldenUnmarshal are handler blocks read by (*Handler).UnmarshalCaddyfile,
// outside the directive (no named matchers).
var goldenUnmarshal = []struct{ name, src string }{
	{"unmarshal/block", "crudauth {\n\trefresh body\n\tdefault_scopes a b\n\trequire /x/* a\n\tthrottle off\n\tstore memory\n}"},
	{"unmarshal/named matcher", "crudauth {\n\trequire @a x\n}"},
	{"unmarshal/argument", "crudauth x"},
}

// TestCaddyfileGolden pins what every Caddyfile form adapts to, byte for
// byte: the JSON of the accepted ones, and the message and line of the
// refused ones.
func TestCaddyfileGolden(t *testing.T) {
	got := map[string]string{}
	for _, tc := range goldenCases {
		if _, dup := got[tc.name]; dup {
			t.Fatalf("case %q is given twice", tc.name)
		}
		out, err := adapt(t, tc.src)
		if err != nil {
			got[tc.name] = "error: " + err.Error()
		} else {
			got[tc.name] = out
		}
	}
	for _, tc := range goldenUnmarshal {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.src)); err != nil {
			got[tc.name] = "error: " + err.Error()
			continue
		}
		b, err := json.Marshal(&h)
		if err != nil {
			t.Fatal(err)
		}
		got[tc.name] = string(b)
	}
	if os.Getenv("CRUDAUTH_UPDATE_GOLDEN") == "1" {
		b, err := json.MarshalIndent(got, "", "\t")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.FromSlash(goldenPath), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(filepath.FromSlash(goldenPath))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]string
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	for name, g := range got {
		w, ok := want[name]
		switch {
		case !ok:
			t.Errorf("%s: not in %s (regenerate it with CRUDAUTH_UPDATE_GOLDEN=1 and read the diff)", name, goldenPath)
		case g != w:
			t.Errorf("%s:\n got %s\nwant %s", name, g, w)
		}
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("%s: in %s but no longer a case", name, goldenPath)
		}
	}
	var errs int
	for _, g := range got {
		if strings.HasPrefix(g, "error: ") {
			errs++
		}
	}
	t.Logf("%d cases, %d of them errors", len(got), errs)
}
