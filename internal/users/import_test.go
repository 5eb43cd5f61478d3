package users

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// testHashes returns an argon2id hash (the test hasher's) and a bcrypt
// hash, both of "some-password".
func testHashes(t testing.TB) (argon, bc string) {
	t.Helper()
	argon, err := testHasher().Hash("some-password")
	if err != nil {
		t.Fatal(err)
	}
	b, err := bcrypt.GenerateFromPassword([]byte("some-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return argon, string(b)
}

func TestImportFormat(t *testing.T) {
	for _, tc := range []struct {
		flag, name string
		want       Format
		wantErr    string
	}{
		{"", "users.csv", FormatCSV, ""},
		{"", "USERS.CSV", FormatCSV, ""},
		{"", "users.json", FormatJSON, ""},
		{"", "users.htpasswd", FormatHtpasswd, ""},
		{"", "users", FormatHtpasswd, ""},
		{"", "users.txt", FormatHtpasswd, ""},
		{"csv", "users.json", FormatCSV, ""},
		{"json", "users", FormatJSON, ""},
		{"htpasswd", "users.csv", FormatHtpasswd, ""},
		{"yaml", "users.csv", "", `--format "yaml": use csv, json or htpasswd`},
		{"CSV", "users.csv", "", `--format "CSV"`},
	} {
		got, err := ImportFormat(tc.flag, tc.name)
		if tc.wantErr != "" {
			wantErr(t, err, Invalid, tc.wantErr)
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ImportFormat(%q, %q) = %q, %v; want %q", tc.flag, tc.name, got, err, tc.want)
		}
	}
}

func TestParseImport(t *testing.T) {
	argon, bc := testHashes(t)
	for name, tc := range map[string]struct {
		data   string
		format Format
		want   []Record
	}{
		"csv": {
			data: "username,password_hash,allowed_scopes,disabled\n" +
				"# a comment\n" +
				"alice," + argon + ",me:read reports:read,false\n" +
				"\n" +
				`bob,"` + argon + `",-,true` + "\n" +
				"carol," + bc + "\n",
			format: FormatCSV,
			want: []Record{
				{Line: 3, Username: "alice", PasswordHash: argon, AllowedScopes: []string{"me:read", "reports:read"}},
				{Line: 5, Username: "bob", PasswordHash: argon, AllowedScopes: []string{}, Disabled: true},
				{Line: 6, Username: "carol", PasswordHash: bc},
			},
		},
		"csv without header, crlf, spaces": {
			data:   "dave , " + bc + " ,  , TRUE\r\nerin," + argon + "\r\n",
			format: FormatCSV,
			want: []Record{
				{Line: 1, Username: "dave ", PasswordHash: bc, Disabled: true},
				{Line: 2, Username: "erin", PasswordHash: argon},
			},
		},
		"csv unquoted argon2id with scopes": {
			data:   "frank," + argon + ",a b\n",
			format: FormatCSV,
			want:   []Record{{Line: 1, Username: "frank", PasswordHash: argon, AllowedScopes: []string{"a", "b"}}},
		},
		"json": {
			data:   fmt.Sprintf("[\n  {\"username\": \"dave\", \"password_hash\": %q},\n\n  {\"username\": \"erin\",\n   \"password_hash\": %q, \"allowed_scopes\": [\"a\"], \"disabled\": true}\n]", argon, bc),
			format: FormatJSON,
			want: []Record{
				{Line: 2, Username: "dave", PasswordHash: argon},
				{Line: 4, Username: "erin", PasswordHash: bc, AllowedScopes: []string{"a"}, Disabled: true},
			},
		},
		"json empty scopes": {
			data:   `[{"username": "x", "password_hash": "h", "allowed_scopes": []}]`,
			format: FormatJSON,
			want:   []Record{{Line: 1, Username: "x", PasswordHash: "h", AllowedScopes: []string{}}},
		},
		"json empty array": {data: " [ ] ", format: FormatJSON},
		"htpasswd": {
			data:   "frank:" + bc + "\n\n# x\ngina:" + argon + "\r\n",
			format: FormatHtpasswd,
			want: []Record{
				{Line: 1, Username: "frank", PasswordHash: bc},
				{Line: 4, Username: "gina", PasswordHash: argon},
			},
		},
		"unknown format reads as htpasswd": {
			data: "a:b:c\n", format: "yaml",
			want: []Record{{Line: 1, Username: "a", PasswordHash: "b:c"}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseImport([]byte(tc.data), tc.format)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := jsonOf(t, got), jsonOf(t, tc.want); a != b && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("got  %s\nwant %s", a, b)
			}
			for i := range min(len(got), len(tc.want)) {
				if (got[i].AllowedScopes == nil) != (tc.want[i].AllowedScopes == nil) {
					t.Errorf("record %d: scopes %#v, want %#v", i, got[i].AllowedScopes, tc.want[i].AllowedScopes)
				}
			}
		})
	}
}

// TestParseImportErrors: bad input is Invalid, names its line and says
// that nothing was imported.
func TestParseImportErrors(t *testing.T) {
	_, bc := testHashes(t)
	for name, tc := range map[string]struct {
		data   string
		format Format
		want   string
	}{
		"csv fields":        {"alice\n", FormatCSV, "line 1: want username,password_hash[,allowed_scopes[,disabled]], got 1 fields"},
		"csv too many":      {"a,b,c,true,e\n", FormatCSV, "line 1"},
		"csv disabled":      {"a," + bc + ",,maybe\n", FormatCSV, `line 1: disabled "maybe" is not true or false`},
		"csv bad quote":     {"username,password_hash\n" + `al"ice,$2b$10$x` + "\n", FormatCSV, "line 2"},
		"csv open quote":    {"a,b\n\"c,d\n", FormatCSV, "line "},
		"htpasswd no colon": {"frank:" + bc + "\nnocolon\n", FormatHtpasswd, "line 2: want username:hash"},
		"json not array":    {`{"username": "x"}`, FormatJSON, "line 1: a JSON import file is an array of user objects"},
		"json empty":        {"", FormatJSON, "line 1"},
		"json bad element":  {"[\n{\"username\": \"x\"},\n 3\n]", FormatJSON, "line 3"},
		"json unterminated": {"[\n{\"username\": \"x\"}\n", FormatJSON, "line 3"},
		"json wrong type":   {"[\n\n{\"disabled\": \"yes\"}]", FormatJSON, "line 3"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseImport([]byte(tc.data), tc.format)
			wantErr(t, err, Invalid, tc.want, "; nothing imported")
		})
	}
}

