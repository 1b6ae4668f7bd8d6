package watchcache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// policyServer is a Policy service on a real gRPC server: each stream gets
// answer(port) at once (unless nil), then whatever push sends to its port.
type policyServer struct {
	apiv1.UnimplementedPolicyServer
	answer  func(port uint32) *apiv1.ServerPolicy
	streams *grpctest.Streams[uint32, *apiv1.ServerPolicy]
}

func newPolicyServer(answer func(uint32) *apiv1.ServerPolicy) *policyServer {
	return &policyServer{answer: answer, streams: grpctest.NewStreams[uint32, *apiv1.ServerPolicy]()}
}

func (s *policyServer) WatchInbound(req *apiv1.InboundPolicyRequest, st grpc.ServerStreamingServer[apiv1.ServerPolicy]) error {
	var first []*apiv1.ServerPolicy
	if p := s.answer(req.GetPort()); p != nil {
		first = append(first, p)
	}
	return s.streams.Serve(st.Context(), req.GetPort(), first, st.Send)
}

func (s *policyServer) push(port uint32, p *apiv1.ServerPolicy) { s.streams.Push(port, p) }

func (s *policyServer) counts(port uint32) (opened, active int) { return s.streams.Counts(port) }

// serve runs srv on addr ("127.0.0.1:0": a new port) until stop.
func serve(t *testing.T, addr string, srv *policyServer) (string, func()) {
	t.Helper()
	return grpctest.Serve(t, addr, func(gs *grpc.Server) { apiv1.RegisterPolicyServer(gs, srv) })
}

func dial(t *testing.T, addr string) apiv1.PolicyClient {
	t.Helper()
	return apiv1.NewPolicyClient(grpctest.Dial(t, addr))
}

type testCache = Cache[uint32, *apiv1.ServerPolicy]

func newCache(t *testing.T, client apiv1.PolicyClient, cfg Config[uint32, *apiv1.ServerPolicy]) (*testCache, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.NewControlPlane(reg, "policy")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Service, cfg.Metrics = "policy", m
	cfg.Open = func(ctx context.Context, port uint32) (Recv[*apiv1.ServerPolicy], error) {
		st, err := client.WatchInbound(ctx, &apiv1.InboundPolicyRequest{Workload: "spiffe://cluster.local/ns/t/sa/t", Port: port})
		if err != nil {
			return nil, err
		}
		return st.Recv, nil
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	}
	c := New(cfg)
	t.Cleanup(c.Close)
	return c, reg
}

func named(name string) *apiv1.ServerPolicy { return &apiv1.ServerPolicy{Name: name} }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// value is the value of name{service="policy", extra...} in reg, -1 if absent.
func value(t *testing.T, reg *prometheus.Registry, name string, extra ...string) float64 {
	t.Helper()
	labels := map[string]string{"service": "policy"}
	for i := 0; i+1 < len(extra); i += 2 {
		labels[extra[i]] = extra[i+1]
	}
	if v, ok := grpctest.Metric(t, reg, name, labels); ok {
		return v
	}
	return -1
}

func get(t *testing.T, c *testCache, port uint32) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, ok := c.Get(ctx, port)
	return p.GetName(), ok
}

func TestFirstAnswerThenUpdates(t *testing.T) {
	srv := newPolicyServer(func(port uint32) *apiv1.ServerPolicy { return named(fmt.Sprint("p", port)) })
	a, _ := serve(t, "127.0.0.1:0", srv)
	c, reg := newCache(t, dial(t, a), Config[uint32, *apiv1.ServerPolicy]{})

	before := time.Now()
	// Get waits for the first message: no polling.
	if name, ok := get(t, c, 8080); !ok || name != "p8080" {
		t.Fatalf("Get = %q, %v; want p8080 from the controller", name, ok)
	}
	srv.push(8080, named("second"))
	waitFor(t, "the pushed answer", func() bool { name, _ := get(t, c, 8080); return name == "second" })

	if got := value(t, reg, "trellis_control_plane_updates_total", "result", "ok"); got != 2 {
		t.Errorf("updates ok = %v, want 2", got)
	}
	if got := value(t, reg, "trellis_control_plane_connected"); got != 1 {
		t.Errorf("connected = %v, want 1", got)
	}
	if got := value(t, reg, "trellis_control_plane_watches"); got != 1 {
		t.Errorf("watches = %v, want 1", got)
	}
	if got := value(t, reg, "trellis_control_plane_last_update_timestamp_seconds"); got < float64(before.Unix()) {
		t.Errorf("last update = %v, before the test started (%d)", got, before.Unix())
	}
}

