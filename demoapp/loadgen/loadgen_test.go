package loadgen

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/echo"
	"github.com/trellis-mesh/trellis/demoapp/faults"
)

// startEcho runs an echo server failing failRate of requests.
func startEcho(t *testing.T, failRate float64) string {
	t.Helper()
	inj, err := faults.New(failRate)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(echo.NewHandler(echo.Config{Faults: inj}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func checkInvariants(t *testing.T, r Result) {
	t.Helper()
	if r.Sent != r.Succeeded+r.Failed+r.Cancelled {
		t.Errorf("sent %d != ok %d + failed %d + cancelled %d", r.Sent, r.Succeeded, r.Failed, r.Cancelled)
	}
	var statuses uint64
	for _, n := range r.Statuses {
		statuses += n
	}
	if statuses != r.Succeeded+r.Failed {
		t.Errorf("statuses %v add up to %d, want %d", r.Statuses, statuses, r.Succeeded+r.Failed)
	}
	// The quantiles are of the answered requests' latencies: ordered, at
	// most the largest, and present once anything was answered.
	if !(r.P50LatencyMS <= r.P99LatencyMS && r.P99LatencyMS <= r.MaxLatencyMS) || (statuses > 0 && r.P50LatencyMS <= 0) {
		t.Errorf("latencies p50 %v, p99 %v, max %v: want 0 < p50 <= p99 <= max", r.P50LatencyMS, r.P99LatencyMS, r.MaxLatencyMS)
	}
}

func TestRunCountsOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		failRate float64
		check    func(t *testing.T, r Result)
	}{
		{"all ok", 0, func(t *testing.T, r Result) {
			if r.Failed != 0 || r.Succeeded != r.Sent || r.Statuses["200"] != r.Sent {
				t.Errorf("result %+v, want every request ok", r)
			}
		}},
		{"half fail", 0.5, func(t *testing.T, r Result) {
			// 100 requests at p = 0.5: one-sided outcomes have probability 2^-99.
			if r.Succeeded == 0 || r.Failed == 0 || r.Statuses["500"] != r.Failed {
				t.Errorf("result %+v, want a mix of ok and 500", r)
			}
		}},
		{"all fail", 1, func(t *testing.T, r Result) {
			if r.Succeeded != 0 || r.Failed != r.Sent {
				t.Errorf("result %+v, want every request failed", r)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startEcho(t, tt.failRate)
			r, err := Run(context.Background(), Config{Target: addr, RPS: 200, Path: "/", Duration: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			// 200 rps for 0.5 s is exactly 100 intended times.
			if r.Sent+r.Dropped != 100 {
				t.Errorf("sent %d + dropped %d, want 100 intended", r.Sent, r.Dropped)
			}
			checkInvariants(t, r)
			tt.check(t, r)
		})
	}
}

// TestRunDoesNotSlowDown: with a server that never answers in time and one
// request allowed in flight, the generator keeps its schedule and drops.
func TestRunDoesNotSlowDown(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { once.Do(func() { close(release) }); srv.Close() })
	r, err := Run(context.Background(), Config{
		Target: srv.Listener.Addr().String(), RPS: 100, Path: "/", Duration: 300 * time.Millisecond,
		MaxInFlight: 1, Drain: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 1 || r.Dropped != 29 || r.Cancelled != 1 {
		t.Errorf("result %+v, want 1 sent (then cancelled) and 29 dropped", r)
	}
	checkInvariants(t, r)
}

func TestRunPathIDsAndHost(t *testing.T) {
	var mu sync.Mutex
	paths := map[string]int{}
	hosts := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths[r.URL.Path]++
		hosts[r.Host]++
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	// Explicit mode: connect to the "proxy", name the service in Host.
	r, err := Run(context.Background(), Config{
		Target: "web.demo:80", Proxy: srv.Listener.Addr().String(), RPS: 200, Path: "/books/", IDs: 3,
		Duration: 150 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, r)
	mu.Lock()
	defer mu.Unlock()
	if r.Succeeded != 30 || len(paths) != 3 || paths["/books/1"] != 10 || paths["/books/3"] != 10 {
		t.Errorf("result %+v, paths %v: want 30 requests over /books/1..3", r, paths)
	}
	if len(hosts) != 1 || hosts["web.demo:80"] != 30 {
		t.Errorf("hosts %v, want only web.demo:80", hosts)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	seen := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result, 1)
	go func() {
		r, err := Run(ctx, Config{Target: srv.Listener.Addr().String(), RPS: 50, Path: "/"})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	<-seen // load is flowing; now stop it
	cancel()
	r := <-done
	if r.Sent == 0 || r.Succeeded == 0 || r.Failed != 0 {
		t.Errorf("result %+v, want some ok requests and no failures", r)
	}
	checkInvariants(t, r)
}

func TestRunConnectionErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	r, err := Run(context.Background(), Config{Target: addr, RPS: 100, Path: "/", Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent == 0 || r.Failed != r.Sent || r.Statuses["error"] != r.Sent {
		t.Errorf("result %+v, want every request failed with an error", r)
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no target", Config{RPS: 1, Path: "/"}, "target"},
		{"zero rps", Config{Target: "x:1", Path: "/"}, "rps"},
		{"relative path", Config{Target: "x:1", RPS: 1, Path: "books"}, "path"},
		{"negative", Config{Target: "x:1", RPS: 1, Path: "/", Duration: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRunReports(t *testing.T) {
	addr := startEcho(t, 0)
	var logs syncWriter
	log := slog.New(slog.NewTextHandler(&logs, nil))
	_, err := Run(context.Background(), Config{
		Target: addr, RPS: 100, Path: "/", Duration: 200 * time.Millisecond, ReportEvery: 20 * time.Millisecond, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := logs.String(); !strings.Contains(got, "msg=load") || !strings.Contains(got, "target="+addr) {
		t.Errorf("no summary line in logs:\n%s", got)
	}
}

// syncWriter is a buffer the reporter goroutine may write while the test
// reads it later.
type syncWriter struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
