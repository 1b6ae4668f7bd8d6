package upstream

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
	"github.com/trellis-mesh/trellis/proxy/retry"
)

// backends are real loopback HTTP servers (h2c too, for gRPC) that count
// what reaches them: the load a retry policy adds is measured there, not
// in the proxy.
type backends struct {
	hits  atomic.Int64
	addrs []string
}

func newBackends(t *testing.T, n int, h func(hit int64, w http.ResponseWriter, r *http.Request)) *backends {
	t.Helper()
	b := &backends{}
	for range n {
		srv := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			h(b.hits.Add(1), w, r)
		}))
		b.addrs = append(b.addrs, strings.TrimPrefix(srv.URL, "http://"))
	}
	return b
}

// front is the upstream stage behind a real listener: the client's
// requests cross loopback TCP (h2c or HTTP/1.1) to Observe, a test layer
// that sets what the route stage would (destination, route), and the
// stage, which reaches the backends over TCP.
type front struct {
	url   string
	reg   *prometheus.Registry
	stage *Stage
}

func newFront(t *testing.T, b *backends, proto apiv1.ProtocolHint_Protocol, route *apiv1.Route, replay *retry.Bytes) *front {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	errs := &proxyerr.Renderer{Direction: metrics.Outbound, Identity: "spiffe://td/ns/a/sa/a", Log: ratelog.New(nil, 0)}
	plain := &http.Transport{}
	t.Cleanup(plain.CloseIdleConnections)
	var mu sync.Mutex
	conns := map[string]*http.Transport{} // h2c to an endpoint, whatever the URL's host (as the mesh pool)
	mesh := func(_ context.Context, ep balance.Endpoint) (http.RoundTripper, error) {
		mu.Lock()
		defer mu.Unlock()
		if conns[ep.Addr] == nil {
			conns[ep.Addr] = h2cTransport(ep.Addr)
			t.Cleanup(conns[ep.Addr].CloseIdleConnections)
		}
		return conns[ep.Addr], nil
	}
	stage := &Stage{
		Metrics: m, Errors: errs, Log: slog.New(slog.DiscardHandler), Plain: plain, Mesh: mesh,
		Unprocessed: func(error) bool { return false },
		Budgets:     retry.NewBudgets(0), Replay: replay,
	}
	bal := balance.New()
	eps := make([]balance.Endpoint, len(b.addrs))
	for i, a := range b.addrs {
		eps[i] = balance.Endpoint{Addr: a, Protocol: proto}
	}
	bal.Update(eps)
	withRoute := func(next pipeline.Handler) pipeline.Handler {
		return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
			x.Dest, x.Authority, x.Route = pipeline.Dest{Dst: "b.ns:80", Balancer: bal}, "b.ns:80", route
			x.Key.DstService = x.Dest.Dst
			return next.Serve(x)
		})
	}
	o := &pipeline.Observe{Direction: metrics.Outbound, Metrics: m, Errors: errs, Next: pipeline.Chain(stage, withRoute)}
	srv := h2cServer(t, o)
	return &front{url: srv.URL, reg: reg, stage: stage}
}

// h2cServer serves h on loopback in HTTP/1.1 and prior-knowledge HTTP/2.
func h2cServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// h2cTransport speaks prior-knowledge HTTP/2 to to, or to the URL's host
// if to is "".
func h2cTransport(to string) *http.Transport {
	tr := &http.Transport{Protocols: new(http.Protocols), DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to != "" {
			addr = to
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return tr
}

// count sums the samples of a counter whose labels include labels.
func count(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == k && lp.GetValue() == v)
				}
				if !found {
					continue metric
				}
			}
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

func ms(n int) *durationpb.Duration { return durationpb.New(time.Duration(n) * time.Millisecond) }

