package echo

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/faults"
)

// settableNow is a clock the tests move by hand; the server reads it from
// its own goroutines.
type settableNow struct {
	mu sync.Mutex
	t  time.Time
}

func (s *settableNow) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t
}

func (s *settableNow) add(d time.Duration) {
	s.mu.Lock()
	s.t = s.t.Add(d)
	s.mu.Unlock()
}

func get(ctx context.Context, t *testing.T, url string) (int, error) {
	t.Helper()
	// A ceiling, not a timing assertion: a wrongly delayed request fails
	// instead of hanging the test.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestFailForCountsFromFirstRequest: with --fail-rate 1 --fail-for 40s the
// app fails until 40 s after its first request, a health check included,
// then answers again (the circuit-break suite's recovering replica).
func TestFailForCountsFromFirstRequest(t *testing.T) {
	clk := &settableNow{t: time.Unix(1000, 0)}
	clock := faults.NewClock(clk.now)
	inj, err := faults.New(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := inj.Limit(40*time.Second, clock); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(Config{Faults: inj, Clock: clock}))
	t.Cleanup(srv.Close)
	clk.add(time.Hour) // before the first request: not counted
	steps := []struct {
		path    string
		advance time.Duration // before the request
		want    int
	}{
		{"/healthz", 0, http.StatusOK},
		{"/echo", 39 * time.Second, http.StatusInternalServerError},
		{"/echo", time.Second, http.StatusOK},
		{"/", time.Minute, http.StatusOK},
	}
	for i, s := range steps {
		clk.add(s.advance)
		code, err := get(t.Context(), t, srv.URL+s.path)
		if err != nil || code != s.want {
			t.Errorf("step %d: GET %s = %d, %v; want %d", i, s.path, code, err, s.want)
		}
	}
}

// TestSlowStartDelaysAllButHealthz: during the window every request but
// /healthz waits the delay (a minute here, so a short client deadline
// must expire); after it they are answered.
func TestSlowStartDelaysAllButHealthz(t *testing.T) {
	clk := &settableNow{t: time.Unix(1000, 0)}
	clock := faults.NewClock(clk.now)
	slow := &faults.SlowStart{For: 20 * time.Second, Delay: faults.MaxSlowDelay, Clock: clock}
	srv := httptest.NewServer(NewHandler(Config{Clock: clock, SlowStart: slow}))
	t.Cleanup(srv.Close)

	if code, err := get(t.Context(), t, srv.URL+"/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("/healthz while slow = %d, %v; want 200 without delay", code, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, err := get(ctx, t, srv.URL+"/echo")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("/echo while slow: %v, want the client's deadline to expire", err)
	}
	clk.add(20 * time.Second)
	if code, err := get(t.Context(), t, srv.URL+"/echo"); err != nil || code != http.StatusOK {
		t.Errorf("/echo after the window = %d, %v; want 200", code, err)
	}
}