func TestNoAnswerYet(t *testing.T) {
	srv := newPolicyServer(func(uint32) *apiv1.ServerPolicy { return nil })
	a, _ := serve(t, "127.0.0.1:0", srv)
	c, _ := newCache(t, dial(t, a), Config[uint32, *apiv1.ServerPolicy]{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if p, ok := c.Get(ctx, 80); ok || p != nil {
		t.Fatalf("Get = %v, %v; want no answer", p, ok)
	}
	// The watch stays: the answer arrives later and is then served.
	srv.push(80, named("late"))
	waitFor(t, "the late answer", func() bool { name, ok := get(t, c, 80); return ok && name == "late" })
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close() // nothing listens there now
	c, reg := newCache(t, dial(t, a), Config[uint32, *apiv1.ServerPolicy]{})
	// A failed stream answers waiting callers at once: they use their
	// default rather than wait for ctx.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if _, ok := c.Get(ctx, 80); ok {
		t.Fatal("answer from nowhere")
	}
	t.Logf("no answer after %v", time.Since(start))
	if ctx.Err() != nil {
		t.Fatal("Get waited for its context instead of the stream's failure")
	}
	waitFor(t, "stream errors counted", func() bool { return value(t, reg, "trellis_control_plane_stream_errors_total") >= 1 })
	if got := value(t, reg, "trellis_control_plane_connected"); got != 0 {
		t.Fatalf("connected = %v, want 0", got)
	}
}

func TestOutageKeepsAnswerThenReplaces(t *testing.T) {
	srv1 := newPolicyServer(func(uint32) *apiv1.ServerPolicy { return named("before") })
	a, stop1 := serve(t, "127.0.0.1:0", srv1)
	c, reg := newCache(t, dial(t, a), Config[uint32, *apiv1.ServerPolicy]{})
	if name, ok := get(t, c, 80); !ok || name != "before" {
		t.Fatalf("Get = %q, %v", name, ok)
	}
	stop1()
	waitFor(t, "disconnect seen", func() bool { return value(t, reg, "trellis_control_plane_connected") == 0 })
	if name, ok := get(t, c, 80); !ok || name != "before" {
		t.Fatalf("Get during the outage = %q, %v; want the cached answer", name, ok)
	}
	srv2 := newPolicyServer(func(uint32) *apiv1.ServerPolicy { return named("after") })
	serve(t, a, srv2)
	waitFor(t, "the new controller's answer", func() bool { name, _ := get(t, c, 80); return name == "after" })
	waitFor(t, "reconnected", func() bool { return value(t, reg, "trellis_control_plane_connected") == 1 })
	if opened, _ := srv2.counts(80); opened != 1 {
		t.Fatalf("the new server saw %d streams, want 1", opened)
	}
	if got := value(t, reg, "trellis_control_plane_stream_errors_total"); got < 1 {
		t.Fatalf("stream errors = %v, want the broken stream counted", got)
	}
}

func TestSharedStream(t *testing.T) {
	srv := newPolicyServer(func(port uint32) *apiv1.ServerPolicy { return named(fmt.Sprint(port)) })
	a, _ := serve(t, "127.0.0.1:0", srv)
	c, _ := newCache(t, dial(t, a), Config[uint32, *apiv1.ServerPolicy]{})
	const n = 64
	names := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			names[i], _ = get(t, c, uint32(8000+i%2))
		}()
	}
	wg.Wait()
	for i, name := range names {
		if want := fmt.Sprint(8000 + i%2); name != want {
			t.Fatalf("caller %d got %q, want %q", i, name, want)
		}
	}
	for _, port := range []uint32{8000, 8001} {
		if opened, _ := srv.counts(port); opened != 1 {
			t.Errorf("port %d: %d streams, want 1", port, opened)
		}
	}
}

func TestIdleSweep(t *testing.T) {
	srv := newPolicyServer(func(uint32) *apiv1.ServerPolicy { return named("p") })
	a, _ := serve(t, "127.0.0.1:0", srv)
	c, reg := newCache(t, dial(t, a), Config[uint32, *apiv1.ServerPolicy]{IdleTimeout: 100 * time.Millisecond, Pinned: []uint32{1}})
	get(t, c, 80)
	waitFor(t, "idle stream closed", func() bool { _, active := srv.counts(80); return active == 0 })
	waitFor(t, "watches gauge", func() bool { return value(t, reg, "trellis_control_plane_watches") == 1 })
	// The pinned port outlived several idle timeouts on one stream.
	if opened, active := srv.counts(1); opened != 1 || active != 1 {
		t.Fatalf("pinned port: %d streams opened, %d active; want 1, 1", opened, active)
	}
	if name, ok := get(t, c, 80); !ok || name != "p" {
		t.Fatalf("Get after the sweep = %q, %v", name, ok)
	}
	if opened, _ := srv.counts(80); opened != 2 {
		t.Fatalf("%d streams, want 2 (reopened after the sweep)", opened)
	}
}

