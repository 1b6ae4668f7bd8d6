package policy

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
)

// TestLearnedPortKeepsAnswerWithoutController: a learned port (every app
// port in transparent mode) whose watch the idle sweep closed keeps its
// last answer when the controller is unreachable as its next call comes:
// the default (all-unauthenticated unless configured) must not replace a
// Server's deny during a controller restart. Real Watcher, real Policy
// server on loopback, stopped.
func TestLearnedPortKeepsAnswerWithoutController(t *testing.T) {
	deny := &apiv1.ServerPolicy{Name: "server/a", Access: apiv1.AccessPolicy_DENY, Source: "server"}
	addr, stop := grpctest.Serve(t, "127.0.0.1:0", func(gs *grpc.Server) { apiv1.RegisterPolicyServer(gs, onePolicy{sp: deny}) })
	idle := 100 * time.Millisecond
	w, err := inboundpolicy.New(apiv1.NewPolicyClient(grpctest.Dial(t, addr)), inboundpolicy.Options{
		Workload: meshID, DefaultPolicy: AllUnauthenticated, IdleTimeout: idle,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	e, err := NewEnforcer(EnforcerConfig{Source: w, Default: AllUnauthenticated, TrustDomain: "cluster.local",
		FirstAnswer: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := Caller{ClientIP: netip.MustParseAddr("10.0.0.1"), Port: 8080}
	if err := e.Authorize(context.Background(), c, nil); reasonOf(err) == "" {
		t.Fatalf("the Server's deny did not apply: %v", err)
	}
	stop()
	// Unused for many idle timeouts: the sweep closes the watch.
	time.Sleep(10 * idle)
	e.first = 200 * time.Millisecond // the controller does not answer
	if err := e.Authorize(context.Background(), c, nil); reasonOf(err) == "" {
		t.Fatal("controller gone, watch swept: the port fell back to the default and let the caller in")
	}
}
