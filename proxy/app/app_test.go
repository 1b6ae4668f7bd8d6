package app

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/h2pool"
	"github.com/trellis-mesh/trellis/proxy/internal/h2fake"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// closer is an app that accepts and closes every connection unanswered.
func closer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			_, _ = c.Read(buf)
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}

// refuser is a prior-knowledge HTTP/2 app that refuses every stream it
// is sent, unprocessed: with RST_STREAM REFUSED_STREAM, or with a GOAWAY
// below it (goAway), as a gRPC server that stops gracefully does. It
// counts the streams it was sent in n, when n is not nil.
func refuser(t *testing.T, goAway bool, n *atomic.Int32) string {
	return h2fake.Serve(t, func(fr *http2.Framer, id uint32) {
		if n != nil {
			n.Add(1)
		}
		if goAway {
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		} else {
			_ = fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		}
	})
}

func TestStage(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An app's own words that only a proxy may say.
		w.Header().Set(forward.HeaderUnprocessed, "lie")
		w.Header().Set(proxyerr.HeaderProxyError, "timeout; culprit=mesh; proxy=outbound")
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Proto+" "+string(b))
	}))
	defer app.Close()
	live := strings.TrimPrefix(app.URL, "http://")
	app2 := httptest.NewUnstartedServer(app.Config.Handler)
	app2.Config.Protocols = new(http.Protocols)
	app2.Config.Protocols.SetUnencryptedHTTP2(true)
	app2.Start()
	defer app2.Close()
	live2 := strings.TrimPrefix(app2.URL, "http://")
	var refusedGets atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()
	tests := []struct {
		name            string
		addr            string
		mesh            bool // the caller is a mesh peer
		grpc            bool
		get             bool // a GET without a body, not a POST
		appProto        forward.AppProto
		wantStatus      int
		wantBody        string
		wantReason      string
		wantUnprocessed bool
	}{
		{name: "HTTP/1 to the app, proxy-only headers of the app removed", addr: live, wantStatus: 200, wantBody: "HTTP/1.1 hello"},
		{name: "app not listening, mesh caller: unprocessed", addr: dead, mesh: true, wantStatus: 502, wantReason: proxyerr.ReasonAppUnreachable, wantUnprocessed: true},
		{name: "app not listening, plain caller", addr: dead, wantStatus: 502, wantReason: proxyerr.ReasonAppUnreachable},
		{name: "app closes without answering", addr: closer(t), mesh: true, wantStatus: 502, wantReason: proxyerr.ReasonAppError},
		{name: "HTTP/2 to the app", addr: live2, appProto: forward.AppProtoHTTP2, wantStatus: 200, wantBody: "HTTP/2.0 hello"},
		{name: "HTTP/2 app refuses the stream, mesh caller: unprocessed", addr: refuser(t, false, nil), appProto: forward.AppProtoHTTP2, mesh: true, wantStatus: 503, wantReason: proxyerr.ReasonAppUnreachable, wantUnprocessed: true},
		{name: "gRPC app stops gracefully (GOAWAY), mesh caller: unprocessed", addr: refuser(t, true, nil), grpc: true, appProto: forward.AppProtoGRPC, mesh: true, wantStatus: 503, wantReason: proxyerr.ReasonAppUnreachable, wantUnprocessed: true},
		{name: "HTTP/2 app refuses a GET twice (sent again once), mesh caller: unprocessed", addr: refuser(t, false, &refusedGets), get: true, appProto: forward.AppProtoHTTP2, mesh: true, wantStatus: 503, wantReason: proxyerr.ReasonAppUnreachable, wantUnprocessed: true},
		{name: "HTTP/2 app refuses the stream, plain caller", addr: refuser(t, false, nil), appProto: forward.AppProtoHTTP2, wantStatus: 503, wantReason: proxyerr.ReasonAppUnreachable},
		{name: "gRPC to an HTTP/1.1-only app", addr: live, grpc: true, appProto: forward.AppProtoHTTP1, wantStatus: 502, wantReason: proxyerr.ReasonProtocolMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := metrics.New(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			var d net.Dialer
			h1 := &forward.H1Client{Dialer: d}
			defer h1.CloseIdleConnections(true)
			h2c := h2pool.New(h2pool.Config[string]{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
				return d.DialContext(ctx, "tcp", addr)
			}})
			defer h2c.Shutdown(context.Background())
			h2 := func(ctx context.Context, addr string) (http.RoundTripper, error) { return h2c.Get(ctx, addr) }
			s := &Stage{Metrics: m, H1: h1, H2: h2, Dial: d.DialContext}
			errs := &proxyerr.Renderer{Direction: metrics.Inbound, Identity: "spiffe://td/ns/b/sa/b", Log: ratelog.New(nil, 0)}
			o := &pipeline.Observe{Direction: metrics.Inbound, Metrics: m, Errors: errs, Next: pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
				x.AppAddr, x.AppProto, x.CallerH1 = tt.addr, tt.appProto, x.R.ProtoMajor == 1
				x.Conn.TLS = tt.mesh
				return s.Serve(x)
			})}
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("hello"))
			if tt.get {
				r = httptest.NewRequest(http.MethodGet, "/", nil)
			}
			if tt.grpc {
				r.ProtoMajor, r.ProtoMinor, r.Proto = 2, 0, "HTTP/2.0"
				r.Header.Set("Content-Type", "application/grpc")
			}
			r = r.WithContext(context.Background())
			w := httptest.NewRecorder()
			o.ServeHTTP(w, r)
			switch {
			case tt.grpc && tt.wantStatus != http.StatusOK:
				// The proxy's own answer to a gRPC call: trailers-only.
				if got, want := w.Header().Get("Grpc-Status"), proxyerr.GRPCCode(tt.wantStatus); w.Code != http.StatusOK || got != want {
					t.Fatalf("status %d grpc-status %q, want 200 and %s (%s)", w.Code, got, want, w.Header().Get(proxyerr.HeaderError))
				}
			case w.Code != tt.wantStatus:
				t.Fatalf("status %d, want %d (%s)", w.Code, tt.wantStatus, w.Header().Get(proxyerr.HeaderError))
			}
			if tt.wantBody != "" && w.Body.String() != tt.wantBody {
				t.Errorf("body %q, want %q", w.Body.String(), tt.wantBody)
			}
			pe := w.Header().Get(proxyerr.HeaderProxyError)
			if tt.wantReason == "" && pe != "" || tt.wantReason != "" && !strings.HasPrefix(pe, tt.wantReason+"; culprit=") {
				t.Errorf("trellis-proxy-error %q, want reason %q", pe, tt.wantReason)
			}
			if got := w.Header().Get(forward.HeaderUnprocessed) != ""; got != tt.wantUnprocessed {
				t.Errorf("trellis-unprocessed set %v, want %v", got, tt.wantUnprocessed)
			}
		})
	}
	// A request without a body is sent once more when refused
	// unprocessed (the app may have been restarting), and only once.
	if n := refusedGets.Load(); n != 2 {
		t.Errorf("the refused GET was sent %d times, want 2", n)
	}
}
