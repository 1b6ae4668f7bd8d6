package local

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/policy"
)

func addrsOf(t *testing.T, u *apiv1.Update) []string {
	t.Helper()
	var out []string
	switch x := u.GetUpdate().(type) {
	case *apiv1.Update_Add:
		for _, a := range x.Add.GetAddrs() {
			out = append(out, fmt.Sprintf("%s:%d", a.GetAddr().GetIp(), a.GetAddr().GetPort()))
		}
	case *apiv1.Update_Remove:
		for _, a := range x.Remove.GetAddrs() {
			out = append(out, fmt.Sprintf("%s:%d", a.GetIp(), a.GetPort()))
		}
	default:
		t.Fatalf("update %v has no addresses", u)
	}
	sort.Strings(out)
	return out
}

func wantAdd(t *testing.T, u *apiv1.Update, addrs ...string) *apiv1.AddSet {
	t.Helper()
	if u.GetAdd() == nil {
		t.Fatalf("got %v, want Add %v", u, addrs)
	}
	if got := strings.Join(addrsOf(t, u), ","); got != strings.Join(addrs, ",") {
		t.Fatalf("Add %s, want %s", got, strings.Join(addrs, ","))
	}
	return u.GetAdd()
}

func wantRemove(t *testing.T, u *apiv1.Update, addrs ...string) {
	t.Helper()
	if u.GetRemove() == nil {
		t.Fatalf("got %v, want Remove %v", u, addrs)
	}
	if got := strings.Join(addrsOf(t, u), ","); got != strings.Join(addrs, ",") {
		t.Fatalf("Remove %s, want %s", got, strings.Join(addrs, ","))
	}
}

func wantNoEndpoints(t *testing.T, u *apiv1.Update, exists bool) {
	t.Helper()
	if u.GetNoEndpoints() == nil || u.GetNoEndpoints().GetExists() != exists {
		t.Fatalf("got %v, want NoEndpoints{exists:%v}", u, exists)
	}
}

func TestDestinationFirstMessage(t *testing.T) {
	e := startController(t, meshYAML)
	conn := e.dial(t, nil)

	add := wantAdd(t, destinationStream(t, conn, "books.demo:80", "").next(t), "127.0.0.1:4243", "127.0.0.2:4243")
	if add.GetMetricLabels()["service"] != "books" || add.GetMetricLabels()["namespace"] != "demo" {
		t.Errorf("set labels %v", add.GetMetricLabels())
	}
	var v1, v2 *apiv1.WeightedAddr
	for _, a := range add.GetAddrs() {
		if a.GetAddr().GetIp() == "127.0.0.1" {
			v1 = a
		} else {
			v2 = a
		}
	}
	want := &apiv1.WeightedAddr{
		Addr:         &apiv1.TcpAddress{Ip: "127.0.0.1", Port: 4243},
		Weight:       1,
		MetricLabels: map[string]string{"workload": "books-v1", "namespace": "demo", "version": "v1"},
		TlsIdentity: &apiv1.TlsIdentity{
			SpiffeId:   "spiffe://cluster.local/ns/demo/sa/books",
			ServerName: "books.demo.serviceaccount.identity.cluster.local",
		},
		ProtocolHint: &apiv1.ProtocolHint{Protocol: apiv1.ProtocolHint_HTTP1},
		Zone:         "zone-a",
		TargetPort:   9101,
	}
	if !proto.Equal(v1, want) {
		t.Errorf("books-v1 endpoint\n got %v\nwant %v", v1, want)
	}
	if v2.GetWeight() != 3 || v2.GetTargetPort() != 9102 || v2.GetZone() != "" {
		t.Errorf("books-v2 endpoint %v", v2)
	}

	wantNoEndpoints(t, destinationStream(t, conn, "empty.demo:80", "").next(t), true)
	wantNoEndpoints(t, destinationStream(t, conn, "nothere.demo:80", "").next(t), false)
	wantNoEndpoints(t, destinationStream(t, conn, "books.demo:81", "").next(t), false)

	// A workload's proxy address resolves to that workload alone.
	ip := wantAdd(t, destinationStream(t, conn, "127.0.0.1:4250", "").next(t), "127.0.0.1:4250")
	if id := ip.GetAddrs()[0].GetTlsIdentity().GetSpiffeId(); id != webID.String() {
		t.Errorf("ip:port identity %q", id)
	}
	wantNoEndpoints(t, destinationStream(t, conn, "127.0.0.9:4250", "").next(t), false)

	// Bad paths are refused.
	s := destinationStream(t, conn, "books.demo", "")
	select {
	case err := <-s.errc:
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("bad path: %v, want InvalidArgument", err)
		}
	case m := <-s.ch:
		t.Fatalf("bad path got %v", m)
	}
}

