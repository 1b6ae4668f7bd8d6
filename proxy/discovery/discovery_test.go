package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
)

// destServer is the test's Destination service: each stream gets the
// messages of initial(path) at once, then whatever push sends.
type destServer struct {
	apiv1.UnimplementedDestinationServer
	initial func(path string) []*apiv1.Update
	streams *grpctest.Streams[string, *apiv1.Update]
}

func newDestServer(initial func(path string) []*apiv1.Update) *destServer {
	return &destServer{initial: initial, streams: grpctest.NewStreams[string, *apiv1.Update]()}
}

func (s *destServer) Get(req *apiv1.GetDestination, stream grpc.ServerStreamingServer[apiv1.Update]) error {
	return s.streams.Serve(stream.Context(), req.GetPath(), s.initial(req.GetPath()), stream.Send)
}

func (s *destServer) push(path string, u *apiv1.Update) { s.streams.Push(path, u) }

func (s *destServer) counts(path string) (gets, active int) { return s.streams.Counts(path) }

// serve runs srv on addr ("127.0.0.1:0" for a new port) until stop is called.
func serve(t *testing.T, addr string, srv *destServer) (string, func()) {
	t.Helper()
	return grpctest.Serve(t, addr, func(gs *grpc.Server) { apiv1.RegisterDestinationServer(gs, srv) })
}

func dial(t *testing.T, addr string) apiv1.DestinationClient {
	t.Helper()
	return apiv1.NewDestinationClient(grpctest.Dial(t, addr))
}

func newResolver(t *testing.T, client apiv1.DestinationClient, opts Options) (*Resolver, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	if opts.MinBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	}
	r := NewResolver(client, opts)
	t.Cleanup(r.Close)
	return r, reg
}

func addr(ip string, port uint32) *apiv1.TcpAddress { return &apiv1.TcpAddress{Ip: ip, Port: port} }

func add(addrs ...string) *apiv1.Update {
	set := &apiv1.AddSet{}
	for _, a := range addrs {
		ap, err := net.ResolveTCPAddr("tcp", a)
		if err != nil {
			panic(err)
		}
		set.Addrs = append(set.Addrs, &apiv1.WeightedAddr{
			Addr:        addr(ap.IP.String(), uint32(ap.Port)),
			Weight:      1,
			TlsIdentity: &apiv1.TlsIdentity{SpiffeId: "spiffe://cluster.local/ns/books/sa/books"},
		})
	}
	return &apiv1.Update{Update: &apiv1.Update_Add{Add: set}}
}

func remove(addrs ...string) *apiv1.Update {
	set := &apiv1.RemoveSet{}
	for _, a := range addrs {
		ap, _ := net.ResolveTCPAddr("tcp", a)
		set.Addrs = append(set.Addrs, addr(ap.IP.String(), uint32(ap.Port)))
	}
	return &apiv1.Update{Update: &apiv1.Update_Remove{Remove: set}}
}

func noEndpoints(exists bool) *apiv1.Update {
	return &apiv1.Update{Update: &apiv1.Update_NoEndpoints{NoEndpoints: &apiv1.NoEndpoints{Exists: exists}}}
}

func addrsOf(b *balance.Balancer) []string {
	var out []string
	for _, e := range b.Endpoints() {
		out = append(out, e.Addr)
	}
	slices.Sort(out)
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitAddrs(t *testing.T, svc *Service, want ...string) {
	t.Helper()
	slices.Sort(want)
	waitFor(t, fmt.Sprintf("endpoints %v", want), func() bool { return slices.Equal(addrsOf(svc.Balancer()), want) })
}

// metricValue is the value of a series, -1 when absent.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	if v, ok := grpctest.Metric(t, reg, name, labels); ok {
		return v
	}
	return -1
}

const books = "books.demo:80"

