package explain

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// TestFind: crudauth handlers at any depth, numbered in a stable order,
// with where they are and the hosts of the routes that lead to them.
func TestFind(t *testing.T) {
	cfg := `{"apps": {"http": {"servers": {
		"srv1": {"routes": [{"handle": [{"handler": "crudauth", "realm": "b"}]}]},
		"srv0": {"routes": [{"match": [{"host": ["a.example"]}, {"host": ["b.example"]}], "handle": [
			{"handler": "subroute", "routes": [
				{"match": [{"host": ["a.example"]}], "handle": [{"handler": "crudauth", "token_path": "/t"}]},
				{"match": [{"path": ["/x"]}], "handle": [{"handler": "crudauth"}]}
			]}
		]}]}
	}}}}`
	found, err := Find([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		Handler
		raw   string
		hosts [][]string
	}{
		{Handler{Number: 1, Server: "srv0", Hosts: []string{"a.example", "b.example", "a.example"},
			Location: "apps.http.servers.srv0.routes[0].handle[0].routes[0].handle[0]"},
			`{"token_path":"/t"}`, [][]string{{"a.example", "b.example"}, {"a.example"}}},
		{Handler{Number: 2, Server: "srv0", Hosts: []string{"a.example", "b.example"},
			Location: "apps.http.servers.srv0.routes[0].handle[0].routes[1].handle[0]"},
			`{}`, [][]string{{"a.example", "b.example"}}},
		{Handler{Number: 3, Server: "srv1", Location: "apps.http.servers.srv1.routes[0].handle[0]"},
			`{"realm":"b"}`, nil},
	}
	if len(found) != len(want) {
		t.Fatalf("found %d handlers: %+v", len(found), found)
	}
	for i, w := range want {
		f := found[i]
		if !reflect.DeepEqual(f.Handler, w.Handler) || string(f.Raw) != w.raw || !reflect.DeepEqual(f.HostLevels, w.hosts) {
			t.Errorf("handler %d: %+v %s %q; want %+v %s %q", i+1, f.Handler, f.Raw, f.HostLevels, w.Handler, w.raw, w.hosts)
		}
	}
	if _, err := Find([]byte(`{"apps":`)); err == nil {
		t.Error("a truncated config was read")
	}
}

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		method, target string
		headers        []string
		want           string // "" = parsed
	}{
		{"GET", "/a%2Fb?x=1", nil, ""},
		{"POST", "/r", []string{"Content-Type: application/x-www-form-urlencoded"}, ""},
		{"GET", "/\r\nX: y", nil, "line break"},
		{"GET", "/", []string{"Content-Type"}, `want "Name: value"`},
		{"GET", "/", []string{"Host: x"}, "--host"},
		{"GET", "no-slash", nil, "parsing the request"},
	} {
		r, err := ParseRequest(tc.method, tc.target, "localhost", tc.headers)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %q: %v", tc.method, tc.target, err)
		case tc.want == "" && (r.Method != tc.method || r.RequestURI != tc.target || r.Host != "localhost"):
			t.Errorf("%s %q: parsed %s %q host %q", tc.method, tc.target, r.Method, r.RequestURI, r.Host)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s %q %q: %v, want an error containing %q", tc.method, tc.target, tc.headers, err, tc.want)
		}
	}
}

func TestPrint(t *testing.T) {
	o := Output{Method: "GET", Target: "/admin", Host: "localhost", Handlers: []Explanation{
		{Handler: Handler{Number: 1, Server: "srv0", Hosts: []string{"localhost"}},
			Readings: []Reading{{Method: "GET", Path: "/admin", Rule: 0, Text: "rules[0]: require /admin admin"},
				{Method: "GET", Path: "/a b", Rule: -1, Text: "no rule (any valid token)"}},
			Decision: "scopes", Needs: []string{"admin"},
			ForToken: &ScopeVerdict{Scopes: "me:read x", Status: 403, Missing: []string{"admin"}, Ignored: []string{"x"}}},
		{Handler: Handler{Number: 2}, Readings: []Reading{}, Decision: "refused", Status: 400, Reason: "bad path"},
	}}
	var b bytes.Buffer
	if err := o.Print(&b); err != nil {
		t.Fatal(err)
	}
	want := `crudauth handler 1: server srv0, host localhost
  GET /admin  -> rules[0]: require /admin admin
  GET "/a b"  -> no rule (any valid token)
decision: needs a valid token with scopes: admin
decision for scopes "me:read x": denied (403 insufficient_scope: needs admin); x outside grantable_scopes, not counted

crudauth handler 2
decision: refused (400): bad path
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
