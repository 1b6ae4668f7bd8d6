package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	gone := goneAddr(t)
	client, ec := grpcMesh(t, gone, live.Addr)
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

// goneAddr is a loopback address nothing listens on: an app that exited.
func goneAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	_ = ln.Close()
	return a
}

// grpcMesh starts a controller, a client proxy and one server proxy per
// app address (workloads echo-1, echo-2, ... of the Service echo), and
// returns the client proxy and an Echo client through it.
func grpcMesh(t *testing.T, apps ...string) (*harness.Proxy, demopb.EchoClient) {
	t.Helper()
	store := harness.Store{
		Services:  []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{{Name: "client", Namespace: ns, ServiceAccount: "client"}},
	}
	for i, a := range apps {
		store.Workloads = append(store.Workloads, harness.Workload{Name: fmt.Sprintf("echo-%d", i+1), Namespace: ns, ServiceAccount: "echo",
			Endpoints: []harness.Endpoint{{Service: "echo", Port: 80, TargetPort: port(t, a)}}})
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	var all []*harness.Proxy
	for i, a := range apps {
		all = append(all, m.StartProxy(harness.ProxySpec{Workload: fmt.Sprintf("echo-%d", i+1), AppAddr: a}))
	}
	client := m.StartProxy(harness.ProxySpec{Workload: "client"})
	waitReady(t, append(all, client)...)
	return client, demopb.NewEchoClient(dialGRPC(t, client.OutboundAddr))
}

// TestGRPCProxyErrorIsStatus: when the mesh itself fails a gRPC call (the
// only endpoint's app is gone), the gRPC client is told UNAVAILABLE with
// the proxy's reason as the status message, not an HTTP 502 with a text
// body that it can only report as a transport error.
func TestGRPCProxyErrorIsStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a mesh")
	}
	requireBinaries(t)
	_, ec := grpcMesh(t, goneAddr(t))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := ec.Unary(ctx, &demopb.EchoRequest{Payload: []byte("hi")})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "connecting to app") || strings.Contains(st.Message(), "content-type") {
		t.Fatalf("got %v, want UNAVAILABLE saying the app could not be reached", err)
	}
	t.Logf("the gRPC client was told: %v", err)
}
