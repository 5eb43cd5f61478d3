package main

import (
	"embed"
	"os"
	"path/filepath"
)

// The wrk scripts travel inside the binary, so that the program needs no
// directory of its own besides the work directory it is given.
//
//go:embed wrk/*.lua
var luaFS embed.FS

// writeLuaScripts writes the wrk scripts into dir/wrk and returns that
// directory.
func writeLuaScripts(dir string) (string, error) {
	out := filepath.Join(dir, "wrk")
	if err := os.MkdirAll(out, 0o700); err != nil {
		return "", err
	}
	entries, err := luaFS.ReadDir("wrk")
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		b, err := luaFS.ReadFile("wrk/" + e.Name())
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(out, e.Name()), b, 0o600); err != nil {
			return "", err
		}
	}
	return out, nil
}