func TestDestinationAuthorityForms(t *testing.T) {
	e := startController(t, meshYAML)
	conn := e.dial(t, nil)
	ref := destinationStream(t, conn, "books.demo:80", "").next(t)
	for _, tt := range []struct{ path, caller string }{
		{"books.demo.svc:80", ""},
		{"books.demo.svc.cluster.local:80", ""},
		{"Books.Demo.Svc.Cluster.Local.:80", ""},
		{"books:80", webID.String()},
	} {
		got := destinationStream(t, conn, tt.path, tt.caller).next(t)
		if !proto.Equal(got, ref) {
			t.Errorf("%s (caller %q):\n got %v\nwant %v", tt.path, tt.caller, got, ref)
		}
	}
	// Without a caller namespace a bare name is unknown.
	wantNoEndpoints(t, destinationStream(t, conn, "books:80", "").next(t), false)
}

func TestDestinationFollowsFileEdits(t *testing.T) {
	e := startController(t, meshYAML)
	conn := e.dial(t, nil)
	books := destinationStream(t, conn, "books.demo:80", "")
	wantAdd(t, books.next(t), "127.0.0.1:4243", "127.0.0.2:4243")
	empty := destinationStream(t, conn, "empty.demo:80", "")
	wantNoEndpoints(t, empty.next(t), true)
	unknown := destinationStream(t, conn, "later.demo:80", "")
	wantNoEndpoints(t, unknown.next(t), false)

	// Atomic rename: web now backs "empty", and a new service appears.
	step1 := strings.Replace(meshYAML, "    proxyAddr: 127.0.0.1:4250\n", "    proxyAddr: 127.0.0.1:4250\n    endpoints: [{service: empty, port: 80}]\n", 1) +
		"" // keep services as they are
	step1 = strings.Replace(step1, "  - name: empty\n", "  - name: later\n    namespace: demo\n    ports: [{port: 80}]\n  - name: empty\n", 1)
	e.writeAtomic(t, step1)
	wantAdd(t, empty.next(t), "127.0.0.1:4250")
	wantNoEndpoints(t, unknown.next(t), true)

	// In-place write: books-v1 leaves books, books-v2 changes weight.
	step2 := strings.Replace(step1, "      - service: books\n        port: 80\n        targetPort: 9101\n", "", 1)
	step2 = strings.Replace(step2, "weight: 3", "weight: 5", 1)
	e.writeInPlace(t, step2)
	u := books.next(t)
	if wantAdd(t, u, "127.0.0.2:4243").GetAddrs()[0].GetWeight() != 5 {
		t.Fatalf("changed endpoint not re-added with the new weight: %v", u)
	}
	wantRemove(t, books.next(t), "127.0.0.1:4243")

	// A broken edit is refused and counted; streams see nothing of it.
	errorsBefore := value(e.c.Metrics.ConfigReloads.WithLabelValues("error"))
	e.writeAtomic(t, strings.Replace(step2, "targetPort: 9102", "targetPort: 99999", 1))
	eventually(t, "the reload error metric", func() bool {
		return value(e.c.Metrics.ConfigReloads.WithLabelValues("error")) == errorsBefore+1
	})
	if value(e.c.Metrics.ConfigLastValid) != 0 {
		t.Error("last_reload_successful not 0 after a bad edit")
	}
	if !strings.Contains(e.get(t, "/metrics"), `trellis_controller_config_reloads_total{result="error"} 1`) {
		t.Error("/metrics does not show the reload error")
	}
	// New streams are still served from the last good config.
	wantAdd(t, destinationStream(t, conn, "books.demo:80", "").next(t), "127.0.0.2:4243")

	// The next good edit is the next thing streams see: the set empties.
	step3 := strings.Replace(step2, "      - {service: books, port: 80, targetPort: 9102, weight: 5}\n", "", 1)
	e.writeAtomic(t, step3)
	wantRemove(t, books.next(t), "127.0.0.2:4243")
	wantNoEndpoints(t, books.next(t), true)

	// Deleting the service: still empty, but no longer existing.
	step4 := strings.Replace(step3, "  - name: books\n    namespace: demo\n    ports:\n      - port: 80\n        protocol: http\n", "", 1)
	e.writeAtomic(t, step4)
	wantNoEndpoints(t, books.next(t), false)

	// And back: Add with the endpoint, never a NoEndpoints first.
	e.writeAtomic(t, meshYAML)
	wantAdd(t, books.next(t), "127.0.0.1:4243", "127.0.0.2:4243")
	if value(e.c.Metrics.ConfigLastValid) != 1 {
		t.Error("last_reload_successful not 1 after a good edit")
	}
}

