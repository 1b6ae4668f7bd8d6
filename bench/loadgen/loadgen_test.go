package loadgen

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

func TestScheduleAt(t *testing.T) {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		rate float64
		i    int64
		want time.Duration
	}{
		{1000, 0, 0},
		{1000, 1, time.Millisecond},
		{1000, 2500, 2500 * time.Millisecond},
		{4000, 1, 250 * time.Microsecond},
		{4000, 4000, time.Second},
		{3, 1, 333333333},
		{3, 2, 666666667},
		{3, 3, time.Second},               // no accumulated rounding drift
		{3, 3_000_000, 1e6 * time.Second}, // still exact far out
		{0.5, 1, 2 * time.Second},
	}
	for _, tt := range tests {
		got := Schedule{Start: start, Rate: tt.rate}.At(tt.i).Sub(start)
		if got != tt.want {
			t.Errorf("rate %v At(%d) = %v after start, want %v", tt.rate, tt.i, got, tt.want)
		}
	}
}

func TestScheduleCount(t *testing.T) {
	tests := []struct {
		rate float64
		d    time.Duration
		want int64
	}{
		{1000, 2 * time.Second, 2000},
		{4000, 20 * time.Second, 80000},
		{3, time.Second, 3},
		{3, 1100 * time.Millisecond, 4}, // 0, 1/3, 2/3, 1 s are all < 1.1 s
		{1000, 0, 0},
		{1000, -time.Second, 0},
		{0, time.Second, 0},
	}
	for _, tt := range tests {
		if got := (Schedule{Rate: tt.rate}).Count(tt.d); got != tt.want {
			t.Errorf("rate %v Count(%v) = %d, want %d", tt.rate, tt.d, got, tt.want)
		}
	}
}

// The dispatcher must hand out exactly the schedule's times, in order, and
// never before they are due.
func TestDispatchFollowsSchedule(t *testing.T) {
	sched := Schedule{Start: time.Now().Add(5 * time.Millisecond), Rate: 2000}
	const n = 300
	queue := make(chan time.Time, n)
	go dispatch(context.Background(), sched, n, queue)
	var i int64
	for got := range queue {
		now := time.Now()
		if want := sched.At(i); !got.Equal(want) {
			t.Fatalf("intent %d = %v, want %v", i, got, want)
		}
		if now.Before(got) {
			t.Fatalf("intent %d received %v before its intended time", i, got.Sub(now))
		}
		i++
	}
	if i != n {
		t.Fatalf("dispatched %d intents, want %d", i, n)
	}
}

func TestDispatchStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	queue := make(chan time.Time) // unbuffered and never read: dispatch blocks
	done := make(chan struct{})
	go func() {
		dispatch(ctx, Schedule{Start: time.Now(), Rate: 1000}, 1_000_000, queue)
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("dispatch did not return after cancellation")
	}
}

