package admin

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

type fixture struct {
	srv       *httptest.Server
	ready     atomic.Bool
	reason    atomic.Value
	shutdowns atomic.Int32
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{}
	f.reason.Store("")
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "trellis_admin_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	h := Handler(Options{
		Gatherer: reg,
		Ready:    func() (bool, string) { return f.ready.Load(), f.reason.Load().(string) },
		Shutdown: func() { f.shutdowns.Add(1) },
	})
	f.srv = httptest.NewServer(h) // real listener on 127.0.0.1
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) do(t *testing.T, method, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	f := newFixture(t)
	f.ready.Store(false)
	f.reason.Store("no certificate yet")

	tests := []struct {
		name     string
		setup    func()
		method   string
		path     string
		wantCode int
		wantBody string
	}{
		{name: "metrics", method: "GET", path: "/metrics", wantCode: 200, wantBody: "trellis_admin_test_total 3"},
		{name: "not ready", method: "GET", path: "/ready", wantCode: 503, wantBody: "no certificate yet"},
		{name: "ready", setup: func() { f.ready.Store(true) }, method: "GET", path: "/ready", wantCode: 200, wantBody: "ready"},
		{name: "live", method: "GET", path: "/live", wantCode: 200, wantBody: "live"},
		{name: "post metrics", method: "POST", path: "/metrics", wantCode: 405},
		{name: "post ready", method: "POST", path: "/ready", wantCode: 405},
		{name: "delete live", method: "DELETE", path: "/live", wantCode: 405},
		{name: "get shutdown", method: "GET", path: "/shutdown", wantCode: 405},
		{name: "unknown path", method: "GET", path: "/nope", wantCode: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			code, body := f.do(t, tt.method, tt.path)
			if code != tt.wantCode {
				t.Fatalf("%s %s = %d %q, want %d", tt.method, tt.path, code, body, tt.wantCode)
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Fatalf("%s %s body = %q, want it to contain %q", tt.method, tt.path, body, tt.wantBody)
			}
		})
	}
	if n := f.shutdowns.Load(); n != 0 {
		t.Fatalf("Shutdown called %d times by non-shutdown requests", n)
	}
}

func TestShutdownOnce(t *testing.T) {
	f := newFixture(t)
	for i := 0; i < 3; i++ {
		if code, body := f.do(t, "POST", "/shutdown"); code != http.StatusAccepted {
			t.Fatalf("POST /shutdown #%d = %d %q, want 202", i, code, body)
		}
	}
	if n := f.shutdowns.Load(); n != 1 {
		t.Fatalf("Shutdown called %d times, want 1", n)
	}
}

func TestShutdownOnlyFromLoopback(t *testing.T) {
	var calls int
	h := Handler(Options{Shutdown: func() { calls++ }})
	tests := []struct {
		remote string
		want   int
	}{
		{"10.1.2.3:4567", http.StatusForbidden},
		{"[2001:db8::1]:4567", http.StatusForbidden},
		{"garbage", http.StatusForbidden},
		{"[::1]:4567", http.StatusAccepted},
		{"127.0.0.2:4567", http.StatusAccepted},
		{"[::ffff:127.0.0.1]:4567", http.StatusAccepted},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("POST", "/shutdown", nil)
		req.RemoteAddr = tt.remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("POST /shutdown from %s = %d, want %d", tt.remote, rec.Code, tt.want)
		}
	}
	if calls != 1 {
		t.Fatalf("Shutdown called %d times, want 1", calls)
	}
}

func TestNilOptions(t *testing.T) {
	h := Handler(Options{})
	for _, path := range []string{"/metrics", "/ready", "/live"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s with zero Options = %d, want 200", path, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/shutdown", nil)
	req.RemoteAddr = "127.0.0.1:1"
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Errorf("POST /shutdown with nil Shutdown = %d, want 202", rec.Code)
	}
}

// GET /tcp-probe/PORT connects to a real app port: 200 while the app
// listens, 503 once it does not, 404 for a port the injector did not
// list, 400 for anything but a port number.
func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	live := ln.Addr().(*net.TCPAddr).Port
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := gone.Addr().(*net.TCPAddr).Port
	_ = gone.Close()
	var d net.Dialer
	srv := httptest.NewServer(Handler(Options{
		ProbePorts: map[int]bool{live: true, dead: true},
		ProbeTCP: func(ctx context.Context, port int) error {
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err == nil {
				_ = c.Close()
			}
			return err
		},
	}))
	defer srv.Close()
	f := &fixture{srv: srv}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", fmt.Sprintf("/tcp-probe/%d", live), 200},
		{"HEAD", fmt.Sprintf("/tcp-probe/%d", live), 200},
		{"GET", fmt.Sprintf("/tcp-probe/%d", dead), 503},
		{"GET", "/tcp-probe/1", 404},
		{"GET", "/tcp-probe/0", 400},
		{"GET", "/tcp-probe/65536", 400},
		{"GET", fmt.Sprintf("/tcp-probe/0%d", live), 400},
		{"GET", "/tcp-probe/x", 400},
		{"GET", "/tcp-probe/", 400},
		{"POST", fmt.Sprintf("/tcp-probe/%d", live), 405},
	} {
		if got, body := f.do(t, tc.method, tc.path); got != tc.want {
			t.Errorf("%s %s: %d %q, want %d", tc.method, tc.path, got, body, tc.want)
		}
	}
	_ = ln.Close()
	if got, body := f.do(t, "GET", fmt.Sprintf("/tcp-probe/%d", live)); got != 503 {
		t.Errorf("after the app closed its listener: %d %q, want 503", got, body)
	}
}

func TestTCPProbeOffWithoutPorts(t *testing.T) {
	f := newFixture(t)
	if got, _ := f.do(t, "GET", "/tcp-probe/80"); got != 404 {
		t.Errorf("tcp-probe without probed ports: %d, want 404", got)
	}
}
