package upstream

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// peers stands for the peer proxies behind Stage.Mesh: the first round
// trip (whichever endpoint it goes to) is answered "not processed" as a
// draining server proxy does, the later ones echo the request body.
type peers struct {
	mu           sync.Mutex
	calls        []string // endpoint of each round trip
	unprocessed  int      // round trips answered "not processed"
	unprocessedN int
	// readRefused: a refused round trip reads the request body first, as
	// the mesh transport does with a small one (sent with the headers).
	readRefused bool
}

func (p *peers) conn(_ context.Context, ep balance.Endpoint) (http.RoundTripper, error) {
	return rtFunc(func(r *http.Request) (*http.Response, error) {
		p.mu.Lock()
		p.calls = append(p.calls, ep.Addr)
		refuse := p.unprocessed < p.unprocessedN
		if refuse {
			p.unprocessed++
		}
		p.mu.Unlock()
		if refuse {
			if p.readRefused && r.Body != nil {
				_, _ = io.Copy(io.Discard, r.Body)
			}
			h := http.Header{}
			h.Set(forward.HeaderUnprocessed, "app-unreachable")
			h.Set(proxyerr.HeaderProxyError, "app_unreachable; culprit=app; proxy=inbound; identity=spiffe://td/ns/b/sa/b")
			h.Set(proxyerr.HeaderError, "connecting to app: refused")
			return &http.Response{StatusCode: 502, Header: h, Body: http.NoBody}, nil
		}
		var b []byte
		if r.Body != nil {
			var err error
			if b, err = io.ReadAll(r.Body); err != nil {
				return nil, err
			}
		}
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("echo:" + string(b)))}, nil
	}), nil
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	_ = ln.Close()
	return a
}

func TestStage(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, "plain:"+string(b))
	}))
	defer app.Close()
	appAddr := strings.TrimPrefix(app.URL, "http://")
	id := identity.ID{TrustDomain: "td", Namespace: "b", ServiceAccount: "b"}
	meshed := func(addr string) balance.Endpoint { return balance.Endpoint{Addr: addr, Identity: id} }
	tests := []struct {
		name         string
		endpoints    []balance.Endpoint // nil with passthrough
		passthrough  string
		body         string
		unknownLen   bool // body of unknown length: replayed only when kept whole
		unprocessedN int
		readRefused  bool
		wantStatus   int
		wantBody     string
		wantReason   string // trellis-proxy-error reason
		wantRetries  map[string]float64
	}{
		{name: "plain endpoint", endpoints: []balance.Endpoint{{Addr: appAddr}}, body: "hi", wantStatus: 200, wantBody: "plain:hi"},
		{name: "passthrough address", passthrough: appAddr, body: "hi", wantStatus: 200, wantBody: "plain:hi"},
		{name: "no endpoints", endpoints: []balance.Endpoint{}, wantStatus: 503, wantReason: proxyerr.ReasonNoEndpoints},
		{name: "every endpoint refuses connections: gave up after retries", endpoints: []balance.Endpoint{{Addr: deadAddr(t)}, {Addr: deadAddr(t)}, {Addr: deadAddr(t)}},
			wantStatus: 502, wantReason: proxyerr.ReasonConnectError, wantRetries: map[string]float64{metrics.ReasonConnectError: 2}},
		{name: "not processed: replayed on the other endpoint with its body", endpoints: []balance.Endpoint{meshed("10.0.0.1:4143"), meshed("10.0.0.2:4143")},
			body: "payload", unprocessedN: 1, wantStatus: 200, wantBody: "echo:payload", wantRetries: map[string]float64{metrics.ReasonUnprocessed: 1}},
		{name: "not processed anywhere: the peer's reason carried back", endpoints: []balance.Endpoint{meshed("10.0.0.1:4143"), meshed("10.0.0.2:4143")},
			unprocessedN: 2, wantStatus: 502, wantReason: proxyerr.ReasonAppUnreachable, wantRetries: map[string]float64{metrics.ReasonUnprocessed: 2}},
		{name: "body of unknown length not read before the refusal is replayed whole", endpoints: []balance.Endpoint{meshed("10.0.0.1:4143"), meshed("10.0.0.2:4143")},
			body: "stream", unknownLen: true, unprocessedN: 1, wantStatus: 200, wantBody: "echo:stream", wantRetries: map[string]float64{metrics.ReasonUnprocessed: 1}},
		{name: "body of unknown length sent whole (a gRPC message) is replayed", endpoints: []balance.Endpoint{meshed("10.0.0.1:4143"), meshed("10.0.0.2:4143")},
			body: "grpc-message", unknownLen: true, readRefused: true, unprocessedN: 1, wantStatus: 200, wantBody: "echo:grpc-message", wantRetries: map[string]float64{metrics.ReasonUnprocessed: 1}},
		{name: "body of unknown length over 64 KiB is not kept: the peer's answer passes", endpoints: []balance.Endpoint{meshed("10.0.0.1:4143"), meshed("10.0.0.2:4143")},
			body: strings.Repeat("x", 64<<10+1), unknownLen: true, readRefused: true, unprocessedN: 1, wantStatus: 502, wantReason: proxyerr.ReasonAppUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := metrics.New(reg)
			if err != nil {
				t.Fatal(err)
			}
			errs := &proxyerr.Renderer{Direction: metrics.Outbound, Identity: "spiffe://td/ns/a/sa/a", Log: ratelog.New(nil, 0)}
			pp := &peers{unprocessedN: tt.unprocessedN, readRefused: tt.readRefused}
			plain := &http.Transport{}
			defer plain.CloseIdleConnections()
			stage := &Stage{Metrics: m, Errors: errs, Log: slog.New(slog.DiscardHandler), Mesh: pp.conn, Plain: plain, Unprocessed: func(error) bool { return false }}
			dest := pipeline.Dest{Dst: "b.ns:80", Addr: tt.passthrough}
			if tt.endpoints != nil {
				dest.Balancer = balance.New()
				dest.Balancer.Update(tt.endpoints)
			}
			o := &pipeline.Observe{Direction: metrics.Outbound, Metrics: m, Errors: errs, Next: pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
				x.Dest, x.Authority = dest, "b.ns:80"
				x.Key.DstService = dest.Dst
				return stage.Serve(x)
			})}
			var body io.Reader = strings.NewReader(tt.body)
			if tt.unknownLen {
				body = io.MultiReader(body)
			}
			r := httptest.NewRequest(http.MethodPost, "http://b.ns/", body)
			if tt.body == "" {
				r = httptest.NewRequest(http.MethodGet, "http://b.ns/", nil)
			}
			if tt.unknownLen {
				r.ContentLength = -1
			}
			w := httptest.NewRecorder()
			o.ServeHTTP(w, r)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d (%s; calls %v)", w.Code, tt.wantStatus, w.Header().Get(proxyerr.HeaderError), pp.calls)
			}
			if tt.wantBody != "" && w.Body.String() != tt.wantBody {
				t.Errorf("body %q, want %q", w.Body.String(), tt.wantBody)
			}
			if got := w.Header().Get(proxyerr.HeaderProxyError); tt.wantReason != "" && !strings.HasPrefix(got, tt.wantReason+";") {
				t.Errorf("trellis-proxy-error %q, want reason %s", got, tt.wantReason)
			}
			if w.Header().Get(forward.HeaderUnprocessed) != "" {
				t.Error("trellis-unprocessed reached the client")
			}
			if got := retries(t, reg); !equal(got, tt.wantRetries) {
				t.Errorf("retries %v, want %v", got, tt.wantRetries)
			}
		})
	}
}