func TestSnapshotAndUpdates(t *testing.T) {
	srv := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{add("10.0.0.1:8080", "10.0.0.2:8080")} })
	a, _ := serve(t, "127.0.0.1:0", srv)
	r, reg := newResolver(t, dial(t, a), Options{CallerIdentity: "spiffe://cluster.local/ns/web/sa/web"})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := r.Resolve(ctx, books)
	if err != nil {
		t.Fatal(err)
	}
	// The first message is awaited by Resolve: no polling needed here.
	if got := addrsOf(svc.Balancer()); !slices.Equal(got, []string{"10.0.0.1:8080", "10.0.0.2:8080"}) {
		t.Fatalf("snapshot endpoints = %v", got)
	}
	if !svc.Exists() || svc.Authority() != books {
		t.Fatalf("Exists %v, Authority %q", svc.Exists(), svc.Authority())
	}
	if id := svc.Balancer().Endpoints()[0].Identity; id.String() != "spiffe://cluster.local/ns/books/sa/books" {
		t.Fatalf("identity = %v", id)
	}

	srv.push(books, add("10.0.0.3:8080"))
	waitAddrs(t, svc, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")
	srv.push(books, remove("10.0.0.1:8080"))
	waitAddrs(t, svc, "10.0.0.2:8080", "10.0.0.3:8080")

	// Same address, new metadata: changed in place.
	changed := add("10.0.0.2:8080")
	changed.GetAdd().Addrs[0].Weight = 7
	srv.push(books, changed)
	waitFor(t, "weight change", func() bool {
		for _, e := range svc.Balancer().Endpoints() {
			if e.Addr == "10.0.0.2:8080" {
				return e.Weight == 7
			}
		}
		return false
	})

	srv.push(books, noEndpoints(true))
	waitAddrs(t, svc)
	if !svc.Exists() {
		t.Fatal("NoEndpoints{exists:true} made the service unknown")
	}
	srv.push(books, add("[fd00::1]:80"))
	waitAddrs(t, svc, "[fd00::1]:80")

	if got := metricValue(t, reg, "trellis_endpoints", map[string]string{"dst_service": books}); got != 1 {
		t.Errorf("trellis_endpoints = %v, want 1", got)
	}
	for kind, want := range map[string]float64{"add": 4, "remove": 1, "no_endpoints": 1} {
		if got := metricValue(t, reg, "trellis_discovery_updates_total", map[string]string{"kind": kind}); got != want {
			t.Errorf("updates{kind=%s} = %v, want %v", kind, got, want)
		}
	}
	dest := map[string]string{"service": "destination"}
	if got := metricValue(t, reg, "trellis_control_plane_connected", dest); got != 1 {
		t.Errorf("connected = %v, want 1", got)
	}
	if got := metricValue(t, reg, "trellis_control_plane_watches", dest); got != 1 {
		t.Errorf("watches = %v, want 1", got)
	}
	if got := metricValue(t, reg, "trellis_control_plane_updates_total", map[string]string{"service": "destination", "result": "ok"}); got != 6 {
		t.Errorf("control-plane updates = %v, want 6", got)
	}
}

// TestSelfEndpoint: the pod's own endpoint is dialled at its inbound
// listener with the app's port named, and is removed by the address the
// control plane knows it by.
func TestSelfEndpoint(t *testing.T) {
	srv := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{add("10.0.0.5:8080", "10.0.0.6:8080")} })
	a, _ := serve(t, "127.0.0.1:0", srv)
	r, _ := newResolver(t, dial(t, a), Options{Self: netip.MustParseAddrPort("10.0.0.5:4143")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := r.Resolve(ctx, books)
	if err != nil {
		t.Fatal(err)
	}
	waitAddrs(t, svc, "10.0.0.5:4143", "10.0.0.6:8080")
	for _, e := range svc.Balancer().Endpoints() {
		if want := map[string]uint32{"10.0.0.5:4143": 8080}[e.Addr]; e.TargetPort != want {
			t.Errorf("%s: target port %d, want %d", e.Addr, e.TargetPort, want)
		}
	}
	srv.push(books, remove("10.0.0.5:8080"))
	waitAddrs(t, svc, "10.0.0.6:8080")
}

func TestUnknownService(t *testing.T) {
	srv := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{noEndpoints(false)} })
	a, _ := serve(t, "127.0.0.1:0", srv)
	r, _ := newResolver(t, dial(t, a), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := r.Resolve(ctx, "nope.demo:80")
	if err != nil {
		t.Fatal(err)
	}
	if svc.Exists() {
		t.Fatal("unknown service reported as existing")
	}
	if _, err := svc.Balancer().Pick(nil); !errors.Is(err, balance.ErrNoEndpoints) {
		t.Fatalf("Pick = %v, want ErrNoEndpoints", err)
	}
}