// TestRetryFailingBackend: a backend failing 50 % of its requests with
// 503. With a generous budget the client sees the retried success rate;
// with the default one the backend sees no more than the budget's extra
// load, counted at the backend.
func TestRetryFailingBackend(t *testing.T) {
	const n = 400
	tests := []struct {
		name       string
		policy     *apiv1.RetryPolicy
		minSuccess float64 // share of the client's requests
		ratio      float64 // the budget's, for the load bound
		wantSpent  bool    // the budget runs out
	}{
		{name: "budget large enough: 1 - 0.5^3", policy: &apiv1.RetryPolicy{RetryOnStatus: []uint32{503}, MaxRetries: 2, BudgetRatio: 1, BudgetMinPerSecond: 1, BackoffBase: ms(1), BackoffMax: ms(2)},
			minSuccess: 0.8, ratio: 1},
		{name: "default ratio 20 %: the budget bounds the load", policy: &apiv1.RetryPolicy{RetryOnStatus: []uint32{503}, MaxRetries: 2, BudgetMinPerSecond: 1, BackoffBase: ms(1), BackoffMax: ms(2)},
			minSuccess: 0.52, ratio: retry.DefaultRatio, wantSpent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			rnd := rand.New(rand.NewPCG(1, 2))
			b := newBackends(t, 2, func(_ int64, w http.ResponseWriter, _ *http.Request) {
				mu.Lock()
				fail := rnd.IntN(2) == 0
				mu.Unlock()
				if fail {
					w.WriteHeader(http.StatusServiceUnavailable)
				}
			})
			f := newFront(t, b, apiv1.ProtocolHint_HTTP1, &apiv1.Route{Retry: tt.policy}, retry.NewBytes(0))
			start := time.Now()
			ok := 0
			for range n {
				resp, err := http.Get(f.url + "/")
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok++
				}
			}
			elapsed := time.Since(start)
			hits := b.hits.Load()
			retried := count(t, f.reg, "trellis_retries_total", map[string]string{"reason": "status"})
			if float64(hits-n) != retried {
				t.Errorf("backend saw %d requests for %d: %d extra, but the proxy counted %v retries", hits, n, hits-n, retried)
			}
			// The floor (1/s) over the window and the test's duration.
			bound := float64(n)*(1+tt.ratio) + (retry.Window + elapsed + time.Second).Seconds()
			if float64(hits) > bound {
				t.Errorf("backend saw %d requests for %d, over the budget's bound %.0f", hits, n, bound)
			}
			if share := float64(ok) / n; share < tt.minSuccess {
				t.Errorf("client success %.3f, want at least %.2f (backend hits %d)", share, tt.minSuccess, hits)
			}
			spent := count(t, f.reg, "trellis_retry_budget_exhausted_total", map[string]string{"dst_service": "b.ns:80"})
			if (spent > 0) != tt.wantSpent {
				t.Errorf("budget exhausted %v times, want spent: %v", spent, tt.wantSpent)
			}
			// Each request counted once, whatever its attempts.
			if got := count(t, f.reg, "trellis_requests_total", nil); got != n {
				t.Errorf("trellis_requests_total %v, want %d", got, n)
			}
			if got := count(t, f.reg, "trellis_responses_total", map[string]string{"status_code": "200"}); got != float64(ok) {
				t.Errorf("200 responses counted %v, the client got %d", got, ok)
			}
			t.Logf("client success %d/%d, backend requests %d, retries %v, budget refusals %v", ok, n, hits, retried, spent)
		})
	}
}

