package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/users"
)

// ListKeys prints the signing keys with their state, and the token
// lifetime their verify-until is judged with. alg and lifetime, when
// given, override the realm's (through the admin API) or the defaults
// (on a store the command opened itself: every algorithm present, the
// default refresh_ttl).
func (env *Env) ListKeys(ctx context.Context, ops Ops, alg string, lifetime time.Duration) error {
	req := users.KeyListRequest{Alg: alg}
	if lifetime != 0 {
		req.TokenLifetime = lifetime.String()
	}
	l, err := ops.ListKeys(ctx, req)
	if err != nil {
		return err
	}
	if env.JSON {
		if l.Keys == nil {
			l.Keys = []users.KeyView{}
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(l); err != nil {
			return err
		}
		_, err := env.Stdout.Write(escapeJSONControls(buf.Bytes()))
		return err
	}
	// An HS256 realm has no key set: the note says so, and nothing is
	// judged by a token lifetime.
	hs256 := alg == "HS256" || alg == "" && l.SigningAlg == "HS256"
	if len(l.Keys) == 0 && !hs256 {
		what := "signing keys"
		if a := cmp.Or(alg, l.SigningAlg); a != "" {
			what = safeText(a) + " keys"
		}
		fmt.Fprintf(env.Stdout, "no %s in the store\n", what)
	} else if len(l.Keys) > 0 {
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KID\tALG\tSTATE\tCREATED\tSIGNS_FROM\tSIGNED_UNTIL\tVERIFY_UNTIL\tRETIRED")
		for _, k := range l.Keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", safeText(k.ID), safeText(k.Alg), safeText(k.State),
				timeOrDash(k.CreatedAt), timeOrDash(k.SignFrom), timeOrDash(k.SignedUntil), timeOrDash(k.VerifyUntil), timeOrDash(k.RetiredAt))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if l.Note != "" {
		fmt.Fprintf(env.Stdout, "note: %s\n", safeText(l.Note))
	}
	if hs256 {
		return nil
	}
	switch l.TokenLifetimeFrom {
	case users.LifetimeRealm:
		fmt.Fprintf(env.Stdout, "verify-until is judged with a token lifetime of %s, the longest refresh_ttl of the realm's handlers\n", safeText(l.TokenLifetime))
	case users.LifetimeRequest:
		fmt.Fprintf(env.Stdout, "verify-until is judged with a token lifetime of %s (--token-lifetime)\n", safeText(l.TokenLifetime))
	default:
		fmt.Fprintf(env.Stdout, "verify-until is judged with a token lifetime of %s, the default refresh_ttl; "+
			"pass --token-lifetime with the gateways' longest refresh_ttl if it differs\n", safeText(l.TokenLifetime))
	}
	return nil
}

// RotateKey adds a key that is published at once and signs after the
// delay. alg and delay, when given, override the realm's signing_alg and
// key_publish_delay (through the admin API) or the defaults (on a store the
// command opened itself: the one algorithm of its keys, 1h).
func (env *Env) RotateKey(ctx context.Context, ops Ops, alg string, delay time.Duration, delayGiven bool) error {
	req := users.KeyRotateRequest{Alg: alg}
	if delayGiven {
		req.Delay = delay.String()
	}
	r, err := ops.RotateKey(ctx, req)
	if err != nil {
		return err
	}
	k := r.Key
	if k.State == "signing" {
		fmt.Fprintf(env.Stdout, "rotated %s: new key %s is published and signs now\n", safeText(k.Alg), safeText(k.ID))
		if r.Previous != "" {
			fmt.Fprintf(env.Stdout, "key %s no longer signs; its tokens verify until they expire\n", safeText(r.Previous))
		}
	} else {
		fmt.Fprintf(env.Stdout, "rotated %s: new key %s is published now and signs from %s (in %s)\n",
			safeText(k.Alg), safeText(k.ID), rfc3339(k.SignFrom), k.SignFrom.Sub(k.CreatedAt))
		if r.Previous != "" {
			fmt.Fprintf(env.Stdout, "key %s signs until then; its tokens verify until they expire\n", safeText(r.Previous))
		}
	}
	if r.Note != "" {
		fmt.Fprintf(env.Stdout, "note: %s\n", safeText(r.Note))
	}
	return nil
}

// RetireKey ends the key kid at once, and says whether a replacement was
// added.
func (env *Env) RetireKey(ctx context.Context, ops Ops, kid string) error {
	switch kid {
	case "", ".", "..":
		// Not a key ID, and "." and ".." cannot travel as a path segment
		// to the admin API: refuse them the same way on both paths.
		return &users.Error{Kind: users.Invalid, Msg: fmt.Sprintf("invalid key id %q", kid)}
	}
	r, err := ops.RetireKey(ctx, kid)
	if users.KindOf(err) == users.NotFound {
		return fmt.Errorf("%w; 'caddy crudauth key list' shows the keys", err)
	}
	if err != nil {
		return err
	}
	k := r.Key
	if r.AlreadyRetired {
		fmt.Fprintf(env.Stdout, "key %s (%s) was already retired at %s; nothing changed\n", safeText(k.ID), safeText(k.Alg), rfc3339(k.RetiredAt))
		return nil
	}
	fmt.Fprintf(env.Stdout, "key %s (%s) retired: every token it signed is refused from the next request on\n", safeText(k.ID), safeText(k.Alg))
	switch {
	case r.Replacement != nil:
		fmt.Fprintf(env.Stdout, "no other %s key signed: replacement key %s added, signing now\n", safeText(k.Alg), safeText(r.Replacement.ID))
	case r.Signer != "":
		fmt.Fprintf(env.Stdout, "no replacement needed: key %s signs\n", safeText(r.Signer))
	}
	return nil
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return rfc3339(t)
}
