package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// The export format is JSON lines, the same whatever backend wrote it or
// will read it:
//
//	{"format":"crudauth-export","version":3,"created_at":"2026-01-02T03:04:05Z"}
//	{"kind":"user","id":"u...","username":"alice","password_hash":"$argon2id$...","disabled":false,
//	 "allowed_scopes":null,"token_version":3,"created_at":"...","updated_at":"...","password_changed_at":"..."}
//	{"kind":"session","id":"s...","user_id":"u...","scopes":["me:read"],"generation":4,"rotated_at":"...",
//	 "created_at":"...","last_used_at":"...","expires_at":"...","user_agent":"...","address":"192.0.2.1"}
//	{"kind":"secret","name":"hs256","value":"<standard base64>"}
//	{"kind":"key","id":"k...","alg":"EdDSA","private":"<PKCS #8 DER, standard base64>",
//	 "created_at":"...","sign_from":"...","retired_at":"..."}
//	{"kind":"end","users":1,"sessions":1,"secrets":1,"keys":1}
//
// The header comes first; users, sessions, secrets and keys follow in any
// order (Export writes users in normalized-username order, then each
// user's sessions, oldest first, then secrets by name, then the signing
// keys in the store's order); the end line comes last
// and counts what came before it, so that a file cut short (a full disk, a
// broken transfer) is refused instead of restoring part of the users.
// allowed_scopes keeps null (no per-user limit) apart from [] (no scope at
// all), and a session's scopes likewise. Every field of a user is there,
// the password hash and token_version included: a restored user logs in
// with the same password, and tokens issued before the export verify after
// the import as long as the secret they were signed with comes along. Every
// field of a session is there, its generation included, so that its
// refresh token keeps working; a session that has expired is not exported.
// Every signing key of the store's key set is there, retired ones
// included (retired_at is absent for a key never retired), so that tokens
// signed before the export verify after the import and a retired key stays
// retired.
//
// Version 2 is version 3 without keys: its end line has no "keys" count.
// Version 1 is version 2 without sessions: its end line has no "sessions"
// count either. This build reads both. A reader refuses what it does not
// know: a newer version (a later build wrote the file), a kind it does not
// know (a session in a version 1 file, a key in a version 2 one), a field
// it does not know.
const (
	// ExportFormat is the header's "format".
	ExportFormat = "crudauth-export"
	// ExportVersion is the version this build writes and the newest it reads.
	ExportVersion = 3
	// exportVersionSessions is the first version with session lines.
	exportVersionSessions = 2
	// exportVersionKeys is the first version with key lines.
	exportVersionKeys = 3

	// maxExportLine bounds one line: a user with many scopes stays far
	// below it, and a line that is not a record cannot make the reader
	// buffer without end.
	maxExportLine = 1 << 20
)

// exportHeader is the first line.
type exportHeader struct {
	Format    string    `json:"format"`
	Version   int       `json:"version"`
	CreatedAt time.Time `json:"created_at"`
}

// exportKind is read first from every line after the header, to pick the
// record type.
type exportKind struct {
	Kind string `json:"kind"`
}

// exportUser is a user line: every field of User, under names of its own
// so that User can change without changing the format.
type exportUser struct {
	Kind              string    `json:"kind"`
	ID                string    `json:"id"`
	Username          string    `json:"username"`
	PasswordHash      string    `json:"password_hash"`
	Disabled          bool      `json:"disabled"`
	AllowedScopes     []string  `json:"allowed_scopes"`
	TokenVersion      uint64    `json:"token_version"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
	PasswordChangedAt time.Time `json:"password_changed_at"`
}

// exportSession is a session line: every field of Session, under names
// of its own.
type exportSession struct {
	Kind       string    `json:"kind"`
	ID         string    `json:"id"`
	UserID     string    `json:"user_id"`
	Scopes     []string  `json:"scopes"`
	Generation uint64    `json:"generation"`
	RotatedAt  time.Time `json:"rotated_at"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	UserAgent  string    `json:"user_agent"`
	Address    string    `json:"address"`
}

// exportSecret is a secret line; encoding/json writes []byte as standard
// base64.
type exportSecret struct {
	Kind  string `json:"kind"`
	Name  string `json:"name"`
	Value []byte `json:"value"`
}

