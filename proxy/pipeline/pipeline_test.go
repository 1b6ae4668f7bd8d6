package pipeline

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// TestChainOrder: the first layer listed is the first a request meets,
// and each layer sees what the ones before it set.
func TestChainOrder(t *testing.T) {
	var seen []string
	layer := func(name string) Layer {
		return func(next Handler) Handler {
			return HandlerFunc(func(x *Exchange) error {
				seen = append(seen, name+"("+x.Authority+")")
				x.Authority += name
				return next.Serve(x)
			})
		}
	}
	end := HandlerFunc(func(x *Exchange) error { seen = append(seen, "end("+x.Authority+")"); return nil })
	h := Chain(end, layer("a"), Identity, layer("b"), layer("c"))
	if err := h.Serve(&Exchange{}); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(seen, " "), "a() b(a) c(ab) end(abc)"; got != want {
		t.Errorf("stages ran %q, want %q", got, want)
	}
}

// samples are the non-zero series of reg: name, the labels the pipeline
// sets, and value (a histogram's sample count).
func samples(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "status_code", "grpc_status", "classification", "reason", "dst_service":
					ls = append(ls, lp.GetName()+"="+lp.GetValue())
				}
			}
			v := m.GetCounter().GetValue()
			if h := m.GetHistogram(); h != nil {
				v = float64(h.GetSampleCount())
			}
			if v == 0 {
				continue
			}
			out = append(out, mf.GetName()+"{"+strings.Join(ls, ",")+"} "+strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	sort.Strings(out)
	return out
}

// sharedErr is one error value returned for many requests: rendering it
// for a gRPC call must not change it for the next (plain HTTP) one.
var sharedErr = proxyerr.New(http.StatusServiceUnavailable, proxyerr.ReasonNoEndpoints, "no endpoints for web.ns:80")