// A watch swept before its first answer releases the callers waiting for
// one, rather than leaving them to their deadlines.
func TestSweptWhileWaiting(t *testing.T) {
	srv := newPolicyServer(func(uint32) *apiv1.ServerPolicy { return nil })
	a, _ := serve(t, "127.0.0.1:0", srv)
	c, _ := newCache(t, dial(t, a), Config[uint32, *apiv1.ServerPolicy]{IdleTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if _, ok := c.Get(ctx, 80); ok {
		t.Fatal("answer from a server that sends none")
	}
	t.Logf("released %v after the call", time.Since(start).Round(time.Millisecond))
	if ctx.Err() != nil {
		t.Fatal("Get waited for its deadline")
	}
	waitFor(t, "swept stream closed", func() bool { _, active := srv.counts(80); return active == 0 })
}

func TestBusyNotSwept(t *testing.T) {
	srv := newPolicyServer(func(uint32) *apiv1.ServerPolicy { return named("p") })
	a, _ := serve(t, "127.0.0.1:0", srv)
	c, _ := newCache(t, dial(t, a), Config[uint32, *apiv1.ServerPolicy]{IdleTimeout: 100 * time.Millisecond})
	end := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(end) {
		c.Observe(80) // traffic keeps it
		time.Sleep(5 * time.Millisecond)
	}
	if opened, active := srv.counts(80); opened != 1 || active != 1 {
		t.Fatalf("streams: %d opened, %d active; want 1, 1", opened, active)
	}
}

func TestWatchBound(t *testing.T) {
	srv := newPolicyServer(func(port uint32) *apiv1.ServerPolicy { return named(fmt.Sprint(port)) })
	a, _ := serve(t, "127.0.0.1:0", srv)
	c, _ := newCache(t, dial(t, a), Config[uint32, *apiv1.ServerPolicy]{MaxWatches: 2, Pinned: []uint32{1}})
	for _, port := range []uint32{80, 81} {
		if _, ok := get(t, c, port); !ok {
			t.Fatalf("port %d: no answer", port)
		}
	}
	c.Observe(82)
	if _, ok := get(t, c, 83); ok {
		t.Fatal("a key beyond the bound got an answer")
	}
	for _, port := range []uint32{82, 83} {
		if opened, _ := srv.counts(port); opened != 0 {
			t.Fatalf("port %d beyond the bound opened %d streams", port, opened)
		}
	}
	if c.Len() != 3 {
		t.Fatalf("Len = %d, want 3 (two learned, one pinned)", c.Len())
	}
}

func TestInvalidAnswerRefused(t *testing.T) {
	srv := newPolicyServer(func(uint32) *apiv1.ServerPolicy { return named("good") })
	a, _ := serve(t, "127.0.0.1:0", srv)
	c, reg := newCache(t, dial(t, a), Config[uint32, *apiv1.ServerPolicy]{
		Check: func(_ uint32, p *apiv1.ServerPolicy) error {
			if p.GetName() == "bad" {
				return errors.New("bad")
			}
			return nil
		},
	})
	get(t, c, 80)
	srv.push(80, named("bad"))
	srv.push(80, named("good2"))
	waitFor(t, "the next good answer", func() bool { name, _ := get(t, c, 80); return name == "good2" })
	if got := value(t, reg, "trellis_control_plane_updates_total", "result", "invalid"); got != 1 {
		t.Fatalf("invalid = %v, want 1", got)
	}
}

func TestClose(t *testing.T) {
	srv := newPolicyServer(func(uint32) *apiv1.ServerPolicy { return named("p") })
	a, _ := serve(t, "127.0.0.1:0", srv)
	c, _ := newCache(t, dial(t, a), Config[uint32, *apiv1.ServerPolicy]{})
	get(t, c, 80)
	c.Close()
	c.Close() // idempotent
	waitFor(t, "stream closed", func() bool { _, active := srv.counts(80); return active == 0 })
	if _, ok := get(t, c, 80); ok {
		t.Fatal("Get after Close answered")
	}
}

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min, max time.Duration
		r        float64
		reset    int // reset before this attempt (0: never)
		want     []time.Duration
	}{
		{"doubles up to max, no jitter at r=0.5", 100 * time.Millisecond, time.Second, 0.5, 0,
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}},
		{"lowest jitter is -25%", 100 * time.Millisecond, time.Second, 0, 0,
			[]time.Duration{75 * time.Millisecond, 150 * time.Millisecond, 300 * time.Millisecond}},
		{"r=0.9 is +20%, also at max", 100 * time.Millisecond, 200 * time.Millisecond, 0.9, 0,
			[]time.Duration{120 * time.Millisecond, 240 * time.Millisecond, 240 * time.Millisecond}},
		{"reset starts over", 10 * time.Millisecond, time.Second, 0.5, 3,
			[]time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 10 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackoff(tc.min, tc.max)
			for i, want := range tc.want {
				if tc.reset != 0 && i == tc.reset {
					b.reset()
				}
				if got := b.wait(tc.r); got != want {
					t.Fatalf("attempt %d: wait %v, want %v", i, got, want)
				}
			}
		})
	}
}
