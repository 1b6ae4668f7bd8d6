//lint:file-ignore SA1019 x/net/http2 ServeConn/NewClientConn give per-connection control (mesh TLS, sniffed conns, one pooled conn per peer) that net/http does not expose yet.

package outbound_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

var benchBody = []byte(`{"id":1,"title":"The Left Hand of Darkness","author":"Ursula K. Le Guin"}`)

func benchApp() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(benchBody)
	})
}

func runBench(b *testing.B, client *http.Client, target string) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(target)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkDirectHTTP1 is the no-proxy baseline for the benchmarks below.
func BenchmarkDirectHTTP1(b *testing.B) {
	ln := listen(b)
	srv := &http.Server{Handler: benchApp()}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	defer tr.CloseIdleConnections()
	runBench(b, &http.Client{Transport: tr}, "http://"+ln.Addr().String()+"/books/1")
}

// BenchmarkOutboundInboundHTTP1: HTTP/1.1 app -> outbound -> mTLS HTTP/2 ->
// inbound -> HTTP/1.1 app, all in process over loopback.
func BenchmarkOutboundInboundHTTP1(b *testing.B) {
	p := newPair(b, pairOpts{app: benchApp()})
	runBench(b, p.client, url("/books/1"))
}

// BenchmarkOutboundInboundH2C: an h2c (prior knowledge) app client through the
// pair to an h2c app.
func BenchmarkOutboundInboundH2C(b *testing.B) {
	appLn := listen(b)
	h2s := &http2.Server{}
	go func() {
		for {
			c, err := appLn.Accept()
			if err != nil {
				return
			}
			go h2s.ServeConn(c, &http2.ServeConnOpts{Handler: benchApp()})
		}
	}()
	defer appLn.Close()
	p := newPair(b, pairOpts{appListener: appLn})
	runBench(b, &http.Client{Transport: h2cClient(p.outAddr)}, url("/books/1"))
}

// h2cClient speaks prior-knowledge HTTP/2 to addr whatever the URL says.
func h2cClient(addr string) *http2.Transport {
	return &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
}

func runSerial(b *testing.B, client *http.Client, target string) {
	b.ReportAllocs()
	lat := make([]time.Duration, 0, 1024)
	for b.Loop() {
		t0 := time.Now()
		resp, err := client.Get(target)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		lat = append(lat, time.Since(t0))
	}
	// The median is robust to scheduling noise on a shared machine.
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// The Serial variants measure latency (one request at a time); the others
// measure CPU per request under parallel load.
func BenchmarkDirectHTTP1Serial(b *testing.B) {
	ln := listen(b)
	srv := &http.Server{Handler: benchApp()}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	runSerial(b, &http.Client{Transport: tr}, "http://"+ln.Addr().String()+"/books/1")
}

func BenchmarkOutboundInboundHTTP1Serial(b *testing.B) {
	p := newPair(b, pairOpts{app: benchApp()})
	runSerial(b, p.client, url("/books/1"))
}
