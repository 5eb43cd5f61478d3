package store

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

const exportHeaderLine = `{"format":"crudauth-export","version":1,"created_at":"2026-01-02T03:04:05Z"}` + "\n"

func TestReadExportRefuses(t *testing.T) {
	user := `{"kind":"user","id":"u1","username":"a","password_hash":"h","disabled":false,"allowed_scopes":null,"token_version":0,"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z","password_changed_at":"2026-01-02T03:04:05Z"}` + "\n"
	end1 := `{"kind":"end","users":1,"secrets":0}` + "\n"
	header2 := strings.Replace(exportHeaderLine, `"version":1`, `"version":2`, 1)
	session := `{"kind":"session","id":"s1","user_id":"u1","scopes":["me:read"],"generation":2,"rotated_at":"2026-01-02T03:04:05Z","created_at":"2026-01-02T03:04:05Z","last_used_at":"2026-01-02T03:04:05Z","expires_at":"2026-03-01T00:00:00Z","user_agent":"UA","address":"192.0.2.1"}` + "\n"
	end2 := `{"kind":"end","users":1,"sessions":1,"secrets":0}` + "\n"
	header3 := strings.Replace(exportHeaderLine, `"version":1`, `"version":3`, 1)
	key := `{"kind":"key","id":"k1","alg":"EdDSA","private":"AAEC","created_at":"2026-01-02T03:04:05Z","sign_from":"2026-01-02T03:05:05Z"}` + "\n"
	endKey := `{"kind":"end","users":0,"sessions":0,"secrets":0,"keys":1}` + "\n"
	for name, tc := range map[string]struct{ in, want string }{
		"empty":            {"", "not a crudauth export"},
		"bbolt file":       {"\x00\x00\x00\x00\x00\x10\x00\x00\xed\xda\x0c\xed", "not a crudauth export"},
		"other format":     {`{"format":"other","version":1}` + "\n", "not a crudauth export"},
		"newer version":    {`{"format":"crudauth-export","version":4,"certs":true}` + "\n", "version 4 is newer than this build reads (up to 3)"},
		"version 0":        {`{"format":"crudauth-export","version":0}` + "\n", "version 0 is not valid"},
		"unknown kind":     {exportHeaderLine + `{"kind":"session","id":"s1"}` + "\n", `line 2: unknown record kind "session"`},
		"no kind":          {exportHeaderLine + `{"id":"u1"}` + "\n", `line 2: no "kind"`},
		"unknown field":    {exportHeaderLine + strings.Replace(user, `"disabled"`, `"admin":true,"disabled"`, 1) + end1, `line 2: user: json: unknown field "admin"`},
		"no end":           {exportHeaderLine + user, "cut short"},
		"end counts wrong": {exportHeaderLine + user + `{"kind":"end","users":2,"secrets":0}` + "\n", "counts 2 users"},
		"after end":        {exportHeaderLine + end1 + user, "line 3: a record after the end line"},
		"repeated name":    {exportHeaderLine + user + strings.Replace(user, `"u1"`, `"u2"`, 1) + end1, `line 3: username "a" repeated`},
		"repeated id":      {exportHeaderLine + user + strings.Replace(user, `"a"`, `"b"`, 1) + end1, "line 3: user id u1 repeated"},
		"no id":            {exportHeaderLine + strings.Replace(user, `"u1"`, `""`, 1) + end1, "has no id"},
		"empty secret":     {exportHeaderLine + `{"kind":"secret","name":"k","value":""}` + "\n", `secret "k" is empty`},
		"bad base64":       {exportHeaderLine + `{"kind":"secret","name":"k","value":"!!"}` + "\n", "line 2: secret"},
		"two values":       {exportHeaderLine + `{"kind":"end","users":0,"secrets":0} {}` + "\n", "line 2: not a JSON object"},
		"long line":        {exportHeaderLine + strings.Repeat(" ", maxExportLine+1) + "x\n", "longer than"},
		"session in v1":    {exportHeaderLine + user + session + end2, `line 3: unknown record kind "session" (version 1 of the format has user, secret and end)`},
		"session of nobody": {header2 + user + strings.Replace(session, `"u1"`, `"u9"`, 1) + end2,
			"line 3: session s1 belongs to user u9, who is not in the file"},
		"session repeated":    {header2 + user + session + session + `{"kind":"end","users":1,"sessions":2,"secrets":0}` + "\n", "line 4: session s1 of user u1 repeated"},
		"session no id":       {header2 + user + strings.Replace(session, `"s1"`, `""`, 1) + end2, "line 3: session of user u1 has no id"},
		"session no user":     {header2 + strings.Replace(session, `"u1"`, `""`, 1) + end2, "line 2: session s1 has no user_id"},
		"session no expiry":   {header2 + user + strings.Replace(session, `"2026-03-01T00:00:00Z"`, `"0001-01-01T00:00:00Z"`, 1) + end2, "has no expires_at"},
		"session bad field":   {header2 + user + strings.Replace(session, `"address"`, `"refresh_token":"x","address"`, 1) + end2, `line 3: session: json: unknown field "refresh_token"`},
		"sessions miscounted": {header2 + user + session + end1, "counts 1 users, 0 sessions"},
		"key in v2":           {header2 + key + endKey, `line 2: unknown record kind "key" (version 2 of the format has user, session, secret and end)`},
		"key repeated":        {header3 + key + key + endKey, `line 3: key "k1" repeated`},
		"key HS256":           {header3 + strings.Replace(key, `"EdDSA"`, `"HS256"`, 1) + endKey, `line 2: key set: key "k1" has algorithm "HS256"`},
		"key no id":           {header3 + strings.Replace(key, `"k1"`, `""`, 1) + endKey, "line 2: key set: a key has no ID"},
		"key no private":      {header3 + strings.Replace(key, `"AAEC"`, `""`, 1) + endKey, `line 2: key set: key "k1" has no private key`},
		"key signs early":     {header3 + strings.Replace(key, `03:05:05Z`, `03:03:05Z`, 1) + endKey, "sign no earlier than it was created"},
		"key bad field":       {header3 + strings.Replace(key, `"alg"`, `"public":"x","alg"`, 1) + endKey, `line 2: key: json: unknown field "public"`},
		"keys miscounted":     {header3 + key + `{"kind":"end","users":0,"sessions":0,"secrets":0}` + "\n", "0 keys, the file holds 0, 0, 0 and 1"},
	} {
		_, err := ReadExport(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
	if _, err := ReadExport(strings.NewReader("")); !errors.Is(err, ErrNotExport) {
		t.Errorf("empty input: %v does not wrap ErrNotExport", err)
	}
}

// TestExportRoundTrip writes a dump and reads it back, with the values that
// JSON could blur: nil and empty scopes, bytes that are not text, times
// with nanoseconds.
func TestExportRoundTrip(t *testing.T) {
	at := time.Date(2025, 6, 7, 8, 9, 10, 123456789, time.UTC)
	in := &Dump{
		CreatedAt: at,
		Users: []*User{
			{ID: "u1", Username: "Zed", PasswordHash: "$2b$10$x", TokenVersion: 1 << 40, CreatedAt: at, UpdatedAt: at, PasswordChangedAt: at},
			{ID: "u2", Username: "amy", Disabled: true, AllowedScopes: []string{}},
			{ID: "u3", Username: "<b>&", AllowedScopes: []string{"a", "b"}},
		},
		Sessions: []*Session{
			{ID: "s1", UserID: "u3", Scopes: []string{"a"}, Generation: 1 << 33, RotatedAt: at.Add(time.Second),
				CreatedAt: at, LastUsedAt: at.Add(time.Minute), ExpiresAt: at.Add(time.Hour), UserAgent: "Mozilla/5.0 <x>", Address: "[2001:db8::1]:443"},
			{ID: "s2", UserID: "u3", Scopes: []string{}, ExpiresAt: at},
			{ID: "s1", UserID: "u1", ExpiresAt: at},
		},
		Secrets: map[string][]byte{"hs256": {0, 0xff, '\n'}, "b": []byte("x")},
		Keys: []SigningKey{
			{ID: "k2", Alg: AlgES256, Private: []byte{0, 0xff, '"'}, CreatedAt: at, SignFrom: at.Add(time.Hour)},
			{ID: "k1", Alg: AlgEdDSA, Private: []byte("der"), CreatedAt: at.Add(-time.Hour), SignFrom: at.Add(-time.Hour), RetiredAt: at.Add(time.Nanosecond)},
		},
	}
	var buf bytes.Buffer
	if err := WriteExport(&buf, in); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), `\u003c`) {
		t.Errorf("HTML escaping in the export: %s", buf.String())
	}
	written := buf.String()
	out, err := ReadExport(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !out.CreatedAt.Equal(at) || len(out.Users) != 3 || len(out.Secrets) != 2 {
		t.Fatalf("read back %+v", out)
	}
	for i, u := range out.Users {
		w := in.Users[i]
		if u.ID != w.ID || u.Username != w.Username || u.PasswordHash != w.PasswordHash || u.Disabled != w.Disabled ||
			u.TokenVersion != w.TokenVersion || (u.AllowedScopes == nil) != (w.AllowedScopes == nil) ||
			len(u.AllowedScopes) != len(w.AllowedScopes) || !u.CreatedAt.Equal(w.CreatedAt) ||
			!u.UpdatedAt.Equal(w.UpdatedAt) || !u.PasswordChangedAt.Equal(w.PasswordChangedAt) {
			t.Errorf("user %d: read %+v, wrote %+v", i, u, w)
		}
	}
	for k, v := range in.Secrets {
		if !bytes.Equal(out.Secrets[k], v) {
			t.Errorf("secret %s: read %q, wrote %q", k, out.Secrets[k], v)
		}
	}
	if !(&KeySet{Keys: out.Keys}).Equal(&KeySet{Keys: in.Keys}) {
		t.Errorf("keys: read %+v, wrote %+v", out.Keys, in.Keys)
	}
	if n := strings.Count(written, `"retired_at"`); n != 1 {
		t.Errorf("%d retired_at fields, want 1 (a key never retired has none)", n)
	}
	if len(out.Sessions) != len(in.Sessions) {
		t.Fatalf("read %d sessions, wrote %d", len(out.Sessions), len(in.Sessions))
	}
	for i, x := range out.Sessions {
		if w := in.Sessions[i]; !sameSessionFields(x, w) {
			t.Errorf("session %d: read %+v, wrote %+v", i, x, w)
		}
	}
}

func sameSessionFields(a, b *Session) bool {
	return a.ID == b.ID && a.UserID == b.UserID && (a.Scopes == nil) == (b.Scopes == nil) && slices.Equal(a.Scopes, b.Scopes) &&
		a.Generation == b.Generation && a.RotatedAt.Equal(b.RotatedAt) && a.CreatedAt.Equal(b.CreatedAt) &&
		a.LastUsedAt.Equal(b.LastUsedAt) && a.ExpiresAt.Equal(b.ExpiresAt) && a.UserAgent == b.UserAgent && a.Address == b.Address
}

// TestReadExportVersion1: a file written before sessions (no session lines,
// no "sessions" count) is still read.
func TestReadExportVersion1(t *testing.T) {
	const v1 = exportHeaderLine +
		`{"kind":"user","id":"u1","username":"a","password_hash":"h","disabled":false,"allowed_scopes":null,"token_version":3,"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z","password_changed_at":"2026-01-02T03:04:05Z"}` + "\n" +
		`{"kind":"secret","name":"hs256","value":"AAE="}` + "\n" +
		`{"kind":"end","users":1,"secrets":1}` + "\n"
	d, err := ReadExport(strings.NewReader(v1))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Users) != 1 || d.Users[0].TokenVersion != 3 || len(d.Sessions) != 0 || !bytes.Equal(d.Secrets["hs256"], []byte{0, 1}) {
		t.Errorf("version 1 file read as %+v", d)
	}
}

