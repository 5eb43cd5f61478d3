package reqbody

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseForm(t *testing.T) {
	for _, tc := range []struct {
		body string
		want error
	}{
		{"grant_type=password&username=a&password=b", nil},
		{"", nil},
		{"username=a&username=b", ErrRepeated},
		{"username=a&USERNAME=b", nil}, // form names are case-sensitive
		{"username=%zz", ErrBadForm},
		{"username=a;password=b", ErrBadForm},
		{"username=\xff", ErrNotUTF8},
		{"username=%ff", ErrNotUTF8},
		{"%ff=x", ErrNotUTF8},
	} {
		_, err := ParseForm([]byte(tc.body))
		if !errors.Is(err, tc.want) {
			t.Errorf("ParseForm(%q) = %v, want %v", tc.body, err, tc.want)
		}
	}
}

func TestParseRefreshJSON(t *testing.T) {
	for _, tc := range []struct {
		body, tok string
		want      error
	}{
		{`{"refresh_token":"abc"}`, "abc", nil},
		{` { "other": [1, {"x": null}], "refresh_token" : "abc" } `, "abc", nil},
		{`{}`, "", nil},
		{`{"refresh_token":null}`, "", nil},
		{`{"refresh_token":"a","refresh_token":"b"}`, "", ErrDuplicateKey},
		{`{"refresh_token":"a","REFRESH_TOKEN":"b"}`, "", ErrDuplicateKey},
		{`{"refresh_token":["a"]}`, "", ErrNotJSON},
		{`{"refresh_token":1}`, "", ErrNotJSON},
		{`{"refresh_token":"a"} {}`, "", ErrNotJSON},
		{`{"refresh_token":"a"}x`, "", ErrNotJSON},
		{`["a"]`, "", ErrNotJSON},
		{`"a"`, "", ErrNotJSON},
		{``, "", ErrNotJSON},
		{`{"refresh_token":"a"`, "", ErrNotJSON},
		// encoding/json would replace these with U+FFFD: refused instead.
		{`{"refresh_token":"\ud800"}`, "", ErrNotJSON},
		{"{\"refresh_token\":\"a\xffb\"}", "", ErrNotJSON},
		{"{\"x\":\"\xff\",\"refresh_token\":\"a\"}", "", ErrNotJSON},
	} {
		tok, err := ParseRefreshJSON([]byte(tc.body))
		if !errors.Is(err, tc.want) || tok != tc.tok {
			t.Errorf("ParseRefreshJSON(%q) = %q, %v; want %q, %v", tc.body, tok, err, tc.tok, tc.want)
		}
	}
}