func TestManyConcurrentStreams(t *testing.T) {
	e := startController(t, meshYAML)
	const conns, perConn = 4, 50
	var streams []*stream[*apiv1.Update]
	for range conns {
		conn := e.dial(t, nil)
		for range perConn {
			streams = append(streams, destinationStream(t, conn, "books.demo:80", ""))
		}
	}
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Add(1)
		go func() { defer wg.Done(); wantAdd(t, s.next(t), "127.0.0.1:4243", "127.0.0.2:4243") }()
	}
	wg.Wait()
	eventually(t, "the stream gauge", func() bool { return value(e.c.Metrics.DestinationStreams) == conns*perConn })

	e.writeAtomic(t, strings.Replace(meshYAML, "proxyAddr: 127.0.0.2:4243", "proxyAddr: 127.0.0.3:4243", 1))
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wantAdd(t, s.next(t), "127.0.0.3:4243")
			wantRemove(t, s.next(t), "127.0.0.2:4243")
		}()
	}
	wg.Wait()

	// Client cancellation ends every server stream.
	for _, s := range streams {
		s.cancel()
	}
	eventually(t, "streams to close", func() bool { return value(e.c.Metrics.DestinationStreams) == 0 })
}

func TestRoutesAndPolicyFirstMessage(t *testing.T) {
	e := startController(t, meshYAML)
	conn := e.dial(t, nil)
	dst := apiv1.NewDestinationClient(conn)
	routes := openStream[*apiv1.RouteConfig](t, func(ctx context.Context) (interface {
		Recv() (*apiv1.RouteConfig, error)
	}, error) {
		return dst.GetRoutes(ctx, &apiv1.GetDestination{Path: "books.demo:80"})
	})
	rc := routes.next(t)
	if rc.GetService() != "books.demo.svc.cluster.local:80" || len(rc.GetRoutes()) != 0 {
		t.Fatalf("route config %v", rc)
	}

	// Only books itself may watch its policy: its certificate first.
	csr, cert := csrFor(t, booksID)
	resp, err := apiv1.NewIdentityClient(conn).Certify(context.Background(), &apiv1.CertifyRequest{
		Identity: booksID.String(), Token: []byte(tokenV2), CertificateSigningRequest: csr,
	})
	if err != nil {
		t.Fatal(err)
	}
	cert.Certificate = resp.Chain
	pol := apiv1.NewPolicyClient(e.dial(t, cert))
	inbound := openStream[*apiv1.ServerPolicy](t, func(ctx context.Context) (interface {
		Recv() (*apiv1.ServerPolicy, error)
	}, error) {
		return pol.WatchInbound(ctx, &apiv1.InboundPolicyRequest{Workload: booksID.String(), Port: 9101})
	})
	p := inbound.next(t)
	// The default answer: the proxy's configured default applies.
	if !proto.Equal(p, policy.Default(apiv1.ProtocolHint_HTTP1)) || p.GetSource() != "default" || p.GetAccess() != apiv1.AccessPolicy_ACCESS_UNSPECIFIED {
		t.Fatalf("policy %v", p)
	}
	// Streams stay open: a store change that alters the port's protocol is pushed.
	e.writeAtomic(t, strings.Replace(meshYAML, "        protocol: http\n", "        protocol: opaque\n", 1))
	if p := inbound.next(t); p.GetProtocol() != apiv1.ProtocolHint_OPAQUE {
		t.Fatalf("policy after edit %v", p)
	}
}

func TestShutdownEndsStreams(t *testing.T) {
	e := startController(t, meshYAML)
	s := destinationStream(t, e.dial(t, nil), "books.demo:80", "")
	s.next(t)
	if !strings.Contains(e.get(t, "/ready"), "ready") {
		t.Fatal("not ready")
	}
	e.stop()
	select {
	case err := <-s.errc:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("stream ended with %v, want Unavailable", err)
		}
	case m := <-s.ch:
		t.Fatalf("unexpected message %v", m)
	}
	if err := e.c.Wait(); err != nil {
		t.Fatal(err)
	}
}