func TestValidateImport(t *testing.T) {
	argon, bc := testHashes(t)
	for name, tc := range map[string]struct {
		recs []Record
		want string
	}{
		"plaintext":   {[]Record{{Line: 1, Username: "a", PasswordHash: bc}, {Line: 7, Username: "b", PasswordHash: "secret"}}, `line 7: user "b": the password hash is not argon2id`},
		"duplicate":   {[]Record{{Line: 1, Username: "a", PasswordHash: bc}, {Line: 2, Username: "A", PasswordHash: bc}}, `line 2: username "A" repeats line 1`},
		"bad scope":   {[]Record{{Line: 3, Username: "a", PasswordHash: bc, AllowedScopes: []string{"a b"}}}, `line 3: user "a": allowed_scopes: `},
		"no username": {[]Record{{Line: 4, PasswordHash: bc}}, "line 4: username is empty"},
		"control":     {[]Record{{Line: 6, Username: "a\nb", PasswordHash: bc}}, "line 6: invalid username"},
		"huge cost":   {[]Record{{Line: 5, Username: "a", PasswordHash: "$2a$31$" + strings.Repeat("a", 53)}}, "line 5"},
		// A hash with a higher cost than the hasher accepts would stall
		// every login of that user.
		"argon2 too costly": {[]Record{{Line: 8, Username: "a", PasswordHash: strings.Replace(argon, "m=19456", "m=4194304", 1)}}, "line 8"},
		"empty":             {nil, "no users in the import"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := validateImport(tc.recs, testHasher())
			wantErr(t, err, Invalid, tc.want, "; nothing imported")
			if strings.Contains(fmt.Sprint(err), "secret") {
				t.Errorf("the error repeats the hash field: %v", err)
			}
		})
	}
	us, err := validateImport([]Record{
		{Line: 1, Username: "a", PasswordHash: argon, AllowedScopes: []string{"y", "x", "x"}},
		{Line: 2, Username: "b", PasswordHash: bc, AllowedScopes: []string{}, Disabled: true},
		{Line: 3, Username: "c", PasswordHash: bc},
	}, testHasher())
	if err != nil || len(us) != 3 {
		t.Fatalf("valid records: %v", err)
	}
	if strings.Join(us[0].AllowedScopes, " ") != "x y" || us[1].AllowedScopes == nil || len(us[1].AllowedScopes) != 0 || !us[1].Disabled || us[2].AllowedScopes != nil {
		t.Errorf("users %+v %+v %+v", us[0], us[1], us[2])
	}
}

