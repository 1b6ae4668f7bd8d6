package route

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/routes"
)

func hm(set ...string) *apiv1.HeaderModifier {
	m := &apiv1.HeaderModifier{}
	for i := 0; i+1 < len(set); i += 2 {
		m.Set = append(m.Set, &apiv1.HeaderModifier_Header{Name: set[i], Value: set[i+1]})
	}
	return m
}

func TestPick(t *testing.T) {
	rs := mustCompile(t, &apiv1.Route{Name: "a", Backends: []*apiv1.WeightedBackend{
		{Authority: "v1:80", Weight: 95}, {Authority: "v0:80"}, {Authority: "v2:80", Weight: 5},
	}}, &apiv1.Route{Name: "b"})
	ru := &rs.rules[0]
	counts := map[string]int{}
	for n := uint64(0); n < 200; n++ {
		b, ok := ru.Pick(n)
		if !ok || b == nil {
			t.Fatalf("Pick(%d) = %v, %v", n, b, ok)
		}
		counts[b.Authority]++
	}
	if counts["v1:80"] != 190 || counts["v2:80"] != 10 || counts["v0:80"] != 0 {
		t.Errorf("200 picks: %v, want 190/10 and none of weight 0", counts)
	}
	if b, ok := rs.rules[1].Pick(7); b != nil || !ok {
		t.Errorf("rule without backends: %v, %v; want the service itself", b, ok)
	}
}

