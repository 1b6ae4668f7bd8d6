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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	apiv1.RegisterDestinationServer(srv, &Service{Source: oneService{notify.NewTopics()}, Routes: routes, Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler), Done: make(chan struct{})})
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := apiv1.NewDestinationClient(conn).GetRoutes(ctx, &apiv1.GetDestination{
		Path: "books:8080", CallerIdentity: "spiffe://cluster.local/ns/reviews/sa/web"})
	if err != nil {
		t.Fatal(err)
	}
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