func TestParseJSONStrings(t *testing.T) {
	names := []string{"current_password", "new_password"}
	for _, tc := range []struct {
		body     string
		cur, new string
		want     error
	}{
		{`{"current_password":"a","new_password":"b"}`, "a", "b", nil},
		{`{"new_password":"b","current_password":"a","other":{"current_password":1}}`, "a", "b", nil},
		{`{"Current_Password":"a"}`, "a", "", nil}, // one member, matched as encoding/json would
		{`{"current_password":null}`, "", "", nil},
		{`{}`, "", "", nil},
		{`{"current_password":"a\u00e9\ud83d\ude00"}`, "a\u00e9\U0001f600", "", nil},
		{`{"current_password":"\ufffd"}`, "\ufffd", "", nil}, // written as such, kept
		// The same member twice: exactly, and in another letter case.
		{`{"current_password":"wrong","current_password":"right","new_password":"b"}`, "", "", ErrRepeatedMember},
		{`{"current_password":"wrong","CURRENT_PASSWORD":"right","new_password":"b"}`, "", "", ErrRepeatedMember},
		{`{"current_password":"a","new_password":"b","NEW_password":"c"}`, "", "", ErrRepeatedMember},
		{`{"current_password":"a","current_password":null}`, "", "", ErrRepeatedMember},
		{`{"current_password":"a","curreNt_pasſword":"b"}`, "", "", ErrRepeatedMember}, // long s folds to s
		// Not one object of strings.
		{`{"current_password":1}`, "", "", ErrNotObject},
		{`{"current_password":["a"]}`, "", "", ErrNotObject},
		{`{"current_password":"a"} {}`, "", "", ErrNotObject},
		{`{"current_password":"a"}x`, "", "", ErrNotObject},
		{`{"current_password":"a"`, "", "", ErrNotObject},
		{`["a"]`, "", "", ErrNotObject},
		{``, "", "", ErrNotObject},
		// What encoding/json would rewrite to U+FFFD.
		{"{\"current_password\":\"a\xffb\"}", "", "", ErrNotUTF8},
		{"{\"other\":\"\xff\",\"current_password\":\"a\"}", "", "", ErrNotUTF8},
		{`{"current_password":"\ud800"}`, "", "", ErrNotObject},
		{`{"current_password":"\udc00\ud800"}`, "", "", ErrNotObject},
		{`{"current_password":"\ud800\u0041"}`, "", "", ErrNotObject},
		{`{"current_password":"\ud800x"}`, "", "", ErrNotObject},
		{`{"current_password":"a\\ud800"}`, "a\\ud800", "", nil}, // an escaped backslash, not an escape
	} {
		vals, err := ParseJSONStrings([]byte(tc.body), names...)
		var cur, nw string
		if err == nil {
			cur, nw = vals[0], vals[1]
		}
		if !errors.Is(err, tc.want) || cur != tc.cur || nw != tc.new {
			t.Errorf("ParseJSONStrings(%q) = %q, %q, %v; want %q, %q, %v", tc.body, cur, nw, err, tc.cur, tc.new, tc.want)
		}
		if err != nil && vals != nil {
			t.Errorf("ParseJSONStrings(%q): values returned with an error", tc.body)
		}
	}
}

func FuzzParseForm(f *testing.F) {
	for _, s := range []string{
		"grant_type=password&username=alice&password=pw&scope=read+write",
		"username=a&username=b", "a=%zz", "a=\xff", "a=%ff", "=&=", "a;b", "%", "a=b&&c=d",
		"grant_type=refresh_token&refresh_token=x.y.z",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		form, err := ParseForm(body)
		if err != nil {
			if form != nil {
				t.Fatal("values returned with an error")
			}
			if strings.Contains(err.Error(), "\xff") || !utf8.ValidString(err.Error()) {
				t.Fatal("error text is not valid UTF-8")
			}
			return
		}
		if !utf8.Valid(body) {
			t.Fatal("invalid UTF-8 accepted")
		}
		for k, v := range form {
			if len(v) != 1 {
				t.Fatalf("parameter %q has %d values", k, len(v))
			}
			if !utf8.ValidString(k) || !utf8.ValidString(v[0]) {
				t.Fatal("decoded parameter is not valid UTF-8")
			}
		}
		// The parsed form agrees with the standard library's reading.
		std, err := url.ParseQuery(string(body))
		if err != nil {
			t.Fatalf("accepted a body url.ParseQuery refuses: %v", err)
		}
		for k, v := range std {
			if form.Get(k) != v[0] {
				t.Fatalf("parameter %q: %q, standard library reads %q", k, form.Get(k), v[0])
			}
		}
	})
}