// exportKey is a key line: every field of SigningKey, under names of its
// own. Private is standard base64; retired_at is absent for a key never
// retired.
type exportKey struct {
	Kind      string    `json:"kind"`
	ID        string    `json:"id"`
	Alg       string    `json:"alg"`
	Private   []byte    `json:"private"`
	CreatedAt time.Time `json:"created_at"`
	SignFrom  time.Time `json:"sign_from"`
	RetiredAt time.Time `json:"retired_at,omitzero"`
}

// exportEnd is the last line.
type exportEnd struct {
	Kind     string `json:"kind"`
	Users    int    `json:"users"`
	Sessions int    `json:"sessions"` // absent (0) in version 1
	Secrets  int    `json:"secrets"`
	Keys     int    `json:"keys"` // absent (0) before version 3
}

// Dump is the content of an export: what Export writes and ReadExport
// returns.
type Dump struct {
	CreatedAt time.Time
	Users     []*User           // in the order read
	Sessions  []*Session        // in the order read
	Secrets   map[string][]byte // by name
	Keys      []SigningKey      // the key set's keys, in the order read
}

// ImportStats says what Import did.
type ImportStats struct {
	// Users created.
	Users int
	// Sessions created.
	Sessions int
	// Secrets created, and secrets that were already stored with the same
	// value (left as they were).
	Secrets, SecretsKept int
	// Signing keys added to the key set, and keys that were already stored
	// with the same content (left as they were).
	Keys, KeysKept int
}

// Export writes every user, every session that has not expired, every
// secret and every signing key of s to w in the export format. Users come
// from one consistent snapshot (ListUsers); each user's sessions are read
// after it, so a session that begins or ends meanwhile may be in the
// export or not, and a user deleted meanwhile is exported without
// sessions. Secrets are read next, which is consistent too, since a stored
// secret never changes, and the key set last, as one set.
func Export(ctx context.Context, s Store, w io.Writer) error {
	d := &Dump{CreatedAt: time.Now().UTC()}
	err := s.ListUsers(ctx, func(u *User) error {
		d.Users = append(d.Users, u)
		return nil
	})
	if err != nil {
		return fmt.Errorf("export: listing users: %w", err)
	}
	// Not inside ListUsers' fn: that may not call back into the store.
	for _, u := range d.Users {
		ss, err := s.ListSessions(ctx, u.ID, d.CreatedAt)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("export: listing sessions of user %s: %w", u.ID, err)
		}
		d.Sessions = append(d.Sessions, ss...)
	}
	if d.Secrets, err = s.Secrets(ctx); err != nil {
		return fmt.Errorf("export: listing secrets: %w", err)
	}
	ks, err := s.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("export: reading the signing keys: %w", err)
	}
	d.Keys = ks.Clone().Keys // ks is shared
	return WriteExport(w, d)
}

// WriteExport writes d in the export format: users, sessions and keys in
// d's order, secrets by name.
func WriteExport(w io.Writer, d *Dump) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw) // one value per line
	enc.SetEscapeHTML(false)
	if err := enc.Encode(exportHeader{Format: ExportFormat, Version: ExportVersion, CreatedAt: d.CreatedAt}); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	for _, u := range d.Users {
		if err := enc.Encode(exportUser{
			Kind: "user", ID: u.ID, Username: u.Username, PasswordHash: u.PasswordHash,
			Disabled: u.Disabled, AllowedScopes: u.AllowedScopes, TokenVersion: u.TokenVersion,
			CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, PasswordChangedAt: u.PasswordChangedAt,
		}); err != nil {
			return fmt.Errorf("export: user %s: %w", u.ID, err)
		}
	}
	for _, x := range d.Sessions {
		if err := enc.Encode(exportSession{
			Kind: "session", ID: x.ID, UserID: x.UserID, Scopes: x.Scopes, Generation: x.Generation,
			RotatedAt: x.RotatedAt, CreatedAt: x.CreatedAt, LastUsedAt: x.LastUsedAt, ExpiresAt: x.ExpiresAt,
			UserAgent: x.UserAgent, Address: x.Address,
		}); err != nil {
			return fmt.Errorf("export: session %s: %w", x.ID, err)
		}
	}
	names := make([]string, 0, len(d.Secrets))
	for name := range d.Secrets {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := enc.Encode(exportSecret{Kind: "secret", Name: name, Value: d.Secrets[name]}); err != nil {
			return fmt.Errorf("export: secret %s: %w", name, err)
		}
	}
	for _, k := range d.Keys {
		if err := enc.Encode(exportKey{
			Kind: "key", ID: k.ID, Alg: k.Alg, Private: k.Private,
			CreatedAt: k.CreatedAt, SignFrom: k.SignFrom, RetiredAt: k.RetiredAt,
		}); err != nil {
			return fmt.Errorf("export: key %s: %w", k.ID, err)
		}
	}
	if err := enc.Encode(exportEnd{Kind: "end", Users: len(d.Users), Sessions: len(d.Sessions), Secrets: len(names), Keys: len(d.Keys)}); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// ErrSecretConflict is wrapped by Import's error when the store holds a