func TestInvalidEndpointsSkipped(t *testing.T) {
	bad := add("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	bad.GetAdd().Addrs[1].TlsIdentity.SpiffeId = "spiffe://cluster.local/not-an-identity"
	bad.GetAdd().Addrs[2].Addr.Ip = "not-an-ip"
	srv := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{bad} })
	a, _ := serve(t, "127.0.0.1:0", srv)
	r, reg := newResolver(t, dial(t, a), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := r.Resolve(ctx, books)
	if err != nil {
		t.Fatal(err)
	}
	if got := addrsOf(svc.Balancer()); !slices.Equal(got, []string{"10.0.0.1:80"}) {
		t.Fatalf("endpoints = %v, want only the valid one", got)
	}
	if got := metricValue(t, reg, "trellis_discovery_invalid_total", nil); got != 2 {
		t.Fatalf("invalid = %v, want 2", got)
	}
}

func TestNoAnswer(t *testing.T) {
	srv := newDestServer(func(string) []*apiv1.Update { return nil })
	a, _ := serve(t, "127.0.0.1:0", srv)
	r, _ := newResolver(t, dial(t, a), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := r.Resolve(ctx, books)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Resolve = %v, want deadline exceeded and ErrUnavailable", err)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close() // nothing listens there now
	r, reg := newResolver(t, dial(t, a), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = r.Resolve(ctx, books)
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Resolve = %v, want ErrUnavailable from the failed stream", err)
	}
	if got := metricValue(t, reg, "trellis_control_plane_connected", map[string]string{"service": "destination"}); got != 0 {
		t.Fatalf("connected = %v, want 0", got)
	}
}

func TestReconnectKeepsThenReplaces(t *testing.T) {
	srv1 := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{add("10.0.0.1:80", "10.0.0.2:80")} })
	a, stop1 := serve(t, "127.0.0.1:0", srv1)
	r, reg := newResolver(t, dial(t, a), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := r.Resolve(ctx, books)
	if err != nil {
		t.Fatal(err)
	}
	connected := func() float64 {
		return metricValue(t, reg, "trellis_control_plane_connected", map[string]string{"service": "destination"})
	}
	if connected() != 1 {
		t.Fatal("not connected")
	}

	stop1()
	waitFor(t, "disconnect seen", func() bool { return connected() == 0 })
	// Meanwhile the last endpoints stay, and Resolve answers from them.
	again, err := r.Resolve(ctx, books)
	if err != nil || again != svc {
		t.Fatalf("Resolve during outage = %v, %v; want the cached service", again, err)
	}
	if got := addrsOf(svc.Balancer()); !slices.Equal(got, []string{"10.0.0.1:80", "10.0.0.2:80"}) {
		t.Fatalf("endpoints during outage = %v", got)
	}

	// The controller comes back with a different view: its first message
	// replaces the set, it is not merged.
	srv2 := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{add("10.0.0.2:80", "10.0.0.9:80")} })
	serve(t, a, srv2)
	waitAddrs(t, svc, "10.0.0.2:80", "10.0.0.9:80")
	waitFor(t, "reconnected", func() bool { return connected() == 1 })
	if gets, _ := srv2.counts(books); gets != 1 {
		t.Fatalf("new server saw %d streams, want 1", gets)
	}
	if got := metricValue(t, reg, "trellis_control_plane_stream_errors_total", map[string]string{"service": "destination"}); got < 1 {
		t.Fatalf("stream errors = %v, want the broken stream counted", got)
	}
	srv2.push(books, remove("10.0.0.2:80"))
	waitAddrs(t, svc, "10.0.0.9:80")
}

func TestSharedStream(t *testing.T) {
	srv := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{add("10.0.0.1:80")} })
	a, _ := serve(t, "127.0.0.1:0", srv)
	r, _ := newResolver(t, dial(t, a), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 64
	svcs := make([]*Service, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := books
			if i%2 == 1 {
				name = "authors.demo:80"
			}
			svcs[i], errs[i] = r.Resolve(ctx, name)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if svcs[i] != svcs[i%2] {
			t.Fatalf("caller %d got a different Service for the same authority", i)
		}
	}
	if svcs[0] == svcs[1] {
		t.Fatal("different authorities share a Service")
	}
	for _, name := range []string{books, "authors.demo:80"} {
		if gets, _ := srv.counts(name); gets != 1 {
			t.Errorf("%s: %d streams, want 1", name, gets)
		}
	}
}