// TestReadExportVersion2: a file written before keys (no key lines, no
// "keys" count) is still read, its sessions included.
func TestReadExportVersion2(t *testing.T) {
	const v2 = `{"format":"crudauth-export","version":2,"created_at":"2026-01-02T03:04:05Z"}` + "\n" +
		`{"kind":"user","id":"u1","username":"a","password_hash":"h","disabled":false,"allowed_scopes":null,"token_version":3,"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z","password_changed_at":"2026-01-02T03:04:05Z"}` + "\n" +
		`{"kind":"session","id":"s1","user_id":"u1","scopes":null,"generation":2,"rotated_at":"2026-01-02T03:04:05Z","created_at":"2026-01-02T03:04:05Z","last_used_at":"2026-01-02T03:04:05Z","expires_at":"2026-03-01T00:00:00Z","user_agent":"","address":""}` + "\n" +
		`{"kind":"secret","name":"hs256","value":"AAE="}` + "\n" +
		`{"kind":"end","users":1,"sessions":1,"secrets":1}` + "\n"
	d, err := ReadExport(strings.NewReader(v2))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Users) != 1 || len(d.Sessions) != 1 || d.Sessions[0].Generation != 2 || len(d.Secrets) != 1 || len(d.Keys) != 0 {
		t.Errorf("version 2 file read as %+v", d)
	}
}

