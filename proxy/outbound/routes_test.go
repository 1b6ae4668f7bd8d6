package outbound_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/inbound"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/outbound"
	"github.com/trellis-mesh/trellis/proxy/ratelimit"
	"github.com/trellis-mesh/trellis/proxy/route"
	"github.com/trellis-mesh/trellis/proxy/routes"
)

// routeSource stands in for the routes client (routes.Watcher): the
// controller's answer per authority, swapped by the test.
type routeSource struct {
	mu  sync.Mutex
	cfg map[string]*apiv1.RouteConfig
}

func (s *routeSource) set(authority string, rs ...*apiv1.Route) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg[authority] = &apiv1.RouteConfig{Service: authority, Routes: rs}
}

// setLimit sets authority's outbound limit, keeping its routes.
func (s *routeSource) setLimit(authority string, lim *apiv1.OutboundLimit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &apiv1.RouteConfig{Service: authority, Limit: lim}
	if old := s.cfg[authority]; old != nil {
		c.Routes = old.Routes
	}
	s.cfg[authority] = c
}

func (s *routeSource) Get(_ context.Context, authority string) routes.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cfg[authority]
	if c == nil {
		return routes.Snapshot{Authority: authority}
	}
	return routes.Snapshot{Authority: authority, Service: c.Service, Routes: c.Routes, FromController: true, Config: c}
}

// app is one service's app behind the shared inbound proxy: it answers
// with what it saw and counts its requests.
type app struct {
	name string
	port uint32
	hits atomic.Int64
	last atomic.Pointer[seenReq]
	slow time.Duration
}

type seenReq struct {
	path, host, header, body string
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	a.last.Store(&seenReq{path: r.URL.Path, host: r.Host, header: r.Header.Get("X-Route"), body: string(b)})
	a.hits.Add(1)
	if a.slow > 0 {
		select {
		case <-time.After(a.slow):
		case <-r.Context().Done():
		}
	}
	w.Header().Set("X-App", a.name)
	w.Header().Set("X-Leak", "secret")
	_, _ = io.WriteString(w, a.name)
}

// mesh is an outbound proxy with routes, and behind one inbound proxy
// the apps of the services books (the parent), books-v2 (the canary) and
// mirror; "gone.demo:80" is a service without a live endpoint.
type mesh struct {
	src     *routeSource
	apps    map[string]*app // by authority
	reg     *prometheus.Registry
	client  *http.Client
	outAddr string
}