func TestIdleServiceClosed(t *testing.T) {
	srv := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{add("10.0.0.1:80")} })
	a, _ := serve(t, "127.0.0.1:0", srv)
	r, reg := newResolver(t, dial(t, a), Options{IdleTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.Resolve(ctx, books); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "idle stream closed", func() bool { _, active := srv.counts(books); return active == 0 })
	waitFor(t, "gauge removed", func() bool {
		return metricValue(t, reg, "trellis_endpoints", map[string]string{"dst_service": books}) == -1
	})
	if got := metricValue(t, reg, "trellis_control_plane_watches", map[string]string{"service": "destination"}); got != 0 {
		t.Fatalf("watches = %v after the sweep, want 0", got)
	}
	svc, err := r.Resolve(ctx, books)
	if err != nil {
		t.Fatal(err)
	}
	if gets, _ := srv.counts(books); gets != 2 || svc.Balancer().Len() != 1 {
		t.Fatalf("after reopening: %d streams, %d endpoints", gets, svc.Balancer().Len())
	}
}

func TestBusyServiceNotClosed(t *testing.T) {
	srv := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{add("10.0.0.1:80")} })
	a, _ := serve(t, "127.0.0.1:0", srv)
	r, _ := newResolver(t, dial(t, a), Options{IdleTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := r.Resolve(ctx, books)
	if err != nil {
		t.Fatal(err)
	}
	// Several idle timeouts pass with steady use: one stream throughout.
	end := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(end) {
		svc, err := r.Resolve(ctx, books)
		if err != nil || svc != first {
			t.Fatalf("Resolve = %v, %v", svc, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if gets, active := srv.counts(books); gets != 1 || active != 1 {
		t.Fatalf("streams: %d opened, %d active; want 1, 1", gets, active)
	}
}

func TestClose(t *testing.T) {
	srv := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{add("10.0.0.1:80")} })
	a, _ := serve(t, "127.0.0.1:0", srv)
	r := NewResolver(dial(t, a), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := r.Resolve(ctx, books)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	r.Close() // idempotent
	waitFor(t, "stream closed", func() bool { _, active := srv.counts(books); return active == 0 })
	if _, err := r.Resolve(ctx, books); !errors.Is(err, ErrClosed) {
		t.Fatalf("Resolve after Close = %v, want ErrClosed", err)
	}
	if svc.Balancer().Len() != 1 {
		t.Fatal("Close dropped the endpoints of a returned Service")
	}
}

func TestEmptyAuthority(t *testing.T) {
	r, _ := newResolver(t, dial(t, "127.0.0.1:1"), Options{})
	if _, err := r.Resolve(context.Background(), ""); err == nil {
		t.Fatal("empty authority accepted")
	}
}

// TestMaxServices: with a bound, a new destination past it is refused
// while the watched ones still resolve; the request says exported_only
// when asked to.
func TestMaxServices(t *testing.T) {
	var mu sync.Mutex
	var exportedOnly []bool
	srv := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{noEndpoints(false)} })
	a, _ := serve(t, "127.0.0.1:0", srv)
	client := recordingClient{DestinationClient: dial(t, a), record: func(req *apiv1.GetDestination) {
		mu.Lock()
		exportedOnly = append(exportedOnly, req.GetExportedOnly())
		mu.Unlock()
	}}
	r, _ := newResolver(t, client, Options{MaxServices: 2, ExportedOnly: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range []string{"a.demo:80", "b.demo:80", "a.demo:80"} {
		if _, err := r.Resolve(ctx, a); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
	}
	if _, err := r.Resolve(ctx, "c.demo:80"); !errors.Is(err, ErrTooManyServices) {
		t.Fatalf("a third destination: %v, want ErrTooManyServices", err)
	}
	if _, err := r.Resolve(ctx, "b.demo:80"); err != nil {
		t.Fatalf("a watched destination after the refusal: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(exportedOnly) != 2 || !exportedOnly[0] || !exportedOnly[1] {
		t.Errorf("streams opened with exported_only %v, want two, both set", exportedOnly)
	}
}

// recordingClient sees every GetDestination before it is sent.
type recordingClient struct {
	apiv1.DestinationClient
	record func(*apiv1.GetDestination)
}

func (c recordingClient) Get(ctx context.Context, req *apiv1.GetDestination, opts ...grpc.CallOption) (grpc.ServerStreamingClient[apiv1.Update], error) {
	c.record(req)
	return c.DestinationClient.Get(ctx, req, opts...)
}
