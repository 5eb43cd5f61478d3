package caddymodule

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// maxImportBytes caps an import file (and the admin API's import body).
const maxImportBytes = 64 << 20

// importRecord is one user of an import file, with the line it came from.
type importRecord struct {
	Line         int    `json:"line"`
	Username     string `json:"username"`
	PasswordHash string `json:"password_hash"`
	// AllowedScopes: null or absent means no per-user limit.
	AllowedScopes []string `json:"allowed_scopes"`
	Disabled      bool     `json:"disabled,omitempty"`
}

// Import file formats.
const (
	formatCSV      = "csv"
	formatJSON     = "json"
	formatHtpasswd = "htpasswd"
)

// importFormat picks the format from --format or the file name: .csv, .json,
// anything else htpasswd.
func importFormat(flag, name string) (string, error) {
	switch flag {
	case formatCSV, formatJSON, formatHtpasswd:
		return flag, nil
	case "":
	default:
		return "", fmt.Errorf("--format %q: use csv, json or htpasswd", flag)
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return formatCSV, nil
	case ".json":
		return formatJSON, nil
	}
	return formatHtpasswd, nil
}

// parseImport reads the users of an import file. Formats:
//
//   - csv: username,password_hash[,allowed_scopes[,disabled]] per line (an
//     argon2id hash may be quoted or not: its two commas are recognized);
//     allowed_scopes is space-separated, empty for no per-user limit, "-" for
//     no scope at all; disabled is true or false. A first line starting with
//     "username," is a header. Blank lines and lines starting with # are
//     skipped.
//   - json: an array of {"username", "password_hash", "allowed_scopes",
//     "disabled"} objects.
//   - htpasswd: username:hash per line (bcrypt or argon2id hashes), as
//     written by htpasswd -B or caddy hash-password.
func parseImport(data []byte, format string) ([]importRecord, error) {
	switch format {
	case formatJSON:
		return parseImportJSON(data)
	case formatCSV:
		return parseImportCSV(data)
	default:
		return parseImportHtpasswd(data)
	}
}

func parseImportHtpasswd(data []byte) ([]importRecord, error) {
	var out []importRecord
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: want username:hash; nothing imported", i+1)
		}
		out = append(out, importRecord{Line: i + 1, Username: name, PasswordHash: hash})
	}
	return out, nil
}

func parseImportCSV(data []byte) ([]importRecord, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.Comment = '#'
	var out []importRecord
	first := true
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("line %d: %v; nothing imported", pe.Line, pe.Err)
			}
			return nil, fmt.Errorf("reading csv: %w; nothing imported", err)
		}
		line, _ := r.FieldPos(0) // only valid after a successful Read
		if first && len(rec) > 0 && strings.EqualFold(strings.TrimSpace(rec[0]), "username") {
			first = false
			continue
		}
		first = false
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		// An argon2id PHC string holds two commas (m=...,t=...,p=...):
		// accept it unquoted too.
		if len(rec) >= 4 && strings.HasPrefix(strings.TrimSpace(rec[1]), "$argon2") &&
			!strings.Contains(rec[1], ",") {
			rec = append([]string{rec[0], strings.Join(rec[1:4], ",")}, rec[4:]...)
		}
		if len(rec) < 2 || len(rec) > 4 {
			return nil, fmt.Errorf("line %d: want username,password_hash[,allowed_scopes[,disabled]], got %d fields; nothing imported", line, len(rec))
		}
		ir := importRecord{Line: line, Username: rec[0], PasswordHash: strings.TrimSpace(rec[1])}
		if len(rec) >= 3 {
			switch s := strings.TrimSpace(rec[2]); s {
			case "":
			case "-":
				ir.AllowedScopes = []string{}
			default:
				ir.AllowedScopes = strings.Fields(s)
			}
		}
		if len(rec) == 4 && strings.TrimSpace(rec[3]) != "" {
			b, err := strconv.ParseBool(strings.TrimSpace(rec[3]))
			if err != nil {
				return nil, fmt.Errorf("line %d: disabled %q is not true or false; nothing imported", line, rec[3])
			}
			ir.Disabled = b
		}
		out = append(out, ir)
	}
	return out, nil
}

func parseImportJSON(data []byte) ([]importRecord, error) {
	lineAt := func(off int64) int {
		// the line of the first non-space byte at or after off
		for off < int64(len(data)) && strings.ContainsRune(" \t\r\n,", rune(data[off])) {
			off++
		}
		return bytes.Count(data[:off], []byte("\n")) + 1
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('[') {
		return nil, errors.New("line 1: a JSON import file is an array of user objects; nothing imported")
	}
	var out []importRecord
	for dec.More() {
		line := lineAt(dec.InputOffset())
		var rec struct {
			Username      *string  `json:"username"`
			PasswordHash  *string  `json:"password_hash"`
			AllowedScopes []string `json:"allowed_scopes"`
			Disabled      bool     `json:"disabled"`
		}
		if err := dec.Decode(&rec); err != nil {
			return nil, fmt.Errorf("line %d: %v; nothing imported", line, err)
		}
		ir := importRecord{Line: line, AllowedScopes: rec.AllowedScopes, Disabled: rec.Disabled}
		if rec.Username != nil {
			ir.Username = *rec.Username
		}
		if rec.PasswordHash != nil {
			ir.PasswordHash = *rec.PasswordHash
		}
		out = append(out, ir)
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("line %d: %v; nothing imported", lineAt(dec.InputOffset()), err)
	}
	return out, nil
}

// validateImport checks every record and builds the users to store. The
// first bad record fails the whole import with its line number.
func validateImport(records []importRecord, hasher *password.Hasher) ([]*store.User, error) {
	bad := func(rec importRecord, format string, args ...any) error {
		return opErrorf(http.StatusBadRequest, "line %d: %s; nothing imported", rec.Line, fmt.Sprintf(format, args...))
	}
	if len(records) == 0 {
		return nil, opErrorf(http.StatusBadRequest, "no users in the import; nothing imported")
	}
	seen := map[string]int{}
	users := make([]*store.User, 0, len(records))
	for _, rec := range records {
		if err := validUsername(rec.Username); err != nil {
			return nil, bad(rec, "%v", err)
		}
		if prev, dup := seen[store.NormalizeUsername(rec.Username)]; dup {
			return nil, bad(rec, "username %q repeats line %d", rec.Username, prev)
		}
		seen[store.NormalizeUsername(rec.Username)] = rec.Line
		if !password.IsHash(rec.PasswordHash) {
			return nil, bad(rec, "user %q: the password hash is not argon2id ($argon2id$...) or bcrypt ($2a$, $2b$, $2y$)", rec.Username)
		}
		if err := hasher.ValidateHash(rec.PasswordHash); err != nil {
			return nil, bad(rec, "user %q: %v", rec.Username, err)
		}
		var allowed []string
		if rec.AllowedScopes != nil {
			set, err := scope.New(rec.AllowedScopes...)
			if err != nil {
				return nil, bad(rec, "user %q: allowed_scopes: %v", rec.Username, err)
			}
			allowed = append([]string{}, set...)
		}
		users = append(users, &store.User{
			Username: rec.Username, PasswordHash: rec.PasswordHash,
			AllowedScopes: allowed, Disabled: rec.Disabled,
		})
	}
	return users, nil
}
