package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/keys"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/token"
)

// The asymmetric signing algorithms the end-to-end run compares with
// HS256: a gateway site of each on the small database, with one token and
// with a different token per request.
var benchAlgs = []string{store.AlgEdDSA, store.AlgES256}

// algTokens are the tokens of one algorithm's gateway site.
type algTokens struct {
	one  string // the one-token cases' token
	list string // file of ListLen tokens, one a line, for the fresh cases
}

// prepareAlgs creates the EdDSA and ES256 key pairs in the small database
// (as a gateway's first start would) and mints the algorithms' tokens with
// them: the same subjects as the HS256 tokens, so the cases differ only
// in the signature.
func (e *e2e) prepareAlgs() error {
	path := filepath.Join(e.work, "small.db")
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	ctx := context.Background()
	e.algs = map[string]algTokens{}
	sc := scope.MustNew("api:read")
	for _, alg := range benchAlgs {
		ks, err := keys.Ensure(ctx, st, alg, time.Now(), 0)
		if err != nil {
			return fmt.Errorf("%s key: %w", alg, err)
		}
		var signer *store.SigningKey
		for _, s := range keys.Describe(ks, alg, time.Now(), 24*time.Hour) {
			if s.State == keys.Signing {
				signer = ks.Key(s.ID)
			}
		}
		if signer == nil {
			return fmt.Errorf("%s: no signing key after Ensure", alg)
		}
		k, err := keys.Parse(signer)
		if err != nil {
			return err
		}
		m, err := token.New(token.Config{Alg: alg, Issuer: benchIssuer, Audience: benchAudience,
			AccessTTL: 2 * time.Hour, RefreshTTL: 24 * time.Hour})
		if err != nil {
			return err
		}
		if err := m.SetKeys(k.ID, []token.Key{k}); err != nil {
			return err
		}
		toks := make([]string, e.cfg.ListLen)
		for i := range toks {
			j := i % len(e.smallIDs)
			if toks[i], _, err = m.IssueAccess(token.Subject{UserID: e.smallIDs[j], SessionID: e.smallSIDs[j], Scopes: sc}); err != nil {
				return err
			}
		}
		file := filepath.Join(e.work, "tokens-"+alg+".txt")
		if err := writeLines(file, toks); err != nil {
			return err
		}
		e.algs[alg] = algTokens{one: toks[0], list: file}
	}
	return nil
}

// algCaseName is the case name of alg's gateway site: gateway_eddsa,
// gateway_fresh_es256, ...
func algCaseName(prefix, alg string) string {
	switch alg {
	case store.AlgEdDSA:
		return prefix + "_eddsa"
	case store.AlgES256:
		return prefix + "_es256"
	}
	return prefix + "_" + alg
}

// algCases are the cases of the algorithm sites of the current set.
func (e *e2e) algCases(url func(int) string, fresh string, threadsEnv string) []benchCase {
	s := &e.set
	gwPids := func() []int { return []int{s.gwC.pid()} }
	var out []benchCase
	for _, alg := range benchAlgs {
		port := s.gwAlgPorts[alg]
		t := e.algs[alg]
		out = append(out,
			benchCase{info: caseInfo{Name: algCaseName("gateway", alg), Desc: fmt.Sprintf("gateway signing with %s, one token", alg), CPUOf: "gateway Caddy"},
				spec: wrkSpec{url: url(port), headers: []string{"Authorization: Bearer " + t.one}}, pids: gwPids},
			benchCase{info: caseInfo{Name: algCaseName("gateway_fresh", alg), Desc: fmt.Sprintf("gateway signing with %s, a different token per request (%d tokens over %d users)", alg, e.cfg.ListLen, e.cfg.SmallUsers), CPUOf: "gateway Caddy"},
				spec: wrkSpec{url: url(port), script: fresh, env: []string{"BENCH_TOKENS=" + t.list, threadsEnv}}, pids: gwPids},
		)
	}
	return out
}
