package routes

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
)

func TestCheck(t *testing.T) {
	route := func(r *apiv1.Route) *apiv1.RouteConfig { return &apiv1.RouteConfig{Routes: []*apiv1.Route{r}} }
	match := func(m *apiv1.RouteMatch) *apiv1.RouteConfig {
		return route(&apiv1.Route{Matches: []*apiv1.RouteMatch{m}})
	}
	header := func(name, value string, regex bool) *apiv1.RouteConfig {
		return match(&apiv1.RouteMatch{Headers: []*apiv1.RouteMatch_Header{{Name: name, Value: value, Regex: regex}}})
	}
	for _, tc := range []struct {
		name string
		rc   *apiv1.RouteConfig
		bad  string // substring of the error; "" valid
	}{
		{"no routes", &apiv1.RouteConfig{Service: "a.b.svc.cluster.local:80"}, ""},
		{"full route", route(&apiv1.Route{
			Name:     "r",
			Matches:  []*apiv1.RouteMatch{{PathPrefix: "/api", Method: "GET"}},
			Backends: []*apiv1.WeightedBackend{{Authority: "v2.ns:80", Weight: 10}},
			Timeout:  durationpb.New(time.Second),
			Retry:    &apiv1.RetryPolicy{MaxRetries: 2, BudgetRatio: 0.2, PerTryTimeout: durationpb.New(100 * time.Millisecond)},
		}), ""},
		{"regex header", header("x-user", "^a+$", true), ""},
		{"exact header with regex characters", header("x-user", "(", false), ""},
		{"relative prefix", match(&apiv1.RouteMatch{PathPrefix: "api"}), "does not start with /"},
		{"relative exact", match(&apiv1.RouteMatch{PathExact: "api"}), "does not start with /"},
		{"bad path regex", match(&apiv1.RouteMatch{PathRegex: "(["}), "path_regex"},
		{"bad query regex", match(&apiv1.RouteMatch{QueryParams: []*apiv1.RouteMatch_Header{{Name: "q", Value: "(", Regex: true}}}), "query"},
		{"header modifier CRLF", route(&apiv1.Route{RequestHeaders: &apiv1.HeaderModifier{
			Set: []*apiv1.HeaderModifier_Header{{Name: "x", Value: "a\r\nb: c"}}}}), "control character"},
		{"header modifier on a mesh header", route(&apiv1.Route{ResponseHeaders: &apiv1.HeaderModifier{
			Remove: []string{"trellis-proxy-error"}}}), "may not be changed"},
		{"bad regex", header("x-user", "(", true), "x-user"},
		{"header without name", header("", "v", false), "not an HTTP token"},
		{"backend header modifier touching the mesh", route(&apiv1.Route{Backends: []*apiv1.WeightedBackend{{Authority: "a.ns:80", Weight: 1,
			RequestHeaders: &apiv1.HeaderModifier{Set: []*apiv1.HeaderModifier_Header{{Name: "trellis-target-port", Value: "1"}}}}}}), "backend"},
		{"negative timeout", route(&apiv1.Route{Timeout: durationpb.New(-time.Second)}), "timeout"},
		{"mixed-sign timeout", route(&apiv1.Route{Timeout: &durationpb.Duration{Seconds: 1, Nanos: -1}}), "timeout"},
		{"out of range duration", route(&apiv1.Route{Retry: &apiv1.RetryPolicy{PerTryTimeout: &durationpb.Duration{Seconds: 1, Nanos: -1}}}), "per-try"},
		{"budget above 1", route(&apiv1.Route{Retry: &apiv1.RetryPolicy{BudgetRatio: 1.5}}), "budget"},
		{"NaN budget", route(&apiv1.Route{Retry: &apiv1.RetryPolicy{BudgetRatio: float32(math.NaN())}}), "budget"},
	} {
		err := Check(tc.rc)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s: error %v, want one about %q", tc.name, err, tc.bad)
		}
	}
}

type routesServer struct {
	apiv1.UnimplementedDestinationServer
	reqs chan *apiv1.GetDestination
}

func (s *routesServer) GetRoutes(req *apiv1.GetDestination, st grpc.ServerStreamingServer[apiv1.RouteConfig]) error {
	s.reqs <- req
	rc := &apiv1.RouteConfig{Service: "svc-of-" + req.GetPath(), Routes: []*apiv1.Route{{Name: "r1"}}}
	if err := st.Send(rc); err != nil {
		return err
	}
	<-st.Context().Done()
	return nil
}

func TestWatcherOverGRPC(t *testing.T) {
	srv := &routesServer{reqs: make(chan *apiv1.GetDestination, 16)}
	addr, _ := grpctest.Serve(t, "127.0.0.1:0", func(gs *grpc.Server) { apiv1.RegisterDestinationServer(gs, srv) })
	cc := grpctest.Dial(t, addr)
	const caller = "spiffe://cluster.local/ns/a/sa/b"
	w := New(apiv1.NewDestinationClient(cc), Options{CallerIdentity: caller})
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := w.Get(ctx, "books.demo:80")
	if !s.FromController || s.Service != "svc-of-books.demo:80" || len(s.Routes) != 1 || s.Routes[0].GetName() != "r1" {
		t.Fatalf("Get = %+v", s)
	}
	if req := <-srv.reqs; req.GetPath() != "books.demo:80" || req.GetCallerIdentity() != caller {
		t.Fatalf("request = %v", req)
	}
	if s := w.Get(ctx, ""); s.FromController || len(srv.reqs) != 0 {
		t.Fatalf("empty authority: %+v, %d requests", s, len(srv.reqs))
	}
}