// secret of the export with another value.
var ErrSecretConflict = errors.New("secret is stored with another value")

// ErrNotExport is wrapped by ReadExport's error when the first line is not
// an export header: the file is something else (a bbolt snapshot, say).
var ErrNotExport = errors.New("not a crudauth export")

// ReadExport parses an export. It checks the format, not the store: users
// with empty or repeated usernames or IDs, sessions without an ID, a user
// of the file or an expiry, repeated sessions, secrets with empty names or
// values, repeated secrets, and keys that are not well formed (see
// CheckKeySetChange) or repeated are refused here, with the line number;
// whether they clash with what a store holds is for Import to find.
func ReadExport(r io.Reader) (*Dump, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxExportLine)
	line := 0
	next := func() ([]byte, bool) {
		for sc.Scan() {
			line++
			if b := bytes.TrimSpace(sc.Bytes()); len(b) > 0 {
				return b, true
			}
		}
		return nil, false
	}
	lineErr := func(format string, args ...any) error {
		return fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, args...))
	}
	scanErr := func() error {
		if err := sc.Err(); err != nil {
			if errors.Is(err, bufio.ErrTooLong) {
				return fmt.Errorf("line %d: longer than %d bytes", line+1, maxExportLine)
			}
			return err
		}
		return nil
	}

	b, ok := next()
	if !ok {
		if err := scanErr(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("empty file: %w", ErrNotExport)
	}
	var h exportHeader
	if err := json.Unmarshal(b, &h); err != nil || h.Format != ExportFormat {
		return nil, fmt.Errorf("line 1 is not a %q header: %w", ExportFormat, ErrNotExport)
	}
	switch {
	case h.Version > ExportVersion:
		return nil, fmt.Errorf("export format version %d is newer than this build reads (up to %d): import it with the build that wrote it, or a newer one", h.Version, ExportVersion)
	case h.Version < 1:
		return nil, lineErr("export format version %d is not valid", h.Version)
	}
	if err := strictUnmarshal(b, &h); err != nil {
		return nil, lineErr("header: %v", err)
	}

	d := &Dump{CreatedAt: h.CreatedAt, Secrets: map[string][]byte{}}
	ids, names, kids := map[string]bool{}, map[string]bool{}, map[string]bool{}
	type sessionAt struct {
		line        int
		user, token string
	}
	var sessionLines []sessionAt // checked against the users once all are read
	sids := map[[2]string]bool{}
	var end *exportEnd
	for {
		b, ok := next()
		if !ok {
			break
		}
		if end != nil {
			return nil, lineErr("a record after the end line")
		}
		var k exportKind
		if err := json.Unmarshal(b, &k); err != nil {
			return nil, lineErr("not a JSON object: %v", err)
		}
		switch k.Kind {
		case "user":
			var eu exportUser
			if err := strictUnmarshal(b, &eu); err != nil {
				return nil, lineErr("user: %v", err)
			}
			norm := NormalizeUsername(eu.Username)
			switch {
			case eu.ID == "":
				return nil, lineErr("user %q has no id", eu.Username)
			case eu.Username == "":
				return nil, lineErr("user %s has no username", eu.ID)
			case ids[eu.ID]:
				return nil, lineErr("user id %s repeated", eu.ID)
			case names[norm]:
				return nil, lineErr("username %q repeated", eu.Username)
			}
			ids[eu.ID], names[norm] = true, true
			d.Users = append(d.Users, &User{
				ID: eu.ID, Username: eu.Username, PasswordHash: eu.PasswordHash,
				Disabled: eu.Disabled, AllowedScopes: eu.AllowedScopes, TokenVersion: eu.TokenVersion,
				CreatedAt: eu.CreatedAt, UpdatedAt: eu.UpdatedAt, PasswordChangedAt: eu.PasswordChangedAt,
			})
		case "session":
			if h.Version < exportVersionSessions {
				return nil, lineErr("unknown record kind %q (version %d of the format has user, secret and end)", k.Kind, h.Version)
			}
			var es exportSession
			if err := strictUnmarshal(b, &es); err != nil {
				return nil, lineErr("session: %v", err)
			}
			key := [2]string{es.UserID, es.ID}
			switch {
			case es.ID == "":
				return nil, lineErr("session of user %s has no id", es.UserID)
			case es.UserID == "":
				return nil, lineErr("session %s has no user_id", es.ID)
			case es.ExpiresAt.IsZero():
				return nil, lineErr("session %s has no expires_at", es.ID)
			case sids[key]:
				return nil, lineErr("session %s of user %s repeated", es.ID, es.UserID)
			}
			sids[key] = true
			sessionLines = append(sessionLines, sessionAt{line, es.UserID, es.ID})
			d.Sessions = append(d.Sessions, &Session{
				ID: es.ID, UserID: es.UserID, Scopes: es.Scopes, Generation: es.Generation,
				RotatedAt: es.RotatedAt, CreatedAt: es.CreatedAt, LastUsedAt: es.LastUsedAt, ExpiresAt: es.ExpiresAt,
				UserAgent: es.UserAgent, Address: es.Address,
			})
		case "secret":
			var es exportSecret
			if err := strictUnmarshal(b, &es); err != nil {
				return nil, lineErr("secret: %v", err)
			}
			switch {
			case es.Name == "":
				return nil, lineErr("secret without a name")
			case len(es.Value) == 0:
				return nil, lineErr("secret %q is empty", es.Name)
			case d.Secrets[es.Name] != nil:
				return nil, lineErr("secret %q repeated", es.Name)
			}
			d.Secrets[es.Name] = es.Value
		case "key":
			if h.Version < exportVersionKeys {
				return nil, lineErr("unknown record kind %q (version %d of the format has %s)", k.Kind, h.Version, kindsOf(h.Version))
			}
			var ek exportKey
			if err := strictUnmarshal(b, &ek); err != nil {
				return nil, lineErr("key: %v", err)
			}
			sk := SigningKey{ID: ek.ID, Alg: ek.Alg, Private: ek.Private, CreatedAt: ek.CreatedAt, SignFrom: ek.SignFrom, RetiredAt: ek.RetiredAt}
			if kids[sk.ID] {
				return nil, lineErr("key %q repeated", sk.ID)
			}
			if err := CheckKeySetChange(&KeySet{}, &KeySet{Keys: []SigningKey{sk}}); err != nil {
				return nil, lineErr("%v", err)
			}
			kids[sk.ID] = true
			d.Keys = append(d.Keys, sk)
		case "end":
			end = new(exportEnd)
			if err := strictUnmarshal(b, end); err != nil {
				return nil, lineErr("end: %v", err)
			}
		case "":
			return nil, lineErr(`no "kind"`)
		default:
			return nil, lineErr("unknown record kind %q (version %d of the format has %s)", k.Kind, h.Version, kindsOf(h.Version))
		}
	}
	if err := scanErr(); err != nil {
		return nil, err
	}
	if end == nil {
		return nil, fmt.Errorf("no end line after line %d: the export is cut short; nothing imported", line)
	}
	if len(d.Keys) > MaxSigningKeys {
		return nil, fmt.Errorf("the file holds %d signing keys, a key set holds at most %d", len(d.Keys), MaxSigningKeys)
	}
	if end.Users != len(d.Users) || end.Sessions != len(d.Sessions) || end.Secrets != len(d.Secrets) || end.Keys != len(d.Keys) {
		return nil, fmt.Errorf("the end line counts %d users, %d sessions, %d secrets and %d keys, the file holds %d, %d, %d and %d",
			end.Users, end.Sessions, end.Secrets, end.Keys, len(d.Users), len(d.Sessions), len(d.Secrets), len(d.Keys))
	}
	for _, sl := range sessionLines {
		if !ids[sl.user] {
			return nil, fmt.Errorf("line %d: session %s belongs to user %s, who is not in the file", sl.line, sl.token, sl.user)
		}
	}
	return d, nil
}

