package policy

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/trellis-mesh/trellis/internal/authz"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

const meshID = "spiffe://cluster.local/ns/a/sa/b"

func TestDefault(t *testing.T) {
	plain := Caller{}
	mesh := Caller{Identity: meshID, TLS: true}
	alien := Caller{Identity: "spiffe://other.org/ns/a/sa/b", TLS: true}
	req := httptest.NewRequest("GET", "/", nil)
	tests := []struct {
		policy     string
		caller     Caller
		http       bool
		wantReason string // "" allowed
	}{
		{"", plain, true, ""},
		{AllUnauthenticated, plain, true, ""},
		{AllUnauthenticated, plain, false, ""},
		{AllUnauthenticated, mesh, true, ""},
		{AllAuthenticated, plain, true, metrics.ReasonUnauthenticated},
		{AllAuthenticated, plain, false, metrics.ReasonUnauthenticated},
		{AllAuthenticated, mesh, true, ""},
		{AllAuthenticated, alien, false, ""},
		{ClusterAuthenticated, mesh, true, ""},
		{ClusterAuthenticated, alien, true, authz.ReasonForeignTrustDomain},
		{ClusterAuthenticated, plain, false, metrics.ReasonUnauthenticated},
		{Deny, mesh, true, authz.ReasonUnauthorized},
		{Deny, plain, false, authz.ReasonUnauthorized},
		{Audit, plain, false, ""},
		{Audit, mesh, true, ""},
	}
	for _, tt := range tests {
		d, err := NewDefaultIn(tt.policy, "cluster.local")
		if err != nil {
			t.Fatal(err)
		}
		r := req
		if !tt.http {
			r = nil
		}
		err = d.Authorize(context.Background(), tt.caller, r)
		var dn *Denial
		switch {
		case tt.wantReason == "" && err != nil:
			t.Errorf("%q, caller %+v: refused: %v", tt.policy, tt.caller, err)
		case tt.wantReason != "" && (!errors.As(err, &dn) || dn.Reason != tt.wantReason || dn.Msg == ""):
			t.Errorf("%q, caller %+v: %v, want a denial %q", tt.policy, tt.caller, err, tt.wantReason)
		}
		if d.Check(context.Background(), tt.caller, r) != (err == nil) {
			t.Errorf("%q, caller %+v: Check disagrees with Authorize", tt.policy, tt.caller)
		}
		wantMTLS := tt.policy == AllAuthenticated || tt.policy == ClusterAuthenticated || tt.policy == Deny
		if d.RequiresMTLS() != wantMTLS {
			t.Errorf("%q: RequiresMTLS %v", tt.policy, d.RequiresMTLS())
		}
	}
	// A literal Default decides as the compiled one.
	if err := (Default{Policy: AllAuthenticated}).Authorize(context.Background(), plain, nil); err != ErrUnauthenticated {
		t.Errorf("literal all-authenticated: %v", err)
	}
	var dn *Denial
	if !errors.As(error(ErrUnauthenticated), &dn) || dn.RefusalReason() != metrics.ReasonUnauthenticated {
		t.Errorf("unauthenticated denial reason %v", dn)
	}
	if _, err := NewDefault("deny-all"); err == nil {
		t.Error("unknown policy accepted")
	}
}
