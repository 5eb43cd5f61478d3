package users

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
)

// MaxImportBytes caps an import file (and the admin API's import body).
const MaxImportBytes = 64 << 20

// Record is one user of an import file, with the line it came from. Its
// JSON form is what the CLI sends to the admin API's import endpoint.
type Record struct {
	Line         int    `json:"line"`
	Username     string `json:"username"`
	PasswordHash string `json:"password_hash"`
	// AllowedScopes: null or absent means no per-user limit.
	AllowedScopes []string `json:"allowed_scopes"`
	Disabled      bool     `json:"disabled,omitempty"`
}

// Format is an import file format.
type Format string

// Import file formats.
const (
	FormatCSV      Format = "csv"
	FormatJSON     Format = "json"
	FormatHtpasswd Format = "htpasswd"
)

// ImportFormat picks the format from the --format flag or, when the flag is
// empty, from the file name: .csv, .json, anything else htpasswd.
func ImportFormat(flag, name string) (Format, error) {
	switch f := Format(flag); f {
	case FormatCSV, FormatJSON, FormatHtpasswd:
		return f, nil
	case "":
	default:
		return "", errorf(Invalid, nil, "--format %q: use csv, json or htpasswd", flag)
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return FormatCSV, nil
	case ".json":
		return FormatJSON, nil
	}
	return FormatHtpasswd, nil
}

// ParseImport reads the users of an import file; an unknown format is read
// as htpasswd. Every error is an *Error of kind Invalid that names the line.
// Formats:
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
//
// The records are not validated: Service.Import does that.
func ParseImport(data []byte, f Format) ([]Record, error) {
	switch f {
	case FormatJSON:
		return parseJSON(data)
	case FormatCSV:
		return parseCSV(data)
	default:
		return parseHtpasswd(data)
	}
}

func parseHtpasswd(data []byte) ([]Record, error) {
	var out []Record
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok {
			return nil, errorf(Invalid, nil, "line %d: want username:hash; nothing imported", i+1)
		}
		out = append(out, Record{Line: i + 1, Username: name, PasswordHash: hash})
	}
	return out, nil
}

func parseCSV(data []byte) ([]Record, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.Comment = '#'
	var out []Record
	first := true
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, errorf(Invalid, err, "line %d: %v; nothing imported", pe.Line, pe.Err)
			}
			return nil, errorf(Invalid, err, "reading csv: %v; nothing imported", err)
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
			return nil, errorf(Invalid, nil, "line %d: want username,password_hash[,allowed_scopes[,disabled]], got %d fields; nothing imported", line, len(rec))
		}
		ir := Record{Line: line, Username: rec[0], PasswordHash: strings.TrimSpace(rec[1])}
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
				return nil, errorf(Invalid, err, "line %d: disabled %q is not true or false; nothing imported", line, rec[3])
			}
			ir.Disabled = b
		}
		out = append(out, ir)
	}
	return out, nil
}

func parseJSON(data []byte) ([]Record, error) {
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
		return nil, errorf(Invalid, err, "line 1: a JSON import file is an array of user objects; nothing imported")
	}
	var out []Record
	for dec.More() {
		line := lineAt(dec.InputOffset())
		var rec struct {
			Username      *string  `json:"username"`
			PasswordHash  *string  `json:"password_hash"`
			AllowedScopes []string `json:"allowed_scopes"`
			Disabled      bool     `json:"disabled"`
		}
		if err := dec.Decode(&rec); err != nil {
			return nil, errorf(Invalid, err, "line %d: %v; nothing imported", line, err)
		}
		ir := Record{Line: line, AllowedScopes: rec.AllowedScopes, Disabled: rec.Disabled}
		if rec.Username != nil {
			ir.Username = *rec.Username
		}
		if rec.PasswordHash != nil {
			ir.PasswordHash = *rec.PasswordHash
		}
		out = append(out, ir)
	}
	if _, err := dec.Token(); err != nil {
		return nil, errorf(Invalid, err, "line %d: %v; nothing imported", lineAt(dec.InputOffset()), err)
	}
	return out, nil
}

// validateImport checks every record and builds the users to store. The
// first bad record fails the whole import with its line number. Only
// hashes are accepted, never a plaintext password, and each must be one the
// hasher can verify within its ceilings (a bcrypt cost of 31 would stall
// every login of that user). No message repeats the hash field: a
// "hash" that is really a plaintext password must not reach a log.
func validateImport(records []Record, hasher *password.Hasher) ([]*store.User, error) {
	bad := func(rec Record, cause error, format string, args ...any) error {
		return errorf(Invalid, cause, "line %d: %s; nothing imported", rec.Line, fmt.Sprintf(format, args...))
	}
	if len(records) == 0 {
		return nil, errorf(Invalid, nil, "no users in the import; nothing imported")
	}
	seen := map[string]int{}
	users := make([]*store.User, 0, len(records))
	for _, rec := range records {
		if err := validUsername(rec.Username); err != nil {
			return nil, bad(rec, err, "%v", err)
		}
		if prev, dup := seen[store.NormalizeUsername(rec.Username)]; dup {
			return nil, bad(rec, nil, "username %q repeats line %d", rec.Username, prev)
		}
		seen[store.NormalizeUsername(rec.Username)] = rec.Line
		if !password.IsHash(rec.PasswordHash) {
			return nil, bad(rec, nil, "user %q: the password hash is not argon2id ($argon2id$...) or bcrypt ($2a$, $2b$, $2y$)", rec.Username)
		}
		if err := hasher.ValidateHash(rec.PasswordHash); err != nil {
			return nil, bad(rec, err, "user %q: %v", rec.Username, err)
		}
		var allowed []string
		if rec.AllowedScopes != nil {
			set, err := scope.New(rec.AllowedScopes...)
			if err != nil {
				return nil, bad(rec, err, "user %q: allowed_scopes: %v", rec.Username, err)
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