func TestCompileRefuses(t *testing.T) {
	for name, r := range map[string]*apiv1.Route{
		"CRLF header":             {RequestHeaders: hm("x", "a\r\nb: c")},
		"mesh header":             {ResponseHeaders: hm("trellis-fault", "x")},
		"backend mesh header":     {Backends: []*apiv1.WeightedBackend{{Authority: "a:1", RequestHeaders: hm("Trellis-Orig-Proto", "x")}}},
		"redirect scheme":         {Redirect: &apiv1.Redirect{Scheme: "javascript"}},
		"redirect status":         {Redirect: &apiv1.Redirect{StatusCode: 200}},
		"redirect status 304":     {Redirect: &apiv1.Redirect{StatusCode: 304}},
		"redirect host":           {Redirect: &apiv1.Redirect{Hostname: "evil.com/x"}},
		"redirect host userinfo":  {Redirect: &apiv1.Redirect{Hostname: "a@evil.com"}},
		"redirect path":           {Redirect: &apiv1.Redirect{FullPath: "x"}},
		"redirect path CRLF":      {Redirect: &apiv1.Redirect{FullPath: "/a\r\nSet-Cookie: x"}},
		"rewrite both paths":      {Rewrite: &apiv1.URLRewrite{FullPath: "/a", PrefixMatch: "/b"}},
		"rewrite host":            {Rewrite: &apiv1.URLRewrite{Hostname: "a b"}},
		"redirect host with port": {Redirect: &apiv1.Redirect{Hostname: "h:1"}},
		"rewrite host IPv6":       {Rewrite: &apiv1.URLRewrite{Hostname: "[::1]"}},
		"negative timeout":        {Timeout: durationpb.New(-1)},
		"bad match":               {Matches: []*apiv1.RouteMatch{{PathRegex: "(["}}},
	} {
		if _, err := Compile([]*apiv1.Route{r}); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
}

// TestFilters: redirects, rewrites and header modifiers at the route and
// backend levels, through the stage.
func TestFilters(t *testing.T) {
	type want struct {
		status   int    // a redirect's
		location string // a redirect's
		path     string // the request's, after the stage
		host     string
		header   string // X-A after the stage
		edits    string // X-R after the response edits
	}
	for _, tt := range []struct {
		name, target string
		route        *apiv1.Route
		want         want
	}{
		{"redirect default 302, query kept", "/a/b?q=1", &apiv1.Route{Redirect: &apiv1.Redirect{}},
			want{status: 302, location: "http://web.ns:8080/a/b?q=1"}},
		{"redirect scheme drops the port", "/a", &apiv1.Route{Redirect: &apiv1.Redirect{Scheme: "https", StatusCode: 301}},
			want{status: 301, location: "https://web.ns/a"}},
		{"redirect 303", "/a", &apiv1.Route{Redirect: &apiv1.Redirect{StatusCode: 303}},
			want{status: 303, location: "http://web.ns:8080/a"}},
		{"redirect 307", "/a", &apiv1.Route{Redirect: &apiv1.Redirect{StatusCode: 307}},
			want{status: 307, location: "http://web.ns:8080/a"}},
		{"redirect 308", "/a", &apiv1.Route{Redirect: &apiv1.Redirect{StatusCode: 308}},
			want{status: 308, location: "http://web.ns:8080/a"}},
		{"redirect host, port, full path", "/a", &apiv1.Route{Redirect: &apiv1.Redirect{Hostname: "new.example", Port: 9000, FullPath: "/z"}},
			want{status: 302, location: "http://new.example:9000/z"}},
		{"redirect prefix", "/old/x/y", &apiv1.Route{Matches: []*apiv1.RouteMatch{{PathPrefix: "/old/"}}, Redirect: &apiv1.Redirect{PrefixMatch: "/new", Port: 80}},
			want{status: 302, location: "http://web.ns/new/x/y"}},
		{"rewrite prefix", "/api/v1/items?x=1", &apiv1.Route{Matches: []*apiv1.RouteMatch{{PathPrefix: "/api"}, {PathPrefix: "/api/v1"}}, Rewrite: &apiv1.URLRewrite{PrefixMatch: "/"}},
			want{path: "/items", host: "web.ns:8080"}},
		{"rewrite prefix whole path", "/api", &apiv1.Route{Matches: []*apiv1.RouteMatch{{PathPrefix: "/api"}}, Rewrite: &apiv1.URLRewrite{PrefixMatch: "/v2"}},
			want{path: "/v2", host: "web.ns:8080"}},
		{"rewrite full path and host", "/x", &apiv1.Route{Rewrite: &apiv1.URLRewrite{FullPath: "/y", Hostname: "other.example"}},
			want{path: "/y", host: "other.example"}},
		{"headers: route then backend", "/x", &apiv1.Route{
			RequestHeaders: hm("x-a", "route"), ResponseHeaders: hm("x-r", "route"),
			Backends: []*apiv1.WeightedBackend{{Authority: "web.ns:8080", Weight: 1, RequestHeaders: hm("x-a", "backend"), ResponseHeaders: hm("x-r", "backend")}},
		}, want{path: "/x", host: "web.ns:8080", header: "backend", edits: "backend"}},
		{"headers: route only", "/x", &apiv1.Route{RequestHeaders: hm("x-a", "route"), ResponseHeaders: hm("x-r", "route")},
			want{path: "/x", host: "web.ns:8080", header: "route", edits: "route"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.route.Name = "ns/r"
			s := &Stage{Resolve: func(context.Context, string) (bool, *balance.Balancer, error) {
				return true, new(balance.Balancer), nil
			},
				Table: table{"web.ns:8080": mustCompile(t, tt.route)}}
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			r.Host = "web.ns:8080"
			rec := httptest.NewRecorder()
			x := &pipeline.Exchange{R: r, W: rec}
			reached := false
			err := s.Layer(pipeline.HandlerFunc(func(x *pipeline.Exchange) error { reached = true; return nil })).Serve(x)
			if err != nil {
				t.Fatal(err)
			}
			if x.Route != tt.route {
				t.Errorf("x.Route = %v", x.Route)
			}
			if tt.want.status != 0 {
				if reached || rec.Code != tt.want.status || rec.Header().Get("Location") != tt.want.location {
					t.Errorf("redirect: reached %v, %d %q; want %d %q", reached, rec.Code, rec.Header().Get("Location"), tt.want.status, tt.want.location)
				}
				return
			}
			if !reached || r.URL.Path != tt.want.path || r.Host != tt.want.host || r.Header.Get("X-A") != tt.want.header {
				t.Errorf("reached %v, path %q host %q x-a %q; want %+v", reached, r.URL.Path, r.Host, r.Header.Get("X-A"), tt.want)
			}
			resp := http.Header{}
			x.EditResponse(resp)
			if resp.Get("X-R") != tt.want.edits {
				t.Errorf("response x-r %q, want %q", resp.Get("X-R"), tt.want.edits)
			}
		})
	}
}

// source is a routes source answering from a pointer that tests swap; nil
// blocks until ctx ends (a controller that never answers).
type source struct {
	cfg   atomic.Pointer[apiv1.RouteConfig]
	calls atomic.Int32
	live  atomic.Int32 // calls whose ctx was not done on entry
}

func (s *source) Get(ctx context.Context, a string) routes.Snapshot {
	s.calls.Add(1)
	if ctx.Err() == nil {
		s.live.Add(1)
	}
	if c := s.cfg.Load(); c != nil {
		return routes.Snapshot{Authority: a, Routes: c.GetRoutes(), FromController: true, Config: c}
	}
	<-ctx.Done()
	return routes.Snapshot{Authority: a}
}

// TestWatched: an answer is compiled once and shared; a new answer is
// compiled anew; a controller that never answers makes one request wait,
// not each.
func TestWatched(t *testing.T) {
	src := &source{}
	w := NewWatched(src, 0, nil)
	if rs := w.Rules(context.Background(), "a:80"); rs != nil {
		t.Fatalf("rules %v before an answer", rs)
	}
	for range 3 {
		if rs := w.Rules(context.Background(), "a:80"); rs != nil {
			t.Fatalf("rules %v before an answer", rs)
		}
	}
	if n := src.live.Load(); n != 1 {
		t.Errorf("%d lookups waited for the first answer, want 1", n)
	}
	src.cfg.Store(&apiv1.RouteConfig{Routes: []*apiv1.Route{{Name: "ns/one"}}})
	first := w.Rules(context.Background(), "a:80")
	if first.Len() != 1 || w.Rules(context.Background(), "a:80") != first {
		t.Fatalf("answer compiled %v, then not shared", first)
	}
	src.cfg.Store(&apiv1.RouteConfig{Routes: []*apiv1.Route{{Name: "ns/one"}, {Name: "ns/two"}}})
	if rs := w.Rules(context.Background(), "a:80"); rs == first || rs.Len() != 2 {
		t.Fatalf("new answer not compiled: %v", rs)
	}
	second := w.Rules(context.Background(), "a:80")
	src.cfg.Store(nil) // the client's watch swept and started again
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rs := w.Rules(ctx, "a:80"); rs != second {
		t.Fatalf("the last answer's rules dropped while the client has none: %v", rs)
	}
	src.cfg.Store(&apiv1.RouteConfig{Routes: []*apiv1.Route{{Name: "ns/bad", Matches: []*apiv1.RouteMatch{{PathRegex: "(["}}}}})
	if rs := w.Rules(context.Background(), "a:80"); rs != second {
		t.Fatalf("an answer that does not compile: rules %v, want the last ones kept", rs)
	}
	if rs := w.Rules(context.Background(), "b:80"); rs != nil {
		t.Fatalf("a first answer that does not compile applied: %v", rs)
	}
}