func TestRunCountsEveryScheduledRequest(t *testing.T) {
	var calls atomic.Int64
	noop := func(context.Context) error { calls.Add(1); return nil }
	res, err := Run(context.Background(), Config{Rate: 2000, Duration: 200 * time.Millisecond}, []Worker{noop, noop, noop})
	if err != nil {
		t.Fatal(err)
	}
	if res.Scheduled != 400 || res.Completed != 400 || calls.Load() != 400 {
		t.Fatalf("scheduled %d completed %d calls %d, want 400 each", res.Scheduled, res.Completed, calls.Load())
	}
	if got := res.Corrected.TotalCount(); got != 400 {
		t.Errorf("corrected histogram holds %d values, want 400", got)
	}
	if got := res.Uncorrected.TotalCount(); got != 400 {
		t.Errorf("uncorrected histogram holds %d values, want 400", got)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	noop := func(context.Context) error { return nil }
	for _, tt := range []struct {
		name    string
		cfg     Config
		workers []Worker
	}{
		{"zero rate", Config{Rate: 0, Duration: time.Second}, []Worker{noop}},
		{"zero duration", Config{Rate: 10}, []Worker{noop}},
		{"no workers", Config{Rate: 10, Duration: time.Second}, nil},
	} {
		if _, err := Run(context.Background(), tt.cfg, tt.workers); err == nil {
			t.Errorf("%s: Run succeeded, want an error", tt.name)
		}
	}
}

func TestRunCountsErrors(t *testing.T) {
	var n atomic.Int64
	flaky := func(context.Context) error {
		if n.Add(1)%2 == 0 {
			return errors.New("boom")
		}
		return nil
	}
	res, err := Run(context.Background(), Config{Rate: 1000, Duration: 100 * time.Millisecond}, []Worker{flaky})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 50 || res.Completed != 50 || res.FirstError != "boom" {
		t.Fatalf("errors %d completed %d first %q, want 50, 50, boom", res.Errors, res.Completed, res.FirstError)
	}
	if res.Corrected.TotalCount() != 50 {
		t.Errorf("failed requests were recorded as latencies: %d values", res.Corrected.TotalCount())
	}
}

// A server that stalls once, reached over a single connection: the requests
// queued behind the stall are late by up to the stall, which only the
// corrected (intended-time) histogram shows.
func TestCoordinatedOmissionCorrection(t *testing.T) {
	const stall = 300 * time.Millisecond
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 10 {
			time.Sleep(stall)
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()

	workers, closer := HTTPWorkers(HTTPTarget{Addr: srv.Listener.Addr().String()}, 1)
	defer closer.Close()
	res, err := Run(context.Background(), Config{Rate: 200, Duration: time.Second}, workers)
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 200 || res.Errors != 0 {
		t.Fatalf("completed %d errors %d (%s), want 200 and 0", res.Completed, res.Errors, res.FirstError)
	}
	half := (stall / 2).Microseconds()
	corrSlow := res.Corrected.TotalCount() - countAtOrBelow(res.Corrected, half)
	uncSlow := res.Uncorrected.TotalCount() - countAtOrBelow(res.Uncorrected, half)
	t.Logf("requests slower than %v: corrected %d, uncorrected %d", stall/2, corrSlow, uncSlow)
	if corrSlow <= uncSlow {
		t.Errorf("corrected shows %d slow requests, uncorrected %d: the stall's queue is not charged", corrSlow, uncSlow)
	}
	if max := res.Corrected.Max(); max < stall.Microseconds() {
		t.Errorf("corrected max %d µs is below the %v stall", max, stall)
	}
	if c, u := res.Corrected.ValueAtQuantile(90), res.Uncorrected.ValueAtQuantile(90); c <= u {
		t.Errorf("corrected p90 %d µs <= uncorrected p90 %d µs", c, u)
	}
}

func countAtOrBelow(h *hdrhistogram.Histogram, v int64) int64 {
	var n int64
	for _, b := range h.Distribution() {
		if b.To <= v {
			n += b.Count
		}
	}
	return n
}

func TestHTTPWorkersStatusAndReconnect(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "echo.bench:80" || r.URL.Path != "/x" {
			http.Error(w, "wrong host or path", http.StatusBadRequest)
			return
		}
		switch n.Add(1) % 4 {
		case 1:
			w.Header().Set("Connection", "close") // good response, then a new connection
		case 2:
			http.Error(w, "nope", http.StatusServiceUnavailable)
			return
		case 3:
			// Break the connection mid-response.
			hj, ok := w.(http.Hijacker)
			if !ok {
				t.Error("no hijacker")
				return
			}
			c, _, err := hj.Hijack()
			if err == nil {
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
				_ = c.Close()
			}
			return
		}
		_, _ = w.Write(make([]byte, 64))
	}))
	defer srv.Close()

	workers, closer := HTTPWorkers(HTTPTarget{Addr: srv.Listener.Addr().String(), Host: "echo.bench:80", Path: "/x"}, 1)
	defer closer.Close()
	res, err := Run(context.Background(), Config{Rate: 400, Duration: 100 * time.Millisecond}, workers)
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 20 || res.Errors != 20 || res.Unsent != 0 {
		t.Fatalf("completed %d errors %d unsent %d (first error %q), want 20, 20, 0", res.Completed, res.Errors, res.Unsent, res.FirstError)
	}
}

func TestHTTPWorkersDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	workers, closer := HTTPWorkers(HTTPTarget{Addr: addr, Timeout: time.Second}, 2)
	defer closer.Close()
	res, err := Run(context.Background(), Config{Rate: 100, Duration: 100 * time.Millisecond}, workers)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 10 || res.Completed != 0 || res.FirstError == "" {
		t.Fatalf("errors %d completed %d first %q, want 10 dial errors", res.Errors, res.Completed, res.FirstError)
	}
}

func TestGRPCEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var authority atomic.Value
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if md, ok := metadata.FromIncomingContext(ctx); ok && len(md[":authority"]) > 0 {
			authority.Store(md[":authority"][0])
		}
		return h(ctx, req)
	}))
	srv.RegisterService(&EchoServiceDesc, Echo{})
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	workers, cc, err := GRPCWorkers(GRPCTarget{Addr: ln.Addr().String(), Authority: "echo.bench:80", Payload: 64}, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	res, err := Run(context.Background(), Config{Rate: 1000, Duration: 100 * time.Millisecond}, workers)
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 100 || res.Errors != 0 {
		t.Fatalf("completed %d errors %d (%s), want 100 and 0", res.Completed, res.Errors, res.FirstError)
	}
	if got, _ := authority.Load().(string); got != "echo.bench:80" {
		t.Errorf("server saw authority %q, want echo.bench:80", got)
	}
}

func TestRunReturnsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	block := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	time.AfterFunc(50*time.Millisecond, cancel)
	res, err := Run(ctx, Config{Rate: 1000, Duration: time.Hour}, []Worker{block})
	if err == nil {
		t.Fatal("Run returned no error after cancellation")
	}
	if res.Completed != 0 || res.Unsent != res.Scheduled {
		t.Errorf("completed %d unsent %d of %d, want everything unsent", res.Completed, res.Unsent, res.Scheduled)
	}
}