// FuzzReadExport: the parser never panics, and whatever it accepts writes
// back to a file it reads as the same dump.
func FuzzReadExport(f *testing.F) {
	var buf bytes.Buffer
	_ = WriteExport(&buf, &Dump{
		Users:    []*User{{ID: "u1", Username: "a", AllowedScopes: []string{"x"}}, {ID: "u2", Username: "B", AllowedScopes: []string{}}},
		Sessions: []*Session{{ID: "s1", UserID: "u2", Scopes: []string{}, Generation: 2, ExpiresAt: time.Unix(1e9, 5)}},
		Secrets:  map[string][]byte{"hs256": []byte("k")},
		Keys: []SigningKey{{ID: "k1", Alg: AlgEdDSA, Private: []byte{1}, CreatedAt: time.Unix(1e9, 0), SignFrom: time.Unix(1e9, 7),
			RetiredAt: time.Unix(2e9, 0)}},
	})
	f.Add(buf.Bytes())
	f.Add([]byte(exportHeaderLine + `{"kind":"end","users":0,"secrets":0}`))
	f.Add([]byte(exportHeaderLine + `{"kind":"secret","name":"k","value":"AA=="}` + "\n" + `{"kind":"end","users":0,"secrets":1}`))
	f.Add([]byte(`{"format":"crudauth-export","version":3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ReadExport(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteExport(&out, d); err != nil {
			t.Fatalf("WriteExport of an accepted dump: %v", err)
		}
		d2, err := ReadExport(&out)
		if err != nil {
			t.Fatalf("ReadExport of WriteExport's output: %v\n%s", err, out.Bytes())
		}
		if len(d2.Sessions) != len(d.Sessions) {
			t.Fatalf("round trip changed the session count: %d/%d", len(d.Sessions), len(d2.Sessions))
		}
		for i, x := range d.Sessions {
			if !sameSessionFields(x, d2.Sessions[i]) {
				t.Fatalf("session %d: %+v became %+v", i, x, d2.Sessions[i])
			}
		}
		if len(d2.Users) != len(d.Users) || len(d2.Secrets) != len(d.Secrets) {
			t.Fatalf("round trip changed the counts: %d/%d users, %d/%d secrets", len(d.Users), len(d2.Users), len(d.Secrets), len(d2.Secrets))
		}
		for i, u := range d.Users {
			v := d2.Users[i]
			if u.ID != v.ID || u.Username != v.Username || u.PasswordHash != v.PasswordHash || u.TokenVersion != v.TokenVersion ||
				u.Disabled != v.Disabled || (u.AllowedScopes == nil) != (v.AllowedScopes == nil) || !u.CreatedAt.Equal(v.CreatedAt) {
				t.Fatalf("user %d: %+v became %+v", i, u, v)
			}
		}
		for k, v := range d.Secrets {
			if !bytes.Equal(d2.Secrets[k], v) {
				t.Fatalf("secret %q: %q became %q", k, v, d2.Secrets[k])
			}
		}
		if !(&KeySet{Keys: d.Keys}).Equal(&KeySet{Keys: d2.Keys}) {
			t.Fatalf("keys %+v became %+v", d.Keys, d2.Keys)
		}
	})
}