// hidingStore says no user exists, so that the import's own check passes
// and CreateUsers meets the taken name, as it would when the name is taken
// between the check and the write.
type hidingStore struct{ store.Store }

func (hidingStore) GetUserByName(context.Context, string) (*store.User, error) {
	return nil, store.ErrNotFound
}

// failingCreate fails CreateUsers with a store error.
type failingCreate struct{ store.Store }

func (failingCreate) CreateUsers(context.Context, []*store.User) error { return errBoom }

func TestImport(t *testing.T) {
	argon, bc := testHashes(t)
	ctx := context.Background()
	good := []Record{
		{Line: 2, Username: "dave", PasswordHash: argon, AllowedScopes: []string{"me:read"}},
		{Line: 3, Username: "erin", PasswordHash: bc, Disabled: true},
	}
	for name, tc := range map[string]struct {
		existing []string
		wrap     func(store.Store) store.Store
		recs     []Record
		wantKind Kind
		wantMsg  string
		wantIs   error
	}{
		"good": {recs: good},
		"one taken": {
			existing: []string{"Erin"}, recs: good, wantKind: Exists,
			wantMsg: `line 3: user "erin" already exists; nothing imported`, wantIs: store.ErrExists,
		},
		"taken meanwhile": {
			existing: []string{"erin"}, wrap: func(s store.Store) store.Store { return hidingStore{s} }, recs: good,
			wantKind: Exists, wantMsg: "; nothing imported", wantIs: store.ErrExists,
		},
		"store fails": {
			wrap: func(s store.Store) store.Store { return failingCreate{s} }, recs: good,
			wantKind: Internal, wantMsg: "import: disk on fire; nothing imported", wantIs: errBoom,
		},
		"plaintext": {
			recs:     append(append([]Record{}, good...), Record{Line: 9, Username: "frank", PasswordHash: "plaintext-password"}),
			wantKind: Invalid, wantMsg: "line 9",
		},
	} {
		t.Run(name, func(t *testing.T) {
			st := newTestStore(t)
			for _, n := range tc.existing {
				if err := st.CreateUser(ctx, &store.User{Username: n, PasswordHash: bc}); err != nil {
					t.Fatal(err)
				}
			}
			var svcStore store.Store = st
			if tc.wrap != nil {
				svcStore = tc.wrap(st)
			}
			svc := New(svcStore, Settings{Hasher: testHasher()})
			n, err := svc.Import(ctx, tc.recs)
			if tc.wantMsg != "" {
				wantErr(t, err, tc.wantKind, tc.wantMsg)
				if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
					t.Errorf("errors.Is(%v, %v) is false", err, tc.wantIs)
				}
				if n != 0 || countUsers(t, st) != len(tc.existing) {
					t.Errorf("a failed import stored users: n=%d, %d in the store", n, countUsers(t, st))
				}
				return
			}
			if err != nil || n != 2 {
				t.Fatalf("import: %d %v", n, err)
			}
			dave, erin := readUser(t, st, "dave"), readUser(t, st, "erin")
			if dave.PasswordHash != argon || strings.Join(dave.AllowedScopes, " ") != "me:read" || dave.Disabled {
				t.Errorf("dave %+v", dave)
			}
			if erin.PasswordHash != bc || erin.AllowedScopes != nil || !erin.Disabled {
				t.Errorf("erin %+v", erin)
			}
			// An imported bcrypt hash verifies and asks to be rehashed.
			if ok, rehash, _ := testHasher().Verify(erin.PasswordHash, "some-password"); !ok || !rehash {
				t.Errorf("imported bcrypt: ok=%v rehash=%v", ok, rehash)
			}
		})
	}
}