// kindsOf names the record kinds of a version of the format.
func kindsOf(version int) string {
	switch {
	case version < exportVersionSessions:
		return "user, secret and end"
	case version < exportVersionKeys:
		return "user, session, secret and end"
	}
	return "user, session, secret, key and end"
}

// mergeKeys returns stored with the keys of add that it lacks, in creation
// order, and how many were added. A key of add whose ID stored holds with
// other content is a conflict (ErrKeyConflict).
func mergeKeys(stored *KeySet, add []SigningKey) (*KeySet, int, error) {
	merged := stored.Clone()
	n := 0
	for _, k := range add {
		if old := stored.Key(k.ID); old != nil {
			if !sameKey(*old, k) {
				return nil, 0, fmt.Errorf("signing key %q: %w: stored with other content", k.ID, ErrKeyConflict)
			}
			continue
		}
		k.Private = bytes.Clone(k.Private)
		merged.Keys = append(merged.Keys, k)
		n++
	}
	slices.SortStableFunc(merged.Keys, func(a, b SigningKey) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return merged, n, nil
}

// strictUnmarshal decodes one JSON object into v, refusing fields v does
// not have and anything after the object.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}

// Import reads an export from r into s. Nothing is written unless the whole
// file parses. Users are created in one CreateUsers call, all of them or
// none: a username or ID that s holds (or once held) fails the import with
// ErrExists. A secret that s already holds must have the same value, or the
// import is refused before anything is written: replacing a signing key
// would break every token signed with it, and keeping it would make the
// imported users' tokens fail. Signing keys follow the same rule: a key
// whose ID s holds must have the same content (retirement included), or
// the import is refused with ErrKeyConflict; the others are added to s's
// set. Secrets are written after the users, the keys (one
// UpdateSigningKeys) after the secrets, and sessions (each with
// CreateSession, every field as exported) after the keys: a failure there
// leaves the users, secrets and keys imported.
func Import(ctx context.Context, s Store, r io.Reader) (ImportStats, error) {
	d, err := ReadExport(r)
	if err != nil {
		return ImportStats{}, err
	}
	return ImportDump(ctx, s, d)
}

// ImportDump is Import of a parsed export.
func ImportDump(ctx context.Context, s Store, d *Dump) (ImportStats, error) {
	var stats ImportStats
	have, err := s.Secrets(ctx)
	if err != nil {
		return stats, err
	}
	names := make([]string, 0, len(d.Secrets))
	for name, v := range d.Secrets {
		if old, ok := have[name]; ok && !bytes.Equal(old, v) {
			return stats, fmt.Errorf("secret %q: %w: importing would break the tokens signed with one of them; nothing imported", name, ErrSecretConflict)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	stored, err := s.SigningKeys(ctx)
	if err != nil {
		return stats, err
	}
	merged, _, err := mergeKeys(stored, d.Keys)
	if err != nil {
		return stats, fmt.Errorf("%w: importing would break the tokens signed with one of them; nothing imported", err)
	}
	if err := CheckKeySetChange(stored, merged); err != nil {
		return stats, fmt.Errorf("%w; nothing imported", err)
	}
	users := make([]*User, len(d.Users))
	for i, u := range d.Users {
		users[i] = u.Clone()
	}
	if err := s.CreateUsers(ctx, users); err != nil {
		return stats, fmt.Errorf("%w; nothing imported", err)
	}
	stats.Users = len(users)
	for _, name := range names {
		want := d.Secrets[name]
		created := false
		got, err := s.Secret(ctx, name, func() ([]byte, error) {
			created = true
			return bytes.Clone(want), nil
		})
		if err != nil {
			return stats, fmt.Errorf("secret %q: %w (the %d users are imported)", name, err, stats.Users)
		}
		if !bytes.Equal(got, want) {
			// Stored by someone else between the check and now.
			return stats, fmt.Errorf("secret %q: %w, stored meanwhile (the %d users are imported)", name, ErrSecretConflict, stats.Users)
		}
		if created {
			stats.Secrets++
		} else {
			stats.SecretsKept++
		}
	}
	if len(d.Keys) > 0 {
		var added, kept int
		_, err := s.UpdateSigningKeys(ctx, func(ks *KeySet) error {
			// fn may run again: count from *ks alone.
			merged, a, err := mergeKeys(ks, d.Keys)
			if err != nil {
				return err
			}
			added, kept = a, len(d.Keys)-a
			if a == 0 {
				return ErrSkipWrite
			}
			*ks = *merged
			return nil
		})
		if err != nil {
			return stats, fmt.Errorf("signing keys: %w (the %d users and the secrets are imported)", err, stats.Users)
		}
		stats.Keys, stats.KeysKept = added, kept
	}
	for _, x := range d.Sessions {
		if _, err := s.CreateSession(ctx, x.Clone(), 0); err != nil {
			return stats, fmt.Errorf("session %s of user %s: %w (the %d users, the secrets and the keys are imported, %d sessions)",
				x.ID, x.UserID, err, stats.Users, stats.Sessions)
		}
		stats.Sessions++
	}
	return stats, nil
}
