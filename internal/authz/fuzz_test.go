package authz

import (
	"net/http"
	"net/netip"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzCompileDecide: a hostile ServerPolicy (any bytes the wire may carry)
// either compiles or is refused with an error, never a panic; a compiled
// one decides any call without panicking, and a denial always says why.
func FuzzCompileDecide(f *testing.F) {
	seed := &apiv1.ServerPolicy{Name: "s", Access: apiv1.AccessPolicy_DENY,
		Authorizations: []*apiv1.Authorization{{Name: "a", Identities: []string{web, "*"}, Namespaces: []string{"shop"},
			Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.9.0.0/16"}}}, Networks: []string{"fd00::/8"}}},
		Routes: []*apiv1.InboundRoute{{Name: "r", Matches: []*apiv1.RouteMatch{{PathPrefix: "/a", Method: "GET",
			Headers: []*apiv1.RouteMatch_Header{{Name: "x", Value: "v.*", Regex: true}}}},
			Authorizations: []*apiv1.Authorization{{Name: "o", Unauthenticated: true}}}}}
	b, _ := proto.Marshal(seed)
	f.Add(b, web, "10.1.1.1", "GET", "/a/../b", "v1", true)
	f.Add([]byte{0x32, 0x05, 0x32, 0x03, 0x2f, 0x2f, 0x2f}, "", "::1", "POST", "//", "", false)
	f.Fuzz(func(t *testing.T, wire []byte, id, addr, method, path, hv string, conn bool) {
		var sp apiv1.ServerPolicy
		if proto.Unmarshal(wire, &sp) != nil {
			return
		}
		for _, acc := range []apiv1.AccessPolicy{apiv1.AccessPolicy_DENY, apiv1.AccessPolicy_ACCESS_UNSPECIFIED} {
			p, err := Compile(&sp, Defaults{Access: acc, TrustDomain: "cluster.local"})
			if err != nil {
				if err.Error() == "" {
					t.Fatal("empty error")
				}
				continue
			}
			ip, _ := netip.ParseAddr(addr)
			d := p.Decide(Input{Identity: id, TLS: id != "", ClientIP: ip, Conn: conn, Method: method, Path: path, Header: http.Header{"X": {hv}}})
			if (!d.Allowed || d.Audited) && (d.Reason == "" || d.Msg == "") {
				t.Fatalf("denial without a reason: %+v", d)
			}
			if d.Allowed && !d.Audited && d.Authz == "" {
				t.Fatalf("allowed by nothing: %+v", d)
			}
		}
	})
}
