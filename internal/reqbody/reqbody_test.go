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
		{`{"refresh_token":"\ud800"}`, "\ufffd", nil}, // encoding/json replaces lone surrogates
	} {
		tok, err := ParseRefreshJSON([]byte(tc.body))
		if !errors.Is(err, tc.want) || tok != tc.tok {
			t.Errorf("ParseRefreshJSON(%q) = %q, %v; want %q, %v", tc.body, tok, err, tc.tok, tc.want)
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
