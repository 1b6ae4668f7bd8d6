package policy_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/policy"
	"github.com/trellis-mesh/trellis/controller/policy/policytest"
)

// podSource answers with the pod it was asked about, so the test sees
// which entry point the service called.
type podSource struct{}

func (podSource) Resolve(w string, _ uint32) (*apiv1.ServerPolicy, <-chan struct{}, func()) {
	return &apiv1.ServerPolicy{Name: "by-identity"}, nil, func() {}
}

func (podSource) ResolvePod(_, pod string, _ uint32) (*apiv1.ServerPolicy, <-chan struct{}, func()) {
	return &apiv1.ServerPolicy{Name: "pod/" + pod}, nil, func() {}
}

type stream = policytest.Stream

const web = "spiffe://cluster.local/ns/shop/sa/web"

// watch starts a stream as caller and returns its first answer, or the
// error that ended it first.
func watch(t *testing.T, svc *policy.Service, ctx context.Context, caller string, req *apiv1.InboundPolicyRequest) (*apiv1.ServerPolicy, error) {
	t.Helper()
	if caller != "" {
		ctx = policytest.CallerContext(t, ctx, caller)
	}
	s := &stream{Ctx: ctx, Out: make(chan *apiv1.ServerPolicy, 1)}
	errc := make(chan error, 1)
	go func() { errc <- svc.WatchInbound(req, s) }()
	select {
	case p := <-s.Out:
		return p, nil
	case err := <-errc:
		return nil, err
	case <-time.After(time.Minute):
		t.Fatal("no answer and no error")
		return nil, nil
	}
}

func TestWatchInboundCallerMustBeTheWorkload(t *testing.T) {
	m := metrics.New()
	svc := &policy.Service{Source: podSource{}, Metrics: m}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name, caller string
		req          *apiv1.InboundPolicyRequest
		code         codes.Code
		answer       string
	}{
		{"no certificate", "", &apiv1.InboundPolicyRequest{Workload: web, Port: 80}, codes.PermissionDenied, ""},
		{"another workload's policy", "spiffe://cluster.local/ns/shop/sa/attacker", &apiv1.InboundPolicyRequest{Workload: web, Port: 80}, codes.PermissionDenied, ""},
		{"bad pod name", web, &apiv1.InboundPolicyRequest{Workload: web, Port: 80, Pod: "Web_1"}, codes.InvalidArgument, ""},
		{"bad port", web, &apiv1.InboundPolicyRequest{Workload: web, Port: 70000}, codes.InvalidArgument, ""},
		{"own, by identity", web, &apiv1.InboundPolicyRequest{Workload: web, Port: 80}, codes.OK, "by-identity"},
		{"own, by pod", web, &apiv1.InboundPolicyRequest{Workload: web, Port: 80, Pod: "web-1"}, codes.OK, "pod/web-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := watch(t, svc, ctx, tc.caller, tc.req)
			if status.Code(err) != tc.code || p.GetName() != tc.answer {
				t.Fatalf("got %v, %v; want code %v, answer %q", p, err, tc.code, tc.answer)
			}
		})
	}
	if n := value(m.PolicyStreamsRefused.WithLabelValues(policy.RefusedIdentity)); n != 2 {
		t.Errorf("refused for identity: %v, want 2", n)
	}
}

func TestWatchInboundStreamsPerCallerCapped(t *testing.T) {
	m := metrics.New()
	svc := &policy.Service{Source: podSource{}, Metrics: m, MaxStreamsPerCaller: 3}
	ctx, cancel := context.WithCancel(context.Background())
	conn := func(ip byte) context.Context {
		return peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, ip), Port: 40000}})
	}
	req := &apiv1.InboundPolicyRequest{Workload: web, Port: 80}
	for i := range 3 {
		if _, err := watch(t, svc, conn(1), web, req); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if _, err := watch(t, svc, conn(1), web, req); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("stream over the cap: %v, want ResourceExhausted", err)
	}
	// Another proxy of the same identity (a replica: another connection)
	// is not held back by the first one's streams.
	if _, err := watch(t, svc, conn(2), web, req); err != nil {
		t.Fatalf("another connection of the same identity: %v", err)
	}
	// Another identity is not held back by web's streams.
	other := "spiffe://cluster.local/ns/shop/sa/books"
	if _, err := watch(t, svc, ctx, other, &apiv1.InboundPolicyRequest{Workload: other, Port: 80}); err != nil {
		t.Fatalf("another caller: %v", err)
	}
	if n := value(m.PolicyStreamsRefused.WithLabelValues(policy.RefusedLimit)); n != 1 {
		t.Errorf("refused for the limit: %v, want 1", n)
	}
	// Closed streams give their places back.
	cancel()
	deadline := time.Now().Add(time.Minute)
	for value(m.PolicyStreams) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("streams did not close")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := watch(t, svc, peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 40000}}), web, req); err != nil {
		t.Fatalf("after the others closed: %v", err)
	}
}

func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue() + d.GetGauge().GetValue()
}
