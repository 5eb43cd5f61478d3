package metrics

import (
	"errors"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/crudauth/caddy-crudauth/internal/auth"
	"github.com/crudauth/caddy-crudauth/internal/endpoints"
	"github.com/crudauth/caddy-crudauth/internal/gate"
)

// gatherValue reads one counter series (label values in label order) from
// reg.
func gatherValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for i, l := range m.GetLabel() {
				if l.GetValue() != labels[i] {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestBearer pins the outcome label of every bearer-check result,
// and that registering twice (a reload) is fine.
func TestBearer(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	if err := Register(reg); err != nil {
		t.Fatalf("second registration: %v", err)
	}
	cases := []struct {
		status  int
		err     error
		outcome string
	}{
		{0, nil, "ok"},
		{http.StatusUnauthorized, endpoints.ErrNoToken, "missing"},
		{http.StatusBadRequest, gate.ErrMultipleAuth, "invalid"},
		{http.StatusUnauthorized, errors.New("token is expired"), "invalid"},
		{http.StatusUnauthorized, auth.ErrRevoked, "revoked"},
		{http.StatusUnauthorized, auth.ErrDisabledUser, "revoked"},
		{http.StatusUnauthorized, auth.ErrUnknownUser, "revoked"},
		{http.StatusUnauthorized, auth.ErrScopeNotAllowed, "revoked"},
		{http.StatusForbidden, auth.ErrInsufficientScope, "insufficient_scope"},
		{http.StatusInternalServerError, errors.New("reading user state: boom"), "error"},
	}
	for _, c := range cases {
		before := gatherValue(t, reg, "crudauth_bearer_checks_total", c.outcome)
		Bearer(c.status, c.err)
		if got := gatherValue(t, reg, "crudauth_bearer_checks_total", c.outcome) - before; got != 1 {
			t.Errorf("%v: %s went up by %v", c.err, c.outcome, got)
		}
	}
	if testing.AllocsPerRun(100, func() { Bearer(0, nil) }) != 0 {
		t.Error("counting a successful bearer check allocates")
	}
}
