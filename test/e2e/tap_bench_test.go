package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/bench/loadgen"
	"github.com/trellis-mesh/trellis/bench/procstat"
	"github.com/trellis-mesh/trellis/test/harness"
)

// BenchmarkTapCPU measures the proxies' CPU per request at 1,000 rps
// through a client proxy and a server proxy (real processes, mesh mTLS),
// with no tap, then with a tap open on both proxies matching every
// request (max_rps 1000, header names, a reading client), alternating the
// phases so the machine's noise is shared; it prints the ratio against
// no tap from the same run. Run it without -race:
//
//	go test -run '^$' -bench BenchmarkTapCPU -benchtime 1x ./test/e2e/
func BenchmarkTapCPU(b *testing.B) {
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	up := startPlainUpstream(b)
	store := harness.Store{
		Services: []harness.Service{{Name: "up", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client"},
			{Name: "up-w", Namespace: ns, ServiceAccount: "up", Endpoints: []harness.Endpoint{{Service: "up", Port: 80}}},
		},
	}
	m := harness.NewMesh(b, bins, &ports, store)
	m.StartController()
	server := m.StartReadyProxy(harness.ProxySpec{Workload: "up-w", AppAddr: up})
	client := m.StartReadyProxy(harness.ProxySpec{Workload: "client"})
	workers, closer := loadgen.HTTPWorkers(loadgen.HTTPTarget{Addr: client.OutboundAddr, Host: "up.e2e:80", Path: "/books/1"}, 64)
	defer closer.Close()
	const rate, phase, rounds = 1000, 5 * time.Second, 2
	procs := procstat.Group{client.Process.Pid(), server.Process.Pid()}
	run := func(d time.Duration) (time.Duration, int64) {
		before, err := procs.CPU()
		if err != nil {
			b.Fatal(err)
		}
		res, err := loadgen.Run(context.Background(), loadgen.Config{Rate: rate, Duration: d}, workers)
		if err != nil {
			b.Fatal(err)
		}
		after, err := procs.CPU()
		if err != nil {
			b.Fatal(err)
		}
		if res.Errors > 0 {
			b.Fatalf("%d requests failed: %s", res.Errors, res.FirstError)
		}
		return after - before, res.Completed
	}
	run(time.Second) // warm: connections, endpoints, certificates
	var cpu [2]time.Duration
	var reqs [2]int64
	var events int
	b.ResetTimer()
	for range rounds {
		c, n := run(phase)
		cpu[0], reqs[0] = cpu[0]+c, reqs[0]+n
		taps := openBenchTaps(b, m, client, server)
		c, n = run(phase)
		cpu[1], reqs[1] = cpu[1]+c, reqs[1]+n
		events += taps()
	}
	b.StopTimer()
	per := func(i int) float64 { return float64(cpu[i].Microseconds()) / float64(reqs[i]) }
	b.ReportMetric(per(0), "cpu-us/req-notap")
	b.ReportMetric(per(1), "cpu-us/req-tap")
	b.ReportMetric(per(1)/per(0), "ratio")
	fmt.Printf("tap CPU at %d rps, both proxies, %d x %s per phase:\n", rate, rounds, phase)
	fmt.Printf("  no tap:                 %7.1f µs CPU/request (%d requests)\n", per(0), reqs[0])
	fmt.Printf("  tap matching everything: %6.1f µs CPU/request (%d requests, %d events received)\n", per(1), reqs[1], events)
	fmt.Printf("  ratio tap / no tap:     %7.3f\n", per(1)/per(0))
}

// openBenchTaps opens a tap of everything on each proxy and returns a
// func that closes them and reports how many events arrived.
func openBenchTaps(b *testing.B, m *harness.Mesh, pxs ...*harness.Proxy) func() int {
	req := &apiv1.ObserveRequest{MaxRps: 1000, HeaderNames: true}
	var streams []*tapStream
	for _, px := range pxs {
		streams = append(streams, openTap(b, px, tapTLS(b, m, controllerID(b, m), px), req))
		waitOpen(b, px, 1)
	}
	return func() int {
		n := 0
		for _, ts := range streams {
			ts.stop()
			ts.mu.Lock()
			n += len(ts.events)
			ts.mu.Unlock()
		}
		for _, px := range pxs {
			waitOpen(b, px, 0)
		}
		return n
	}
}

// startPlainUpstream is a minimal HTTP/1.1 app answering "ok".
func startPlainUpstream(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}