// TestRetryPolicy: which requests and responses a policy retries, over
// real TCP, counted at the backends.
func TestRetryPolicy(t *testing.T) {
	explicit := &apiv1.RetryPolicy{RetryOnStatus: []uint32{503}, MaxRetries: 2, BackoffBase: ms(1), BackoffMax: ms(2)}
	defaults := &apiv1.RetryPolicy{MaxRetries: 2, BackoffBase: ms(1), BackoffMax: ms(2)}
	grpcPolicy := &apiv1.RetryPolicy{RetryOnGrpc: []uint32{14}, MaxRetries: 2, BackoffBase: ms(1), BackoffMax: ms(2)}
	fail503 := func(hit int64, w http.ResponseWriter, _ *http.Request) {
		if hit == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}
	tests := []struct {
		name       string
		policy     *apiv1.RetryPolicy
		grpc       bool
		method     string
		body       string
		unknownLen bool
		replay     int64 // the process-wide bound on bytes kept (0: default)
		backend    func(hit int64, w http.ResponseWriter, r *http.Request)
		wantStatus int
		wantGRPC   string
		wantHits   int64
		wantRetry  map[string]float64
		wantSkip   map[string]float64
		wantRefuse float64 // bodies not kept for the bound
	}{
		{name: "GET, 503 listed: retried", policy: explicit, method: "GET", backend: fail503,
			wantStatus: 200, wantHits: 2, wantRetry: map[string]float64{"status": 1}},
		{name: "GET, 503 every time: max_retries then the last answer", policy: explicit, method: "GET",
			backend:    func(_ int64, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) },
			wantStatus: 503, wantHits: 3, wantRetry: map[string]float64{"status": 2}, wantSkip: map[string]float64{"attempts": 1}},
		{name: "no policy: the 503 passes", policy: nil, method: "GET", backend: fail503, wantStatus: 503, wantHits: 1},
		{name: "POST with a small body, 503 listed: the user's decision, retried with its body", policy: explicit, method: "POST", body: "order=1",
			backend: func(hit int64, w http.ResponseWriter, r *http.Request) {
				if hit == 1 {
					w.WriteHeader(503)
				}
			}, wantStatus: 200, wantHits: 2, wantRetry: map[string]float64{"status": 1}},
		{name: "POST, empty list: 5xx of a non-idempotent method not retried", policy: defaults, method: "POST", body: "x", backend: fail503,
			wantStatus: 503, wantHits: 1, wantSkip: map[string]float64{"method": 1}},
		{name: "PUT, empty list: 5xx retried", policy: defaults, method: "PUT", body: "x",
			backend: func(hit int64, w http.ResponseWriter, _ *http.Request) {
				if hit == 1 {
					w.WriteHeader(500)
				}
			}, wantStatus: 200, wantHits: 2, wantRetry: map[string]float64{"status": 1}},
		{name: "POST with a body over the buffered limit: not retried", policy: explicit, method: "POST", body: strings.Repeat("x", maxReplayBody+1), backend: fail503,
			wantStatus: 503, wantHits: 1, wantSkip: map[string]float64{"body": 1}},
		{name: "POST of unknown length over the limit: not retried", policy: explicit, method: "POST", body: strings.Repeat("x", maxReplayBody+1), unknownLen: true, backend: fail503,
			wantStatus: 503, wantHits: 1, wantSkip: map[string]float64{"body": 1}},
		{name: "POST of unknown length kept whole: retried", policy: explicit, method: "POST", body: "chunked", unknownLen: true, backend: fail503,
			wantStatus: 200, wantHits: 2, wantRetry: map[string]float64{"status": 1}},
		{name: "replay bound spent: the body is not kept, not retried", policy: explicit, method: "POST", body: strings.Repeat("x", 100), replay: 10, backend: fail503,
			wantStatus: 503, wantHits: 1, wantSkip: map[string]float64{"body": 1}, wantRefuse: 1},
		{name: "replay bound spent, unknown length: not kept, not retried", policy: explicit, method: "POST", body: strings.Repeat("x", 1000), unknownLen: true, replay: 100, backend: fail503,
			wantStatus: 503, wantHits: 1, wantSkip: map[string]float64{"body": 1}, wantRefuse: 1},
		{name: "gRPC UNAVAILABLE trailers-only: retried", policy: grpcPolicy, grpc: true, method: "POST", body: "\x00\x00\x00\x00\x01a",
			backend: func(hit int64, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/grpc")
				if hit == 1 {
					w.Header().Set("Grpc-Status", "14")
					w.WriteHeader(200)
					return
				}
				w.Header().Set("Trailer", "Grpc-Status")
				_, _ = w.Write([]byte("\x00\x00\x00\x00\x01b"))
				w.Header().Set("Grpc-Status", "0")
			}, wantStatus: 200, wantGRPC: "0", wantHits: 2, wantRetry: map[string]float64{"grpc": 1}},
		{name: "gRPC UNAVAILABLE in trailers after a body: already passed on, not retried", policy: grpcPolicy, grpc: true, method: "POST", body: "\x00\x00\x00\x00\x01a",
			backend: func(_ int64, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/grpc")
				w.Header().Set("Trailer", "Grpc-Status")
				_, _ = w.Write([]byte("\x00\x00\x00\x00\x01b"))
				w.Header().Set("Grpc-Status", "14")
			}, wantStatus: 200, wantGRPC: "14", wantHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackends(t, 2, tt.backend)
			proto := apiv1.ProtocolHint_HTTP1
			if tt.grpc {
				proto = apiv1.ProtocolHint_GRPC
			}
			var route *apiv1.Route
			if tt.policy != nil {
				route = &apiv1.Route{Retry: tt.policy}
			}
			replay := retry.NewBytes(tt.replay)
			f := newFront(t, b, proto, route, replay)
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
				if tt.unknownLen {
					body = io.MultiReader(body)
				}
			}
			req, err := http.NewRequest(tt.method, f.url+"/", body)
			if err != nil {
				t.Fatal(err)
			}
			client := http.DefaultClient
			if tt.grpc {
				req.Header.Set("Content-Type", "application/grpc")
				client = &http.Client{Transport: h2cTransport("")}
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d (%s)", resp.StatusCode, tt.wantStatus, resp.Header.Get(proxyerr.HeaderError))
			}
			if got := pipeline.GRPCStatus(resp); got != tt.wantGRPC {
				t.Errorf("grpc-status %q, want %q", got, tt.wantGRPC)
			}
			if got := b.hits.Load(); got != tt.wantHits {
				t.Errorf("backends saw %d requests, want %d", got, tt.wantHits)
			}
			for _, c := range []struct {
				name string
				want map[string]float64
			}{{"trellis_retries_total", tt.wantRetry}, {"trellis_retry_skipped_total", tt.wantSkip}} {
				for _, reason := range []string{"status", "grpc", "timeout", "body", "method", "attempts", "deadline"} {
					if got := count(t, f.reg, c.name, map[string]string{"reason": reason}); got != c.want[reason] {
						t.Errorf("%s{reason=%q} = %v, want %v", c.name, reason, got, c.want[reason])
					}
				}
			}
			if got := count(t, f.reg, "trellis_retry_replay_refused_total", nil); got != tt.wantRefuse {
				t.Errorf("bodies refused for the replay bound %v, want %v", got, tt.wantRefuse)
			}
			eventuallyZero(t, replay)
		})
	}
}

