package caddymodule

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// The Caddyfile syntax and its defaults are documented once, in the
// "Caddyfile reference" section of README.md. The test below keeps that
// reference and the parser in step: the names the parser accepts are the
// keys of its tables of subdirectives (which are what it dispatches on),
// the documented names the rows of the reference's tables, and each side
// must list exactly the other's names.

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
	handlerAccepted := acceptedNames(t, new(Handler).subdirectives(httpcaddyfile.Helper{}))
	throttleAccepted := acceptedNames(t, new(ThrottleConfig).subdirectives())
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

// acceptedNames returns the names a parser's table of subdirectives
// takes, sorted.
func acceptedNames(t *testing.T, subs subdirectives) []string {
	t.Helper()
	if len(subs) == 0 {
		t.Fatal("the parser takes no subdirectives")
	}
	return slices.Sorted(maps.Keys(subs))
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
