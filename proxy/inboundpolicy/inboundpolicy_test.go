package inboundpolicy

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
)

func TestDefault(t *testing.T) {
	for _, tc := range []struct {
		flag   string
		access apiv1.AccessPolicy
		err    bool
	}{
		{"", apiv1.AccessPolicy_ALL_UNAUTHENTICATED, false},
		{AllUnauthenticated, apiv1.AccessPolicy_ALL_UNAUTHENTICATED, false},
		{AllAuthenticated, apiv1.AccessPolicy_ALL_AUTHENTICATED, false},
		{"cluster-authenticated", apiv1.AccessPolicy_CLUSTER_AUTHENTICATED, false},
		{"deny", apiv1.AccessPolicy_DENY, false},
		{"audit", apiv1.AccessPolicy_AUDIT, false},
		{"deny-all", 0, true},
	} {
		p, err := Default(tc.flag)
		if (err != nil) != tc.err {
			t.Fatalf("Default(%q) error = %v", tc.flag, err)
		}
		if err != nil {
			continue
		}
		if p.GetName() != DefaultName || p.GetSource() != "default" || p.GetAccess() != tc.access || len(p.GetAuthorizations()) != 0 {
			t.Fatalf("Default(%q) = %v", tc.flag, p)
		}
		if err := Check(p); err != nil {
			t.Fatalf("Default(%q) fails Check: %v", tc.flag, err)
		}
	}
}

func TestCheck(t *testing.T) {
	authz := func(a *apiv1.Authorization) *apiv1.ServerPolicy {
		return &apiv1.ServerPolicy{Name: "p", Authorizations: []*apiv1.Authorization{a}}
	}
	for _, tc := range []struct {
		name string
		p    *apiv1.ServerPolicy
		bad  string // substring of the error; "" valid
	}{
		{"empty", &apiv1.ServerPolicy{}, ""},
		{"any identity", authz(&apiv1.Authorization{Identities: []string{"*"}}), ""},
		{"exact identity", authz(&apiv1.Authorization{Identities: []string{"spiffe://cluster.local/ns/a/sa/b"}}), ""},
		{"networks", authz(&apiv1.Authorization{Networks: []string{"10.0.0.0/8", "fd00::/64"}}), ""},
		{"grpc", &apiv1.ServerPolicy{Protocol: apiv1.ProtocolHint_GRPC}, ""},
		{"unknown protocol", &apiv1.ServerPolicy{Protocol: 42}, "unknown protocol"},
		{"bad identity", authz(&apiv1.Authorization{Identities: []string{"spiffe://cluster.local/x"}}), "identity"},
		{"bare address is not a network", authz(&apiv1.Authorization{Networks: []string{"10.0.0.1"}}), "network"},
		{"empty namespace", authz(&apiv1.Authorization{Namespaces: []string{""}}), "namespace"},
		{"bad except", authz(&apiv1.Authorization{Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.0.0.0/77"}}}}), "except"},
		{"bad route", &apiv1.ServerPolicy{Routes: []*apiv1.InboundRoute{{Name: "r", Matches: []*apiv1.RouteMatch{{PathPrefix: "x"}}}}}, "path_prefix"},
		{"unknown access", &apiv1.ServerPolicy{Access: 77}, "unknown access"},
	} {
		err := Check(tc.p)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s: error %v, want one about %q", tc.name, err, tc.bad)
		}
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, opts := range []Options{
		{Workload: "spiffe://cluster.local/ns/a/sa/b", DefaultPolicy: "deny-all"},
		{Workload: "not-an-id"},
	} {
		if _, err := New(nil, opts); err == nil {
			t.Errorf("New(%+v) accepted", opts)
		}
	}
}

// recordingPolicy answers every port with its number as the name and
// records the requests.
type recordingPolicy struct {
	apiv1.UnimplementedPolicyServer
	reqs chan *apiv1.InboundPolicyRequest
}

func (s *recordingPolicy) WatchInbound(req *apiv1.InboundPolicyRequest, st grpc.ServerStreamingServer[apiv1.ServerPolicy]) error {
	s.reqs <- req
	if err := st.Send(&apiv1.ServerPolicy{Name: "from-controller", Protocol: apiv1.ProtocolHint_HTTP1}); err != nil {
		return err
	}
	<-st.Context().Done()
	return nil
}

// Get answers from the controller for a watched port, the default for port
// 0 and before any answer, and the configured ports are watched at once.
func TestWatcherOverGRPC(t *testing.T) {
	srv := &recordingPolicy{reqs: make(chan *apiv1.InboundPolicyRequest, 16)}
	addr, _ := grpctest.Serve(t, "127.0.0.1:0", func(gs *grpc.Server) { apiv1.RegisterPolicyServer(gs, srv) })
	cc := grpctest.Dial(t, addr)
	const workload = "spiffe://cluster.local/ns/a/sa/b"
	w, err := New(apiv1.NewPolicyClient(cc), Options{Workload: workload, DefaultPolicy: AllAuthenticated, Ports: []uint16{8080}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	select {
	case req := <-srv.reqs:
		if req.GetWorkload() != workload || req.GetPort() != 8080 {
			t.Fatalf("request = %v", req)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the configured port was not watched")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := w.Get(ctx, 8080)
	if !s.FromController || s.Port != 8080 || s.Policy.GetName() != "from-controller" {
		t.Fatalf("Get(8080) = %+v", s)
	}
	def, _ := Default(AllAuthenticated)
	if s := w.Get(ctx, 0); s.FromController || !proto.Equal(s.Policy, def) {
		t.Fatalf("Get(0) = %+v, want the all-authenticated default", s)
	}
	w.Close()
	if s := w.Get(ctx, 8080); s.FromController || !proto.Equal(s.Policy, def) {
		t.Fatalf("Get after Close = %+v, want the default", s)
	}
}

// TestWatcherCap: past MaxLearnedPorts a new port is reported Unwatched
// (the Enforcer denies it), while the configured ports stay watched
// whatever strangers dial.
func TestWatcherCap(t *testing.T) {
	srv := &recordingPolicy{reqs: make(chan *apiv1.InboundPolicyRequest, 16)}
	addr, _ := grpctest.Serve(t, "127.0.0.1:0", func(gs *grpc.Server) { apiv1.RegisterPolicyServer(gs, srv) })
	w, err := New(apiv1.NewPolicyClient(grpctest.Dial(t, addr)), Options{
		Workload: "spiffe://cluster.local/ns/a/sa/b", Ports: []uint16{8080}, MaxLearnedPorts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s := w.Get(ctx, 9001); !s.FromController || s.Unwatched {
		t.Fatalf("first learned port: %+v", s)
	}
	if s := w.Get(ctx, 9002); s.FromController || !s.Unwatched {
		t.Fatalf("port past the cap: %+v, want Unwatched", s)
	}
	if s := w.Get(ctx, 8080); !s.FromController || s.Unwatched {
		t.Fatalf("configured port: %+v", s)
	}
}
