package main

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoCaddymoduleImport keeps the benchmark program apart from the code
// it measures: it drives the gateway from outside, through Caddyfiles it
// writes itself, so it must not reach into caddymodule (for its defaults or
// anything else).
func TestNoCaddymoduleImport(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasSuffix(path, "/caddymodule") || strings.Contains(path, "/caddymodule/") {
				t.Errorf("%s imports %s", f, path)
			}
		}
	}
}
