package route

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// table is a fixed Table: compiled rules per service.
type table map[string]*Rules

func (t table) Rules(_ context.Context, svc string) *Rules { return t[svc] }

// named is a table whose control plane names services (Namer).
type named map[string]string

func (named) Rules(context.Context, string) *Rules         { return nil }
func (n named) Service(_ context.Context, a string) string { return n[a] }

func mustCompile(t testing.TB, routes ...*apiv1.Route) *Rules {
	t.Helper()
	rs, err := Compile(routes)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestStage(t *testing.T) {
	bal := new(balance.Balancer)
	known := map[string]bool{"web.ns:80": true, "web.ns:8080": true, "api.ns:80": true, "10.0.0.9:5432": true}
	resolve := func(_ context.Context, a string) (bool, *balance.Balancer, error) {
		if a == "broken.ns:80" {
			return false, nil, errors.New("control plane down")
		}
		if known[a] {
			return true, bal, nil
		}
		return false, nil, nil
	}
	orig := netip.MustParseAddrPort("10.0.0.9:8080")
	// A route whose first rule has a custom filter the controller cannot
	// resolve, as routemodel sends it: one backend with no authority.
	custom := table{"web.ns:80": mustCompile(t,
		&apiv1.Route{Name: "ns/r", Matches: []*apiv1.RouteMatch{{PathPrefix: "/admin"}}, Backends: []*apiv1.WeightedBackend{{Weight: 1}}},
		&apiv1.Route{Name: "ns/r", Rule: 1, Backends: []*apiv1.WeightedBackend{{Authority: "api.ns:80", Weight: 1}}},
	)}
	tests := []struct {
		name        string
		transparent bool
		target      string // request target
		host        string // Host header ("" keeps the target's)
		orig        netip.AddrPort
		table       Table
		wantDst     string
		wantAddr    string // passthrough
		wantStatus  int    // error answer
		wantReason  string
	}{
		{name: "explicit: known service", target: "http://web.ns/", wantDst: "web.ns:80"},
		{name: "explicit: port kept", target: "/", host: "web.ns:8080", wantDst: "web.ns:8080"},
		{name: "explicit: unknown service", target: "/", host: "nope.ns", wantStatus: 502, wantReason: proxyerr.ReasonUnknownService},
		{name: "explicit: control plane error", target: "/", host: "broken.ns", wantStatus: 503, wantReason: proxyerr.ReasonNoEndpoints},
		{name: "explicit: no host", target: "/", host: "-", wantStatus: 400, wantReason: proxyerr.ReasonBadRequest},
		{name: "route to another backend", target: "/", host: "web.ns", table: table{"web.ns:80": mustCompile(t, &apiv1.Route{
			Name: "ns/r", Backends: []*apiv1.WeightedBackend{{Authority: "api.ns:80", Weight: 1}},
		})}, wantDst: "api.ns:80"},
		{name: "no route keeps the authority", target: "/", host: "web.ns", table: table{}, wantDst: "web.ns:80"},
		{name: "no matching rule answers 404", target: "/", host: "web.ns", table: table{"web.ns:80": mustCompile(t, &apiv1.Route{
			Name: "ns/r", Matches: []*apiv1.RouteMatch{{PathPrefix: "/x"}}, Backends: []*apiv1.WeightedBackend{{Authority: "api.ns:80", Weight: 1}},
		})}, wantStatus: 404, wantReason: proxyerr.ReasonNoRoute},
		{name: "routes of another service do not apply", target: "/", host: "web.ns:8080", table: table{"web.ns:80": mustCompile(t, &apiv1.Route{
			Name: "ns/r", Matches: []*apiv1.RouteMatch{{PathPrefix: "/x"}}, Backends: []*apiv1.WeightedBackend{{Authority: "api.ns:80", Weight: 1}},
		})}, wantDst: "web.ns:8080"},
		{name: "unknown backend", target: "/", host: "web.ns", table: table{"web.ns:80": mustCompile(t, &apiv1.Route{
			Name: "ns/r", Backends: []*apiv1.WeightedBackend{{Authority: "gone.ns:80", Weight: 1}},
		})}, wantStatus: 503, wantReason: proxyerr.ReasonNoEndpoints},
		{name: "every weight 0", target: "/", host: "web.ns", table: table{"web.ns:80": mustCompile(t, &apiv1.Route{
			Name: "ns/r", Backends: []*apiv1.WeightedBackend{{Authority: "api.ns:80"}, {Authority: "web.ns:80"}},
		})}, wantStatus: 500, wantReason: proxyerr.ReasonNoBackend},
		{name: "unresolved backend (no authority) answers 500", target: "/", host: "web.ns", table: table{"web.ns:80": mustCompile(t, &apiv1.Route{
			Name: "ns/r", Backends: []*apiv1.WeightedBackend{{Weight: 1}},
		})}, wantStatus: 500, wantReason: proxyerr.ReasonNoBackend},
		{name: "a rule with an unresolved custom filter answers 500", target: "/admin/users", host: "web.ns", table: custom, wantStatus: 500, wantReason: proxyerr.ReasonNoBackend},
		{name: "the other rule of that route serves", target: "/books", host: "web.ns", table: custom, wantDst: "api.ns:80"},
		{name: "transparent: Host names a service (original port)", transparent: true, target: "/", host: "web.ns", orig: orig, wantDst: "web.ns:8080"},
		{name: "transparent: unknown Host, unknown original destination: passthrough", transparent: true, target: "/", host: "x.example", orig: netip.MustParseAddrPort("10.0.0.7:80"), wantDst: "10.0.0.7:80", wantAddr: "10.0.0.7:80"},
		{name: "transparent: Host names the original destination's service", transparent: true, target: "/", host: "web.ns", orig: orig,
			table: named{"web.ns:8080": "web.ns.svc.cluster.local:8080", "10.0.0.9:8080": "web.ns.svc.cluster.local:8080"}, wantDst: "web.ns:8080"},
		{name: "transparent: Host names another service than the original destination: the address wins", transparent: true, target: "/", host: "api.ns:80",
			orig: netip.MustParseAddrPort("10.0.0.9:5432"), table: named{"api.ns:80": "api.ns.svc.cluster.local:80", "10.0.0.9:5432": "db.ns.svc.cluster.local:5432"}, wantDst: "10.0.0.9:5432"},
		{name: "transparent: original destination not a service: the Host", transparent: true, target: "/", host: "api.ns:80",
			orig: netip.MustParseAddrPort("10.0.0.9:5432"), table: named{"api.ns:80": "api.ns.svc.cluster.local:80"}, wantDst: "api.ns:80"},
		{name: "transparent: original destination known", transparent: true, target: "/", host: "-", orig: netip.MustParseAddrPort("10.0.0.9:5432"), wantDst: "10.0.0.9:5432"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			switch tt.host {
			case "-":
				r.Host = ""
			case "":
			default:
				r.Host = tt.host
			}
			s := &Stage{Transparent: tt.transparent, Resolve: resolve, Table: tt.table}
			x := &pipeline.Exchange{R: r, Conn: pipeline.Conn{Orig: tt.orig}}
			reached := false
			err := s.Layer(pipeline.HandlerFunc(func(x *pipeline.Exchange) error { reached = true; return nil })).Serve(x)
			if tt.wantStatus != 0 {
				var e *proxyerr.Error
				if !errors.As(err, &e) || e.Status != tt.wantStatus || e.Reason != tt.wantReason {
					t.Fatalf("err %v, want %d %s", err, tt.wantStatus, tt.wantReason)
				}
				if reached {
					t.Fatal("next stage reached after a refusal")
				}
				return
			}
			if err != nil || !reached {
				t.Fatalf("err %v, reached %v", err, reached)
			}
			if x.Dest.Dst != tt.wantDst || x.Dest.Addr != tt.wantAddr || x.Key.DstService != tt.wantDst {
				t.Errorf("dest %+v, dst_service %q; want dst %q addr %q", x.Dest, x.Key.DstService, tt.wantDst, tt.wantAddr)
			}
			if (x.Dest.Balancer != nil) == (tt.wantAddr != "") {
				t.Errorf("balancer %v with passthrough address %q", x.Dest.Balancer, tt.wantAddr)
			}
		})
	}
}