// TestObserve: every way out of the chain is counted once, and an error
// is rendered once, by the one renderer.
func TestObserve(t *testing.T) {
	tests := []struct {
		name       string
		serve      func(x *Exchange) error
		wantStatus int
		grpc       bool   // the request is a gRPC call
		wantHeader string // trellis-proxy-error
		wantGRPC   string // grpc-status of the answer
		wantAbort  bool
		want       []string
	}{
		{
			name: "response written",
			serve: func(x *Exchange) error {
				x.Key.DstService = "web.ns:80"
				x.W.WriteHeader(http.StatusCreated)
				x.Wrote(http.StatusCreated, "", nil)
				return nil
			},
			wantStatus: http.StatusCreated,
			want: []string{
				"trellis_response_latency_seconds{dst_service=web.ns:80} 1",
				"trellis_requests_total{dst_service=web.ns:80} 1",
				"trellis_responses_total{classification=success,dst_service=web.ns:80,grpc_status=,status_code=201} 1",
			},
		},
		{
			name: "proxy error rendered once",
			serve: func(x *Exchange) error {
				x.Key.DstService = "web.ns:80"
				return proxyerr.New(http.StatusServiceUnavailable, proxyerr.ReasonNoEndpoints, "no endpoints for web.ns:80")
			},
			wantStatus: http.StatusServiceUnavailable,
			wantHeader: "no_endpoints; culprit=mesh; proxy=outbound; identity=spiffe://test/me",
			want: []string{
				"trellis_response_latency_seconds{dst_service=web.ns:80} 1",
				"trellis_request_errors_total{dst_service=web.ns:80,reason=no_endpoints} 1",
				"trellis_requests_total{dst_service=web.ns:80} 1",
				"trellis_responses_total{classification=failure,dst_service=web.ns:80,grpc_status=,status_code=503} 1",
			},
		},
		{
			name:       "other error: 502 upstream_error",
			serve:      func(x *Exchange) error { return errors.New("boom") },
			wantStatus: http.StatusBadGateway,
			wantHeader: "upstream_error; culprit=mesh; proxy=outbound; identity=spiffe://test/me",
			want: []string{
				"trellis_response_latency_seconds{dst_service=} 1",
				"trellis_request_errors_total{dst_service=,reason=upstream_error} 1",
				"trellis_requests_total{dst_service=} 1",
				"trellis_responses_total{classification=failure,dst_service=,grpc_status=,status_code=502} 1",
			},
		},
		{
			name: "gRPC call: any stage's error answered trailers-only, grpc-status and message",
			grpc: true,
			serve: func(x *Exchange) error {
				x.Key.DstService = "web.ns:80"
				return sharedErr
			},
			wantStatus: http.StatusOK,
			wantHeader: "no_endpoints; culprit=mesh; proxy=outbound; identity=spiffe://test/me",
			wantGRPC:   "14",
			want: []string{
				"trellis_response_latency_seconds{dst_service=web.ns:80} 1",
				"trellis_request_errors_total{dst_service=web.ns:80,reason=no_endpoints} 1",
				"trellis_requests_total{dst_service=web.ns:80} 1",
				"trellis_responses_total{classification=failure,dst_service=web.ns:80,grpc_status=14,status_code=200} 1",
			},
		},
		{
			name:       "gRPC call, other error: UNAVAILABLE",
			grpc:       true,
			serve:      func(x *Exchange) error { return errors.New("boom") },
			wantStatus: http.StatusOK,
			wantHeader: "upstream_error; culprit=mesh; proxy=outbound; identity=spiffe://test/me",
			wantGRPC:   "14",
			want: []string{
				"trellis_response_latency_seconds{dst_service=} 1",
				"trellis_request_errors_total{dst_service=,reason=upstream_error} 1",
				"trellis_requests_total{dst_service=} 1",
				"trellis_responses_total{classification=failure,dst_service=,grpc_status=14,status_code=200} 1",
			},
		},
		{
			name:       "client gone: cancelled, nobody answered",
			serve:      func(x *Exchange) error { return ErrCancelled },
			wantStatus: http.StatusOK, // the recorder's default: nothing written
			want: []string{
				"trellis_requests_total{dst_service=} 1",
				"trellis_responses_total{classification=cancelled,dst_service=,grpc_status=,status_code=0} 1",
			},
		},
		{
			name:       "tunnel: counted as TCP only",
			serve:      func(x *Exchange) error { return nil },
			wantStatus: http.StatusOK,
		},
		{
			name: "response broke mid-body: failure, stream aborted",
			serve: func(x *Exchange) error {
				x.W.WriteHeader(http.StatusOK)
				x.Wrote(http.StatusOK, "", io.ErrUnexpectedEOF)
				return nil
			},
			wantStatus: http.StatusOK,
			wantAbort:  true,
			want: []string{
				"trellis_response_latency_seconds{dst_service=} 1",
				"trellis_requests_total{dst_service=} 1",
				"trellis_responses_total{classification=failure,dst_service=,grpc_status=,status_code=200} 1",
			},
		},
		{
			name: "upgrade hand-over failed: failure without latency",
			serve: func(x *Exchange) error {
				x.Metrics()
				x.Tunnelled(0, errors.New("hijack failed"))
				return nil
			},
			wantStatus: http.StatusOK,
			want: []string{
				"trellis_requests_total{dst_service=} 1",
				"trellis_responses_total{classification=failure,dst_service=,grpc_status=,status_code=0} 1",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := metrics.New(reg)
			if err != nil {
				t.Fatal(err)
			}
			o := &Observe{
				Direction: metrics.Outbound, Metrics: m,
				Errors: &proxyerr.Renderer{Direction: metrics.Outbound, Identity: "spiffe://test/me", Log: ratelog.New(nil, 0)},
				Next:   HandlerFunc(tt.serve),
			}
			w := httptest.NewRecorder()
			aborted := func() (aborted bool) {
				defer func() {
					if v := recover(); v != nil {
						if v != http.ErrAbortHandler {
							panic(v)
						}
						aborted = true
					}
				}()
				r := httptest.NewRequest(http.MethodGet, "http://web.ns/", nil)
				if tt.grpc {
					r.Method = http.MethodPost
					r.ProtoMajor, r.ProtoMinor, r.Proto = 2, 0, "HTTP/2.0"
					r.Header.Set("Content-Type", "application/grpc")
				}
				o.ServeHTTP(w, r)
				return false
			}()
			if aborted != tt.wantAbort {
				t.Errorf("aborted = %v, want %v", aborted, tt.wantAbort)
			}
			if w.Code != tt.wantStatus {
				t.Errorf("status %d, want %d", w.Code, tt.wantStatus)
			}
			if got := w.Header().Get("Grpc-Status"); got != tt.wantGRPC {
				t.Errorf("grpc-status %q, want %q", got, tt.wantGRPC)
			}
			if tt.wantGRPC != "" && w.Header().Get("Grpc-Message") == "" {
				t.Error("no grpc-message")
			}
			if got := w.Header().Get(proxyerr.HeaderProxyError); got != tt.wantHeader {
				t.Errorf("trellis-proxy-error %q, want %q", got, tt.wantHeader)
			}
			got := samples(t, reg)
			sort.Strings(tt.want)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
	if sharedErr.GRPC {
		t.Error("rendering for a gRPC call changed the shared error")
	}
}

func TestGRPCStatus(t *testing.T) {
	tests := []struct {
		name    string
		header  http.Header
		trailer http.Header
		want    string
	}{
		{"not gRPC", http.Header{"Grpc-Status": {"3"}}, nil, ""},
		{"trailer", http.Header{"Content-Type": {"application/grpc"}}, http.Header{"Grpc-Status": {"5"}}, "5"},
		{"trailers-only", http.Header{"Content-Type": {"application/grpc+proto"}, "Grpc-Status": {"14"}}, nil, "14"},
		{"trailer wins", http.Header{"Content-Type": {"application/grpc"}, "Grpc-Status": {"0"}}, http.Header{"Grpc-Status": {"2"}}, "2"},
		{"gRPC without status", http.Header{"Content-Type": {"application/grpc"}}, nil, ""},
	}
	for _, tt := range tests {
		if got := GRPCStatus(&http.Response{Header: tt.header, Trailer: tt.trailer}); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
