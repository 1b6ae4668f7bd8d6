package destination

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/notify"
)

// oneService names the service port books.shop:8080 for every authority.
type oneService struct{ topics *notify.Topics }

func (s oneService) Resolve(authority.Authority, string) (Resolution, <-chan struct{}, func()) {
	ch, release := s.topics.Acquire("endpoints")
	return Resolution{Service: "books.shop.svc.cluster.local:8080"}, ch, release
}

// nsRoutes answers one route named after the service and the caller's
// namespace, and a version bumped by set.
type nsRoutes struct {
	topics *notify.Topics
	mu     sync.Mutex
	name   string
}

func (r *nsRoutes) set(name string) {
	r.mu.Lock()
	r.name = name
	r.mu.Unlock()
	r.topics.Notify("routes")
}

func (r *nsRoutes) Routes(svc ServicePort, callerNS string) ([]*apiv1.Route, <-chan struct{}, func()) {
	ch, release := r.topics.Acquire("routes")
	r.mu.Lock()
	defer r.mu.Unlock()
	return []*apiv1.Route{{Name: svc.Namespace + "/" + svc.Name + "/" + callerNS + "/" + r.name}}, ch, release
}

// GetRoutes answers the routes of the service port the path names, for
// the caller's namespace, and again when they change, over real gRPC.
func TestGetRoutesFollowsRoutes(t *testing.T) {
	routes := &nsRoutes{topics: notify.NewTopics(), name: "v1"}
	s := openRoutes(t, &Service{Source: oneService{notify.NewTopics()}, Routes: routes})
	for _, want := range []string{"shop/books/reviews/v1", "shop/books/reviews/v2"} {
		rc, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if rc.GetService() != "books.shop.svc.cluster.local:8080" || len(rc.GetRoutes()) != 1 || rc.GetRoutes()[0].GetName() != want {
			t.Fatalf("got %v, want service books.shop and route %s", rc, want)
		}
		routes.set("v2")
	}
}

func TestParseServicePort(t *testing.T) {
	for in, want := range map[string]ServicePort{
		"books.shop.svc.cluster.local:8080": {Namespace: "shop", Name: "books", Port: 8080},
		"a.b.svc.example.org:1":             {Namespace: "b", Name: "a", Port: 1},
		"books.shop.cluster.local:8080":     {},
		"books.shop.svc:8080":               {},
		"10.0.0.1:8080":                     {},
		"books:8080":                        {},
	} {
		got, ok := ParseServicePort(in)
		if got != want || ok != (want != ServicePort{}) {
			t.Errorf("ParseServicePort(%q) = %+v, %v; want %+v", in, got, ok, want)
		}
	}
}

// rateLimits answers one limit for every Service, its rate set by set.
type rateLimits struct {
	topics *notify.Topics
	mu     sync.Mutex
	rps    uint32
}

func (l *rateLimits) set(rps uint32) {
	l.mu.Lock()
	l.rps = rps
	l.mu.Unlock()
	l.topics.Notify("limits")
}

func (l *rateLimits) OutboundLimit(svc ServicePort) (*apiv1.OutboundLimit, <-chan struct{}, func()) {
	ch, release := l.topics.Acquire("limits")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rps == 0 {
		return nil, ch, release
	}
	return &apiv1.OutboundLimit{Name: svc.Namespace + "/" + svc.Name, RequestsPerSecond: l.rps}, ch, release
}

// GetRoutes carries the Service's outbound limit with its routes, and
// answers again when either changes.
func TestGetRoutesCarriesLimit(t *testing.T) {
	routes := &nsRoutes{topics: notify.NewTopics(), name: "v1"}
	limits := &rateLimits{topics: notify.NewTopics(), rps: 10}
	s := openRoutes(t, &Service{Source: oneService{notify.NewTopics()}, Routes: routes, Limits: limits})
	for i, step := range []struct {
		change func()
		route  string
		rps    uint32
	}{
		{func() {}, "shop/books/reviews/v1", 10},
		{func() { limits.set(20) }, "shop/books/reviews/v1", 20},
		{func() { routes.set("v2") }, "shop/books/reviews/v2", 20},
		{func() { limits.set(0) }, "shop/books/reviews/v2", 0},
	} {
		step.change()
		rc, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(rc.GetRoutes()) != 1 || rc.GetRoutes()[0].GetName() != step.route || rc.GetLimit().GetRequestsPerSecond() != step.rps ||
			(step.rps != 0 && rc.GetLimit().GetName() != "shop/books") {
			t.Fatalf("step %d: got %v, want route %s and %d req/s", i, rc, step.route, step.rps)
		}
	}
}

// openRoutes serves svc over real gRPC on loopback and opens a GetRoutes
// stream of books:8080 for a caller in namespace reviews.
func openRoutes(t *testing.T, svc *Service) apiv1.Destination_GetRoutesClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := destinationClient(t, svc).GetRoutes(ctx, &apiv1.GetDestination{
		Path: "books:8080", CallerIdentity: "spiffe://cluster.local/ns/reviews/sa/web"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// destinationClient serves svc (with metrics, a silent log and a Done
// channel set) over real gRPC on loopback and returns a client of it.
func destinationClient(t *testing.T, svc *Service) apiv1.DestinationClient {
	t.Helper()
	svc.Metrics, svc.Log, svc.Done = metrics.New(), slog.New(slog.DiscardHandler), make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	apiv1.RegisterDestinationServer(srv, svc)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return apiv1.NewDestinationClient(conn)
}
