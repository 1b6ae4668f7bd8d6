package route

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
	"github.com/trellis-mesh/trellis/proxy/routes"
)

// destServer answers GetRoutes with the routes set for an authority, and
// sends every change to the streams open; an authority without routes
// set is never answered (a controller that says nothing).
type destServer struct {
	apiv1.UnimplementedDestinationServer
	mu      sync.Mutex
	cfg     map[string]*apiv1.RouteConfig
	changed chan struct{}
}

func (s *destServer) set(authority string, rs ...*apiv1.Route) {
	s.mu.Lock()
	s.cfg[authority] = &apiv1.RouteConfig{Service: authority, Routes: rs}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *destServer) GetRoutes(req *apiv1.GetDestination, st grpc.ServerStreamingServer[apiv1.RouteConfig]) error {
	var sent *apiv1.RouteConfig
	for {
		s.mu.Lock()
		rc, changed := s.cfg[req.GetPath()], s.changed
		s.mu.Unlock()
		if rc != nil && rc != sent {
			if err := st.Send(rc); err != nil {
				return err
			}
			sent = rc
		}
		select {
		case <-changed:
		case <-st.Context().Done():
			return nil
		}
	}
}

// TestWatchedOverGRPC: the real routes client feeds the table; a new
// answer replaces the rules; a service the controller never answers for
// goes on without routes after the bounded wait.
func TestWatchedOverGRPC(t *testing.T) {
	srv := &destServer{cfg: map[string]*apiv1.RouteConfig{}, changed: make(chan struct{})}
	srv.set("books.demo:80", &apiv1.Route{Name: "demo/a"})
	addr, _ := grpctest.Serve(t, "127.0.0.1:0", func(gs *grpc.Server) { apiv1.RegisterDestinationServer(gs, srv) })
	w := routes.New(apiv1.NewDestinationClient(grpctest.Dial(t, addr)), routes.Options{})
	defer w.Close()
	tbl := NewWatched(w, 100*time.Millisecond, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	w.Observe("books.demo:80") // as the resolver does
	var first *Rules
	for first == nil && ctx.Err() == nil {
		first = tbl.Rules(ctx, "books.demo:80")
	}
	if first.Len() != 1 || first.rules[0].Route.GetName() != "demo/a" {
		t.Fatalf("rules %+v", first)
	}
	srv.set("books.demo:80", &apiv1.Route{Name: "demo/b"}, &apiv1.Route{Name: "demo/c"})
	for rs := first; rs.Len() != 2; rs = tbl.Rules(ctx, "books.demo:80") {
		if ctx.Err() != nil {
			t.Fatal("the new answer never applied")
		}
	}

	// Silent: each lookup comes back without routes, the first after the
	// table's wait, the others at once (no timing asserted: a bounded
	// ceiling only).
	for range 200 { // 200 waits of 100 ms would pass the 10 s ceiling
		if rs := tbl.Rules(ctx, "silent.demo:80"); rs != nil {
			t.Fatalf("rules %v from a silent controller", rs)
		}
	}
	if ctx.Err() != nil {
		t.Fatal("lookups of a silent controller's service took 10 s")
	}
}