func retries(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "trellis_retries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" {
					out[lp.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func equal(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// What counts against an endpoint: its 5xx and failing gRPC codes, and a
// peer proxy's own answer by its culprit, whatever the status or code.
func TestEndpointFailed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		h      http.Header
		want   bool
	}{
		{"the app's 200", 200, http.Header{}, false},
		{"the app's 500", 500, http.Header{}, true},
		{"the app's grpc UNAVAILABLE", 200, http.Header{"Content-Type": {"application/grpc"}, "Grpc-Status": {"14"}}, true},
		{"the app's grpc NOT_FOUND", 200, http.Header{"Content-Type": {"application/grpc"}, "Grpc-Status": {"5"}}, false},
		{"the peer proxy: the app unreachable", 502, http.Header{proxyerr.HeaderProxyError: {"app_unreachable; culprit=app; proxy=inbound"}}, true},
		{"the peer proxy as gRPC: a timeout of the app", 200, http.Header{"Content-Type": {"application/grpc"}, "Grpc-Status": {"4"}, proxyerr.HeaderProxyError: {"app_timeout; culprit=app; proxy=inbound"}}, true},
		{"the peer proxy as gRPC: the client's bad body", 200, http.Header{"Content-Type": {"application/grpc"}, "Grpc-Status": {"13"}, proxyerr.HeaderProxyError: {"bad_request_body; culprit=client; proxy=inbound"}}, false},
		{"the peer proxy: the client's 400", 400, http.Header{proxyerr.HeaderProxyError: {"bad_request; culprit=client; proxy=inbound"}}, false},
		{"an unmeshed app claiming the client's fault for its 500", 500, http.Header{proxyerr.HeaderProxyError: {"bad_request; culprit=client; proxy=inbound"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			meshed := !strings.HasPrefix(tc.name, "an unmeshed")
			if got := endpointFailed(&http.Response{StatusCode: tc.status, Header: tc.h}, meshed); got != tc.want {
				t.Fatalf("endpointFailed = %v, want %v", got, tc.want)
			}
		})
	}
}
