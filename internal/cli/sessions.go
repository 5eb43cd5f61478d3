package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/crudauth/caddy-crudauth/internal/users"
)

// ListSessions prints the user's live sessions, one row each, the user
// agent last since it may hold spaces; or a line that says there are none.
func (env *Env) ListSessions(ctx context.Context, ops Ops, username string) error {
	list, err := ops.ListSessions(ctx, username)
	if err != nil {
		return err
	}
	if env.JSON {
		if list == nil {
			list = []users.SessionView{}
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(list); err != nil {
			return err
		}
		_, err := env.Stdout.Write(escapeJSONControls(buf.Bytes()))
		return err
	}
	if len(list) == 0 {
		fmt.Fprintf(env.Stdout, "no sessions for user %s\n", safeText(username))
		return nil
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SID\tCREATED\tLAST_USED\tEXPIRES\tADDRESS\tUSER_AGENT")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", safeText(s.ID), rfc3339(s.CreatedAt), rfc3339(s.LastUsedAt),
			rfc3339(s.ExpiresAt), orDash(safeText(s.Address)), orDash(safeText(s.UserAgent)))
	}
	return tw.Flush()
}

// RevokeSession ends the user's session sid.
func (env *Env) RevokeSession(ctx context.Context, ops Ops, username, sid string) error {
	switch sid {
	case "", ".", "..":
		// Not a session ID, and "." and ".." cannot travel as a path
		// segment to the admin API: refuse them the same way on both paths.
		return &users.Error{Kind: users.Invalid, Msg: fmt.Sprintf("invalid session id %q", sid)}
	}
	v, err := ops.RevokeSession(ctx, username, sid)
	if users.KindOf(err) == users.NotFound {
		// The user exists, so the session is what was not found: point at
		// the list of the user's sessions, not at the list of users.
		if ok, xerr := ops.Exists(ctx, username); xerr == nil && ok {
			return fmt.Errorf("%w; 'caddy crudauth session list' shows the user's sessions", err)
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s: session %s ended\n", v.Username, safeText(sid))
	return nil
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// safeText makes client-supplied text (a user agent, an address) safe to
// print on a terminal: every character that is not printable (C0 and C1
// controls such as ESC and CSI, which start terminal escape sequences, DEL,
// tabs, format characters such as bidirectional overrides) and every byte
// that is not UTF-8 is written as a Go escape, and a backslash is doubled,
// so that the output stays unambiguous.
func safeText(s string) string {
	clean := true
	for _, r := range s {
		if r == '\\' || r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r) // 'x', with the escape in between
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

// escapeJSONControls rewrites, in encoded JSON, the characters that
// encoding/json writes as they are although a terminal may act on them: DEL,
// the C1 controls (U+0080 to U+009F, CSI among them) and the other
// non-printable characters (bidirectional overrides). Each becomes a \u
// escape, which decodes to the same string. Outside strings, JSON is ASCII
// and printable, so only string contents change.
func escapeJSONControls(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		switch {
		case r == '\n' || unicode.IsPrint(r):
			out = append(out, b[i:i+n]...)
		case r <= 0xffff:
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			r1, r2 := utf16.EncodeRune(r)
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		}
		i += n
	}
	return out
}
