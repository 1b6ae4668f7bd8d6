package e2e

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"github.com/trellis-mesh/trellis/test/harness"
)

// TestGRPCReplayedWhenAppGone: of two endpoints, one's app has exited
// while its proxy still serves (a pod that terminates before the caller
// learns it). A gRPC call's body has no declared length; the caller's
// proxy keeps it as it is sent, so every call sent to the endpoint whose
// app is gone (answered "not processed") is sent to the other one with
// its message, and none fails.
func TestGRPCReplayedWhenAppGone(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a mesh")
	}
	requireBinaries(t)
	live := startApp(t, "echo-2")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := ln.Addr().String()
	_ = ln.Close() // the app that exited: nothing listens
	store := harness.Store{
		Services: []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client"},
			{Name: "echo-1", Namespace: ns, ServiceAccount: "echo", Endpoints: []harness.Endpoint{{Service: "echo", Port: 80, TargetPort: port(t, gone)}}},
			{Name: "echo-2", Namespace: ns, ServiceAccount: "echo", Endpoints: []harness.Endpoint{{Service: "echo", Port: 80, TargetPort: port(t, live.Addr)}}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	servers := []*harness.Proxy{
		m.StartProxy(harness.ProxySpec{Workload: "echo-1", AppAddr: gone}),
		m.StartProxy(harness.ProxySpec{Workload: "echo-2", AppAddr: live.Addr}),
	}
	client := m.StartProxy(harness.ProxySpec{Workload: "client"})
	for _, px := range append(servers, client) {
		if err := px.WaitReady(harness.ReadyTimeout); err != nil {
			t.Fatalf("%v\n%s", err, px.Process.LogTail(30))
		}
	}
	ec := demopb.NewEchoClient(dialGRPC(t, client.OutboundAddr))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	replayed := func() float64 {
		ms, err := client.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ms.Value("trellis_retries_total", map[string]string{"reason": "unprocessed"})
	}
	calls := 0
	for ; calls < 200 && (calls < 20 || replayed() == 0); calls++ {
		msg := fmt.Sprintf("message %d", calls)
		resp, err := ec.Unary(ctx, &demopb.EchoRequest{Payload: []byte(msg)})
		if err != nil {
			t.Fatalf("call %d: %v\n%s", calls, err, client.Process.LogTail(15))
		}
		if string(resp.GetPayload()) != msg || resp.GetServedBy() != "echo-2" {
			t.Fatalf("call %d answered %q by %q, want %q by echo-2", calls, resp.GetPayload(), resp.GetServedBy(), msg)
		}
	}
	n := replayed()
	if n == 0 {
		t.Fatalf("no call of %d went to the endpoint whose app is gone: the test did not exercise the replay", calls)
	}
	t.Logf("%d gRPC calls, all answered by echo-2; %.0f sent there again after echo-1's proxy said its app never saw them", calls, n)
}