// eventuallyZero: every byte kept for replay is given back once requests end.
func eventuallyZero(t *testing.T, b *retry.Bytes) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.Used() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes kept for replay after the request ended", b.Used())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRetryPerTryTimeout: an attempt over its per-try timeout is retried
// on another endpoint; the whole request still ends within its own bound.
func TestRetryPerTryTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	b := newBackends(t, 2, func(hit int64, w http.ResponseWriter, r *http.Request) {
		if hit == 1 {
			select { // the first attempt hangs until it is given up
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		_, _ = io.WriteString(w, "second")
	})
	route := &apiv1.Route{BackendTimeout: durationpb.New(10 * time.Second), Retry: &apiv1.RetryPolicy{PerTryTimeout: ms(200), BackoffBase: ms(1), BackoffMax: ms(2)}}
	f := newFront(t, b, apiv1.ProtocolHint_HTTP1, route, nil)
	resp, err := http.Get(f.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, resp.Body)
	if resp.StatusCode != 200 || got != "second" {
		t.Fatalf("status %d, body %q; want 200 from the second attempt", resp.StatusCode, got)
	}
	if n := b.hits.Load(); n != 2 {
		t.Errorf("backends saw %d requests, want 2", n)
	}
	if n := count(t, f.reg, "trellis_retries_total", map[string]string{"reason": "timeout"}); n != 1 {
		t.Errorf("timeout retries %v, want 1", n)
	}
}

// TestBackendTimeoutWithoutPolicy: backend_timeout bounds the attempt; with
// no retry policy the timeout is the answer.
func TestBackendTimeoutWithoutPolicy(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	b := newBackends(t, 1, func(_ int64, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	f := newFront(t, b, apiv1.ProtocolHint_HTTP1, &apiv1.Route{BackendTimeout: ms(100)}, nil)
	resp, err := http.Get(f.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504", resp.StatusCode)
	}
	if n := b.hits.Load(); n != 1 {
		t.Errorf("backends saw %d requests, want 1", n)
	}
}

func readAll(t *testing.T, r io.ReadCloser) string {
	t.Helper()
	defer func() { _ = r.Close() }()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
