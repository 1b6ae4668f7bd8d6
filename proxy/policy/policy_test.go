package policy

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/trellis-mesh/trellis/proxy/metrics"
)

func TestDefault(t *testing.T) {
	plain := Caller{}
	mesh := Caller{Identity: "spiffe://cluster.local/ns/a/sa/b", TLS: true}
	req := httptest.NewRequest("GET", "/", nil)
	tests := []struct {
		policy string
		caller Caller
		http   bool
		want   error
	}{
		{"", plain, true, nil},
		{AllUnauthenticated, plain, true, nil},
		{AllUnauthenticated, plain, false, nil},
		{AllUnauthenticated, mesh, true, nil},
		{AllAuthenticated, plain, true, ErrUnauthenticated},
		{AllAuthenticated, plain, false, ErrUnauthenticated},
		{AllAuthenticated, mesh, true, nil},
		{AllAuthenticated, mesh, false, nil},
	}
	for _, tt := range tests {
		d, err := NewDefault(tt.policy)
		if err != nil {
			t.Fatal(err)
		}
		r := req
		if !tt.http {
			r = nil
		}
		if got := d.Authorize(context.Background(), tt.caller, r); got != tt.want {
			t.Errorf("%q, caller %+v, http %v: %v, want %v", tt.policy, tt.caller, tt.http, got, tt.want)
		}
		if d.RequiresMTLS() != (tt.policy == AllAuthenticated) {
			t.Errorf("%q: RequiresMTLS %v", tt.policy, d.RequiresMTLS())
		}
	}
	var dn *Denial
	if !errors.As(error(ErrUnauthenticated), &dn) || dn.RefusalReason() != metrics.ReasonUnauthenticated {
		t.Errorf("unauthenticated denial reason %v", dn)
	}
	if _, err := NewDefault("deny-all"); err == nil {
		t.Error("unknown policy accepted")
	}
}