// checkParsed holds for any input of any parser: no panic; an error is an
// Invalid *Error that says nothing was imported; records carry line numbers
// within the input, in order.
func checkParsed(t *testing.T, data []byte, f Format) []Record {
	recs, err := ParseImport(data, f)
	if err != nil {
		if recs != nil {
			t.Fatalf("records with an error: %v", err)
		}
		if KindOf(err) != Invalid || !strings.HasSuffix(err.Error(), "; nothing imported") {
			t.Fatalf("error %q (kind %s)", err, KindOf(err))
		}
		return nil
	}
	lines := strings.Count(string(data), "\n") + 1
	prev := 0
	for _, r := range recs {
		if r.Line < 1 || r.Line > lines || r.Line < prev {
			t.Fatalf("line %d after %d in a %d-line input", r.Line, prev, lines)
		}
		prev = r.Line
	}
	return recs
}

func fuzzSeeds(f *testing.F, seeds ...string) {
	argon, bc := testHashes(f)
	for _, s := range seeds {
		f.Add([]byte(strings.NewReplacer("ARGON", argon, "BCRYPT", bc).Replace(s)))
	}
}

// FuzzParseHtpasswd: besides checkParsed, each record is its line: the
// username before the first colon, the hash after it.
func FuzzParseHtpasswd(f *testing.F) {
	fuzzSeeds(f, "", "frank:BCRYPT\n\n# x\ngina:ARGON\r\n", "nocolon", "a:b:c\n:\n", "\r\n\r\n#\n", "x:\xff\x00")
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := strings.Split(string(data), "\n")
		for _, r := range checkParsed(t, data, FormatHtpasswd) {
			if want := strings.TrimRight(lines[r.Line-1], "\r"); r.Username+":"+r.PasswordHash != want || strings.Contains(r.Username, ":") {
				t.Fatalf("record %+v from line %q", r, want)
			}
		}
	})
}

// FuzzParseCSV: besides checkParsed, a record's scopes are nil, empty or
// space-free tokens.
func FuzzParseCSV(f *testing.F) {
	fuzzSeeds(f, "",
		"username,password_hash,allowed_scopes,disabled\n# c\nalice,ARGON,me:read reports:read,false\n\nbob,\"ARGON\",-,true\ncarol,BCRYPT\n",
		"alice\n", "a,BCRYPT,,maybe\n", "username,password_hash\nal\"ice,$2b$10$x\n", "a,b\n\"c,d\n",
		"a,$argon2id$v=19$m=1,t=1,p=1$x$y,z,true,extra\n", "\"\"\"\n,,,\n\r\r\n")
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, r := range checkParsed(t, data, FormatCSV) {
			for _, s := range r.AllowedScopes {
				if s == "" || strings.ContainsAny(s, " \t\r\n") {
					t.Fatalf("scope %q in %+v", s, r)
				}
			}
		}
	})
}

// FuzzParseJSON: besides checkParsed, an accepted file holds a JSON array.
func FuzzParseJSON(f *testing.F) {
	fuzzSeeds(f, "", "[]", "[\n  {\"username\": \"dave\", \"password_hash\": \"ARGON\"},\n\n  {\"username\": \"erin\",\n \"password_hash\": \"BCRYPT\", \"allowed_scopes\": [\"a\"]}\n]",
		`{"username": "x"}`, "[\n{\"username\": \"x\"},\n 3\n]", "[{\"disabled\": \"yes\"}]", "[{}]x", "[null,{\"username\":null}]", "[\n\n")
	f.Fuzz(func(t *testing.T, data []byte) {
		if checkParsed(t, data, FormatJSON) != nil && !strings.HasPrefix(strings.TrimLeft(string(data), " \t\r\n"), "[") {
			t.Fatalf("accepted a file that is not an array: %q", data)
		}
	})
}