func FuzzParseRefreshJSON(f *testing.F) {
	for _, s := range []string{
		`{"refresh_token":"abc"}`, `{"refresh_token":"a","Refresh_Token":"b"}`, `{"refresh_token":null}`,
		`{"refresh_token":["a"]}`, `{"x":{"refresh_token":"n"},"refresh_token":"abc"}`, `[]`, `{`,
		`{"refresh_token":"\u0000"}`, `{"refresh_token":"a"}   `, `{}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := ParseRefreshJSON(body)
		if err != nil {
			if tok != "" {
				t.Fatal("token returned with an error")
			}
			return
		}
		if !utf8.ValidString(tok) {
			t.Fatal("token is not valid UTF-8")
		}
		// Whatever is accepted is one JSON object that encoding/json reads
		// the same way.
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("accepted a body encoding/json refuses: %v", err)
		}
		var std struct {
			RefreshToken *string `json:"refresh_token"`
		}
		if err := json.Unmarshal(body, &std); err != nil {
			t.Fatalf("encoding/json refuses the accepted body: %v", err)
		}
		want := ""
		if std.RefreshToken != nil {
			want = *std.RefreshToken
		}
		if tok != want {
			t.Fatalf("token %q, encoding/json reads %q", tok, want)
		}
	})
}

func FuzzParseJSONStrings(f *testing.F) {
	for _, s := range []string{
		`{"current_password":"a","new_password":"b"}`, `{"current_password":"a","CURRENT_PASSWORD":"b"}`,
		`{"new_password":null,"x":[1,{"current_password":2}]}`, `{"current_password":"\ud83d\ude00"}`,
		`{"current_password":"\ud800"}`, `{"current_password":"a\\ud800"}`, "{\"x\":\"\xff\"}",
		`{"curreNt_pasſword":"k"}`, `{}{}`, `{`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		vals, err := ParseJSONStrings(body, "current_password", "new_password")
		if err != nil {
			if vals != nil {
				t.Fatal("values returned with an error")
			}
			return
		}
		if len(vals) != 2 {
			t.Fatalf("%d values for 2 names", len(vals))
		}
		if !utf8.Valid(body) {
			t.Fatal("invalid UTF-8 accepted")
		}
		// Whatever is accepted, encoding/json reads the same way.
		var std struct {
			Current *string `json:"current_password"`
			New     *string `json:"new_password"`
		}
		if err := json.Unmarshal(body, &std); err != nil {
			t.Fatalf("encoding/json refuses the accepted body: %v", err)
		}
		for i, p := range []*string{std.Current, std.New} {
			want := ""
			if p != nil {
				want = *p
			}
			if vals[i] != want {
				t.Fatalf("value %d is %q, encoding/json reads %q", i, vals[i], want)
			}
			// A U+FFFD in a value was written by the client, not made by
			// the decoder out of a bad byte or half a surrogate pair.
			if strings.ContainsRune(vals[i], utf8.RuneError) &&
				!strings.Contains(string(body), "\ufffd") && !strings.Contains(strings.ToLower(string(body)), `\ufffd`) {
				t.Fatalf("value %d %q holds U+FFFD the body does not", i, vals[i])
			}
		}
		// No member name matches twice, in any letter case.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("encoding/json refuses the accepted body: %v", err)
		}
		for _, name := range []string{"current_password", "new_password"} {
			n := 0
			for k := range m {
				if strings.EqualFold(k, name) {
					n++
				}
			}
			if n > 1 {
				t.Fatalf("%s given %d times in different letter cases, accepted", name, n)
			}
		}
	})
}

// TestRepeatedNameQuotedBounded: the repeated name is quoted in the error,
// cut to 64 characters, with invalid UTF-8 escaped, so neither a huge name
// nor odd bytes reach a log line as they came.
func TestRepeatedNameQuotedBounded(t *testing.T) {
	name := strings.Repeat("n", 10_000)
	_, err := ParseForm([]byte(name + "=1&" + name + "=2"))
	if !errors.Is(err, ErrRepeated) {
		t.Fatalf("err = %v, want ErrRepeated", err)
	}
	if n := len(err.Error()); n > 200 {
		t.Fatalf("error is %d bytes long", n)
	}
	_, err = ParseForm([]byte("%FF=1&%FF=2"))
	if err == nil || !utf8.ValidString(err.Error()) {
		t.Fatalf("err = %q, want an error in valid UTF-8", err)
	}
}