func newMesh(t testing.TB) *mesh {
	t.Helper()
	c := newCA(t)
	m := &mesh{src: &routeSource{cfg: map[string]*apiv1.RouteConfig{}}, apps: map[string]*app{}, reg: prometheus.NewRegistry()}
	var ports []uint16
	for _, name := range []string{"books", "books-v2", "mirror"} {
		a := &app{name: name}
		ln := listen(t)
		srv := &http.Server{Handler: a}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		_, p, _ := net.SplitHostPort(ln.Addr().String())
		port, _ := strconv.Atoi(p)
		a.port = uint32(port)
		ports = append(ports, uint16(port))
		m.apps[name+".demo:80"] = a
	}
	inM, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	in, err := inbound.New(inbound.Config{Store: c.store(t, serverID), Metrics: inM, AppAddr: "127.0.0.1:1",
		AppPorts: ports, DetectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	inLn := listen(t)
	go func() { _ = in.Serve(inLn) }()
	bals := map[string]*balance.Balancer{}
	for authority, a := range m.apps {
		b := balance.New()
		b.Update([]balance.Endpoint{{Addr: inLn.Addr().String(), Weight: 1, Identity: serverID, TargetPort: a.port}})
		bals[authority] = b
	}
	gone := balance.New()
	gone.Update([]balance.Endpoint{{Addr: "127.0.0.1:1", Weight: 1, Identity: serverID, TargetPort: 1}})
	bals["gone.demo:80"] = gone
	om, err := metrics.New(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := metrics.NewRoutes(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	lm, err := metrics.NewRateLimit(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	out, err := outbound.New(outbound.Config{
		Mode: outbound.ModeExplicit, Store: c.store(t, clientID), Metrics: om, DetectTimeout: time.Second,
		Resolve: func(_ context.Context, authority string) (outbound.Destination, error) {
			b := bals[authority]
			return outbound.Destination{Exists: b != nil, Balancer: b}, nil
		},
		Routes: route.NewWatched(m.src, time.Millisecond, nil), RouteMetrics: rm,
		Limit: ratelimit.NewOutbound(lm, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	outLn := listen(t)
	m.outAddr = outLn.Addr().String()
	go func() { _ = out.Serve(outLn) }()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", outLn.Addr().String())
		},
		MaxIdleConnsPerHost: 64, DisableCompression: true,
	}
	m.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = out.Shutdown(ctx)
		_ = in.Shutdown(ctx)
	})
	return m
}

// do sends a request to books and returns the response, its body read.
func (m *mesh) do(t *testing.T, method, target string, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://books.demo"+target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := m.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp, readAll(t, resp.Body)
}

func backend(authority string, weight uint32) *apiv1.WeightedBackend {
	return &apiv1.WeightedBackend{Authority: authority, Weight: weight}
}

// TestRouteSplit: a 95/5 canary split over 10,000 requests lands within
// ±1 % of the weights, and every request is counted under its route.
func TestRouteSplit(t *testing.T) {
	m := newMesh(t)
	m.src.set("books.demo:80", &apiv1.Route{Name: "demo/books-canary", Rule: 1,
		Backends: []*apiv1.WeightedBackend{backend("books.demo:80", 95), backend("books-v2.demo:80", 5)}})
	const n, workers = 10000, 8
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/workers; i++ {
				resp, err := m.client.Get("http://books.demo/")
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	v1, v2 := m.apps["books.demo:80"].hits.Load(), m.apps["books-v2.demo:80"].hits.Load()
	if v1+v2 != n {
		t.Fatalf("apps saw %d + %d requests, want %d", v1, v2, n)
	}
	if share := float64(v2) / n; share < 0.04 || share > 0.06 {
		t.Errorf("canary share %.4f, want 0.05 ± 0.01 (v1 %d, v2 %d)", share, v1, v2)
	}
	eventually(t, "route metrics", func() bool {
		return counter(t, m.reg, "trellis_route_requests_total", map[string]string{
			"route": "demo/books-canary", "rule": "1", "service": "books.demo:80",
			"dst_service": "books-v2.demo:80", "status_class": "2xx"}) == float64(v2) &&
			counter(t, m.reg, "trellis_route_requests_total", map[string]string{"dst_service": "books.demo:80"}) == float64(v1)
	})
}

// TestRouteMatchesAndFilters: matches choose the backend; redirect,
// rewrite and header modifiers do what the route says.
func TestRouteMatchesAndFilters(t *testing.T) {
	m := newMesh(t)
	v2 := []*apiv1.WeightedBackend{backend("books-v2.demo:80", 1)}
	m.src.set("books.demo:80",
		&apiv1.Route{Name: "demo/header", Backends: v2, Matches: []*apiv1.RouteMatch{{
			Headers: []*apiv1.RouteMatch_Header{{Name: "x-canary", Value: "yes"}}}}},
		&apiv1.Route{Name: "demo/query", Backends: v2, Matches: []*apiv1.RouteMatch{{
			PathPrefix: "/q", QueryParams: []*apiv1.RouteMatch_Header{{Name: "beta", Value: "[0-9]+", Regex: true}}}}},
		&apiv1.Route{Name: "demo/regex", Backends: v2, Matches: []*apiv1.RouteMatch{{PathRegex: "/items/[0-9]+"}}},
		&apiv1.Route{Name: "demo/redirect", Matches: []*apiv1.RouteMatch{{PathPrefix: "/old"}},
			Redirect: &apiv1.Redirect{PrefixMatch: "/new", StatusCode: 301}},
		&apiv1.Route{Name: "demo/rewrite", Matches: []*apiv1.RouteMatch{{PathPrefix: "/api"}},
			Rewrite:        &apiv1.URLRewrite{PrefixMatch: "/", Hostname: "internal.books"},
			RequestHeaders: &apiv1.HeaderModifier{Set: []*apiv1.HeaderModifier_Header{{Name: "x-route", Value: "rewritten"}}},
			ResponseHeaders: &apiv1.HeaderModifier{Add: []*apiv1.HeaderModifier_Header{{Name: "x-served-by", Value: "mesh"}},
				Remove: []string{"x-leak"}}},
		&apiv1.Route{Name: "demo/zero", Matches: []*apiv1.RouteMatch{{PathExact: "/zero"}},
			Backends: []*apiv1.WeightedBackend{backend("books-v2.demo:80", 0)}},
	)
	for _, tt := range []struct {
		name, target string
		hdr          []string
		wantStatus   int
		wantApp      string // the app that answered ("" none)
		check        func(t *testing.T, resp *http.Response, seen *seenReq)
	}{
		{name: "no rule matches: 404, not the service", target: "/", wantStatus: 404, check: func(t *testing.T, resp *http.Response, _ *seenReq) {
			if got := resp.Header.Get("Trellis-Proxy-Error"); !strings.HasPrefix(got, "no_route; culprit=client") {
				t.Errorf("trellis-proxy-error %q", got)
			}
		}},
		{name: "header match", target: "/", hdr: []string{"X-Canary", "yes"}, wantStatus: 200, wantApp: "books-v2"},
		{name: "query regex match", target: "/q/x?beta=42", wantStatus: 200, wantApp: "books-v2"},
		{name: "query regex mismatch", target: "/q/x?beta=x", wantStatus: 404},
		{name: "path regex", target: "/items/7", wantStatus: 200, wantApp: "books-v2"},
		{name: "path regex needs the whole path", target: "/items/7/x", wantStatus: 404},
		{name: "redirect", target: "/old/a?x=1", wantStatus: 301, check: func(t *testing.T, resp *http.Response, _ *seenReq) {
			if loc := resp.Header.Get("Location"); loc != "http://books.demo/new/a?x=1" {
				t.Errorf("Location %q", loc)
			}
		}},
		{name: "rewrite and header modifiers", target: "/api/list", hdr: []string{"X-Route", "client"}, wantStatus: 200, wantApp: "books",
			check: func(t *testing.T, resp *http.Response, seen *seenReq) {
				if seen.path != "/list" || seen.host != "internal.books" || seen.header != "rewritten" {
					t.Errorf("app saw %+v", seen)
				}
				if resp.Header.Get("X-Served-By") != "mesh" || resp.Header.Get("X-Leak") != "" || resp.Header.Get("X-App") != "books" {
					t.Errorf("response header %v", resp.Header)
				}
			}},
		{name: "every weight 0: 500", target: "/zero", wantStatus: 500},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := map[string]int64{}
			for name, a := range m.apps {
				before[name] = a.hits.Load()
			}
			resp, body := m.do(t, "GET", tt.target, "", tt.hdr...)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.wantStatus)
			}
			var seen *seenReq
			for name, a := range m.apps {
				answered := a.hits.Load() != before[name]
				if answered != (a.name == tt.wantApp) {
					t.Errorf("app %s reached: %v", a.name, answered)
				}
				if answered {
					seen = a.last.Load()
				}
			}
			if tt.wantApp != "" && body != tt.wantApp {
				t.Errorf("answered by %q, want %q", body, tt.wantApp)
			}
			if tt.check != nil {
				tt.check(t, resp, seen)
			}
		})
	}
}

// TestRouteFaultAndTimeout: an abort never reaches the app and is marked;
// a delay is marked and goes on; the route's timeout replaces the default.
func TestRouteFaultAndTimeout(t *testing.T) {
	m := newMesh(t)
	m.apps["books-v2.demo:80"].slow = time.Minute
	m.src.set("books.demo:80",
		&apiv1.Route{Name: "demo/abort", Matches: []*apiv1.RouteMatch{{PathPrefix: "/abort"}},
			Fault: &apiv1.Fault{AbortMillionths: 1_000_000, AbortHttpStatus: 503}},
		&apiv1.Route{Name: "demo/delay", Matches: []*apiv1.RouteMatch{{PathPrefix: "/delay"}},
			Fault: &apiv1.Fault{DelayMillionths: 1_000_000, Delay: durationpb.New(time.Millisecond)}},
		&apiv1.Route{Name: "demo/slow", Matches: []*apiv1.RouteMatch{{PathPrefix: "/slow"}},
			Backends: []*apiv1.WeightedBackend{backend("books-v2.demo:80", 1)}, Timeout: durationpb.New(50 * time.Millisecond)},
	)
	books := m.apps["books.demo:80"]
	resp, body := m.do(t, "GET", "/abort", "")
	if resp.StatusCode != 503 || resp.Header.Get("Trellis-Fault") != "injected" || books.hits.Load() != 0 {
		t.Fatalf("abort: %d %q %v, app hits %d", resp.StatusCode, body, resp.Header, books.hits.Load())
	}
	resp, body = m.do(t, "GET", "/delay", "")
	if resp.StatusCode != 200 || body != "books" || resp.Header.Get("Trellis-Fault") != "injected" {
		t.Fatalf("delay: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = m.do(t, "GET", "/slow", "")
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("route timeout: %d %q", resp.StatusCode, body)
	}
	eventually(t, "fault metrics", func() bool {
		return counter(t, m.reg, "trellis_fault_injected_total", map[string]string{"route": "demo/abort", "kind": "abort"}) == 1 &&
			counter(t, m.reg, "trellis_fault_injected_total", map[string]string{"route": "demo/delay", "kind": "delay"}) == 1 &&
			counter(t, m.reg, "trellis_route_requests_total", map[string]string{"route": "demo/slow", "status_class": "5xx"}) == 1
	})
}

// TestRouteMirror: a copy with its body reaches the mirror; a mirror
// that cannot be reached changes nothing for the caller; both counted.
func TestRouteMirror(t *testing.T) {
	m := newMesh(t)
	m.src.set("books.demo:80",
		&apiv1.Route{Name: "demo/mirror", Matches: []*apiv1.RouteMatch{{PathPrefix: "/m"}},
			Mirrors: []*apiv1.Mirror{{Authority: "mirror.demo:80"}}},
		&apiv1.Route{Name: "demo/mirror-gone", Matches: []*apiv1.RouteMatch{{PathPrefix: "/gone"}},
			Mirrors: []*apiv1.Mirror{{Authority: "gone.demo:80"}, {Authority: "nowhere.demo:80"}}},
	)
	resp, body := m.do(t, "POST", "/m/x", "payload")
	if resp.StatusCode != 200 || body != "books" {
		t.Fatalf("caller got %d %q", resp.StatusCode, body)
	}
	if seen := m.apps["books.demo:80"].last.Load(); seen.body != "payload" {
		t.Errorf("the service saw body %q", seen.body)
	}
	mirror := m.apps["mirror.demo:80"]
	eventually(t, "the copy", func() bool { return mirror.hits.Load() == 1 })
	if seen := mirror.last.Load(); seen.body != "payload" || seen.path != "/m/x" {
		t.Errorf("the mirror saw %+v", seen)
	}
	resp, body = m.do(t, "POST", "/gone", "payload")
	if resp.StatusCode != 200 || body != "books" {
		t.Fatalf("caller of a failing mirror got %d %q", resp.StatusCode, body)
	}
	eventually(t, "mirror metrics", func() bool {
		return counter(t, m.reg, "trellis_mirror_requests_total", map[string]string{"route": "demo/mirror", "result": "sent"}) == 1 &&
			counter(t, m.reg, "trellis_mirror_requests_total", map[string]string{"route": "demo/mirror-gone", "result": "failed"}) == 2
	})
}

// TestRouteFaultGRPC: a gRPC route's abort is a trailers-only answer
// over the app's HTTP/2 connection, counted with its grpc-status.
func TestRouteFaultGRPC(t *testing.T) {
	m := newMesh(t)
	m.src.set("books.demo:80", &apiv1.Route{Name: "demo/grpc-chaos", Kind: "grpc",
		Fault: &apiv1.Fault{AbortMillionths: 1_000_000, AbortHttpStatus: 500, AbortGrpcStatus: 14}})
	c := &http.Client{Transport: h2cClient(m.outAddr)}
	req, _ := http.NewRequest(http.MethodPost, "http://books.demo/books.v1.Books/Get", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "14" || resp.Header.Get("Trellis-Fault") != "injected" || body != "" {
		t.Fatalf("answer %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if hits := m.apps["books.demo:80"].hits.Load(); hits != 0 {
		t.Fatalf("the app saw %d requests", hits)
	}
	eventually(t, "the response counted with its grpc-status", func() bool {
		return counter(t, m.reg, "trellis_responses_total", map[string]string{"grpc_status": "14", "classification": "failure"}) == 1 &&
			counter(t, m.reg, "trellis_request_errors_total", nil) == 0
	})
}
