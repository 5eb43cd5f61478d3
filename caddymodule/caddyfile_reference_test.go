package caddymodule

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The Caddyfile syntax and its defaults are documented once, in the
// "Caddyfile reference" section of README.md. The test below keeps that
// reference and the parser in step: the names the parser accepts are read
// from its source (the string literals of the case clauses of its switch),
// the documented names from the reference's tables, and each side must
// list exactly the other's names.

const (
	readmePath        = "../README.md"
	referenceHeading  = "## Caddyfile reference"
	subdirectivesHead = "### Subdirectives"
	throttleHead      = "### throttle"
	// plannedMarker in a row's first cell marks a subdirective that is
	// documented ahead of the code; the parser must not accept it yet, and
	// once it does the marker must go.
	plannedMarker = "(planned)"
)

func TestCaddyfileReference(t *testing.T) {
	handlerAccepted := acceptedNames(t, "caddyfile.go", "unmarshal")
	throttleAccepted := acceptedNames(t, "throttle.go", "parseThrottle")
	documented := documentedNames(t)

	compareReference(t, "crudauth subdirective", subdirectivesHead, handlerAccepted, documented[subdirectivesHead])
	compareReference(t, "throttle option", throttleHead, throttleAccepted, documented[throttleHead])
}

// documentedRow is one row of a reference table.
type documentedRow struct {
	line    int
	planned bool
}

func compareReference(t *testing.T, what, table string, accepted []string, documented map[string]documentedRow) {
	t.Helper()
	for _, name := range accepted {
		row, ok := documented[name]
		switch {
		case !ok:
			t.Errorf("%s %q is accepted by the parser but missing from the %q table of README.md's Caddyfile reference: add a row \"| `%s ...` | <default> | <meaning> |\"",
				what, name, table, name)
		case row.planned:
			t.Errorf("%s %q is accepted by the parser but README.md line %d still marks it %s: remove the marker",
				what, name, row.line, plannedMarker)
		}
	}
	for name, row := range documented {
		if !row.planned && !slices.Contains(accepted, name) {
			t.Errorf("README.md line %d documents %s %q in the %q table, but the parser does not accept it: remove the row, or mark it %s if it is coming",
				row.line, what, name, table, plannedMarker)
		}
	}
}

// acceptedNames returns the string literals of the case clauses of the
// outermost switch with a tag (switch sub { ... }) in method fn of file: the names the
// Caddyfile parser accepts. Nested switches (which dispatch among names
// already accepted) are not read.
func acceptedNames(t *testing.T, file, fn string) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, nil, 0)
	if err != nil {
		t.Fatalf("parsing %s: %v", file, err)
	}
	var body *ast.BlockStmt
	for _, decl := range f.Decls {
		if d, ok := decl.(*ast.FuncDecl); ok && d.Name.Name == fn && isHandlerMethod(d) {
			body = d.Body
		}
	}
	if body == nil {
		t.Fatalf("%s: no method (*Handler).%s or (*RealmSettings).%s, where the parser's switch is expected; update this test if the parser moved", file, fn, fn)
	}
	var switches []*ast.SwitchStmt
	ast.Inspect(body, func(n ast.Node) bool {
		if _, ok := n.(*ast.FuncLit); ok {
			return false
		}
		sw, ok := n.(*ast.SwitchStmt)
		if !ok {
			return true
		}
		if sw.Tag == nil { // switch { case cond: }, not over names
			return true
		}
		switches = append(switches, sw)
		return false // do not read nested switches
	})
	if len(switches) != 1 {
		t.Fatalf("%s: (*Handler).%s has %d outermost switches with a tag, want exactly 1 (the switch over subdirective names); update this test if the parser changed shape",
			file, fn, len(switches))
	}
	var names []string
	for _, stmt := range switches[0].Body.List {
		for _, expr := range stmt.(*ast.CaseClause).List {
			lit, ok := expr.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Fatalf("%s: a case of (*Handler).%s's switch at %s is not a string literal; this test reads the accepted names from literals",
					file, fn, fset.Position(expr.Pos()))
			}
			name, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatalf("%s: %v", fset.Position(lit.Pos()), err)
			}
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s: the switch of (*Handler).%s has no string cases", file, fn)
	}
	return names
}

func isHandlerMethod(d *ast.FuncDecl) bool {
	if d.Recv == nil || len(d.Recv.List) != 1 {
		return false
	}
	star, ok := d.Recv.List[0].Type.(*ast.StarExpr)
	if !ok {
		return false
	}
	id, ok := star.X.(*ast.Ident)
	return ok && (id.Name == "Handler" || id.Name == "RealmSettings")
}

// referenceRow matches a table row whose first cell starts with a name in
// backquotes, such as "| `db <path>` | ..." or "| `store` (planned) | ...".
var referenceRow = regexp.MustCompile("^\\|\\s*`([a-z][a-z0-9_]*)[\\s`]")

// documentedNames returns, for each table of README.md's Caddyfile
// reference (keyed by its "### " heading), the names of its rows.
func documentedNames(t *testing.T) map[string]map[string]documentedRow {
	t.Helper()
	src, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatalf("reading the reference: %v", err)
	}
	tables := map[string]map[string]documentedRow{}
	inReference, heading := false, ""
	for i, line := range strings.Split(string(src), "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			inReference = strings.TrimSpace(line) == referenceHeading
			heading = ""
			continue
		case !inReference:
			continue
		case strings.HasPrefix(line, "### "):
			heading = strings.TrimSpace(line)
			continue
		}
		m := referenceRow.FindStringSubmatch(line)
		if m == nil || heading == "" {
			continue
		}
		if tables[heading] == nil {
			tables[heading] = map[string]documentedRow{}
		}
		firstCell, _, _ := strings.Cut(strings.TrimPrefix(line, "|"), "|")
		name := m[1]
		if prev, dup := tables[heading][name]; dup {
			t.Errorf("README.md lines %d and %d both document %q in %q", prev.line, i+1, name, heading)
		}
		tables[heading][name] = documentedRow{line: i + 1, planned: strings.Contains(firstCell, plannedMarker)}
	}
	for _, h := range []string{subdirectivesHead, throttleHead} {
		if len(tables[h]) == 0 {
			t.Fatalf("README.md: no table rows (\"| `name ...` | ...\") under %q in the %q section", h, referenceHeading)
		}
	}
	return tables
}
