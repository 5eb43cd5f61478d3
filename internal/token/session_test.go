package token

import (
	"testing"
	"time"

	"github.com/crudauth/caddy-crudauth/internal/scope"
)

// TestSessionRefreshReissue: a session's refresh token issued again for
// the same generation, issue time and expiry is the same token, carries
// sid and gen, and a different generation gives another token.
func TestSessionRefreshReissue(t *testing.T) {
	m, clk := newTestManager(t, nil)
	rotated := clk.Now().Add(-time.Minute)
	subj := Subject{UserID: "u1", Scopes: scope.MustNew("read"), TokenVersion: 3, SessionID: "s1", Generation: 4,
		IssuedAt: rotated, NotAfter: rotated.Add(time.Hour)}
	a, expA, err := m.IssueRefresh(subj)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(5 * time.Second)
	b, _, err := m.IssueRefresh(subj)
	if err != nil || a != b {
		t.Fatalf("reissue = %v, same token %v", err, a == b)
	}
	if !expA.Equal(rotated.Add(time.Hour).Truncate(time.Second)) {
		t.Errorf("exp = %v, want the session's end", expA)
	}
	c, err := m.VerifyRefresh(a)
	if err != nil || c.SessionID != "s1" || c.Generation != 4 || !c.IssuedAt.Equal(rotated.Truncate(time.Second)) {
		t.Fatalf("VerifyRefresh = %+v, %v", c, err)
	}
	subj.Generation = 5
	if d, _, _ := m.IssueRefresh(subj); d == a {
		t.Error("another generation gave the same token")
	}
}

// TestNotAfterCapsExpiry: no token outlives NotAfter, and a token that
// would be born expired is not issued.
func TestNotAfterCapsExpiry(t *testing.T) {
	m, clk := newTestManager(t, nil)
	end := clk.Now().Add(5 * time.Minute)
	_, exp, err := m.IssueAccess(Subject{UserID: "u1", SessionID: "s1", NotAfter: end})
	if err != nil || !exp.Equal(end.Truncate(time.Second)) {
		t.Fatalf("IssueAccess exp = %v, %v; want %v", exp, err, end)
	}
	_, exp, err = m.IssueAccess(Subject{UserID: "u1", NotAfter: clk.Now().Add(time.Hour)})
	if err != nil || !exp.Equal(clk.Now().Add(DefaultAccessTTL).Truncate(time.Second)) {
		t.Fatalf("IssueAccess with a far NotAfter: exp = %v, %v", exp, err)
	}
	if _, _, err := m.IssueAccess(Subject{UserID: "u1", NotAfter: clk.Now()}); err == nil {
		t.Error("issued a token that expires as it is issued")
	}
}
