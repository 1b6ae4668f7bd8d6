package check

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// fakeAPIServer serves the few paths NewEnv's hooks use: /version (with a
// chosen clock offset in its Date header) and one pod's proxied /metrics.
func fakeAPIServer(t *testing.T, offset time.Duration, metrics string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		if offset != 0 {
			// net/http keeps a Date header the handler set.
			w.Header().Set("Date", time.Now().Add(offset).UTC().Format(http.TimeFormat))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"major": "1", "minor": "36", "gitVersion": "v1.36.3"})
	})
	mux.HandleFunc("GET /api/v1/namespaces/shop/pods/web-1:4191/proxy/metrics", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(metrics))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestClockSkewThroughHTTP(t *testing.T) {
	tests := []struct {
		name   string
		offset time.Duration
		want   Status
	}{
		{"in sync", 0, OK},
		{"ten seconds ahead", 10 * time.Second, Warn},
		{"two minutes behind", -2 * time.Minute, Fail},
		{"an hour ahead", time.Hour, Fail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeAPIServer(t, tt.offset, "")
			e, err := NewEnv(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			r := runOneCheck(t, e, ClockSkewCheck)
			if r.Status != tt.want {
				t.Fatalf("got %s %q, want %s", r.Status, r.Message, tt.want)
			}
			// The API check goes through real discovery against the same server.
			if r := runOneCheck(t, e, APICheck); r.Status != OK || !strings.Contains(r.Message, "v1.36.3") {
				t.Fatalf("api check: %s %q", r.Status, r.Message)
			}
		})
	}
}

func TestHTTPDateErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", "yesterday-ish")
	}))
	defer srv.Close()
	if _, err := HTTPDate(srv.Client(), srv.URL)(context.Background()); err == nil || !strings.Contains(err.Error(), "yesterday-ish") {
		t.Fatalf("bad Date header: err = %v", err)
	}
	srv.Close()
	if _, err := HTTPDate(srv.Client(), srv.URL)(context.Background()); err == nil {
		t.Fatal("closed server: no error")
	}
}

func TestPodProxyScraper(t *testing.T) {
	body := "# TYPE trellis_identity_cert_valid gauge\ntrellis_identity_cert_valid 1\n"
	srv := fakeAPIServer(t, 0, body)
	e, err := NewEnv(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.Scrape(context.Background(), "shop", "web-1", ProxyAdminPort, "metrics")
	if err != nil || string(got) != body {
		t.Fatalf("scrape = %q, %v; want %q", got, err, body)
	}
	// Another pod is not served: the error names it.
	if _, err := e.Scrape(context.Background(), "shop", "web-2", ProxyAdminPort, "metrics"); err == nil || !strings.Contains(err.Error(), "web-2:4191") {
		t.Fatalf("missing pod: err = %v", err)
	}
}

func TestClockSkew(t *testing.T) {
	tests := []struct {
		date, before, after time.Time
		want                time.Duration
	}{
		{t0, t0, t0, 0},
		{t0, t0.Add(900 * time.Millisecond), t0.Add(950 * time.Millisecond), 0}, // same second
		{t0, t0.Add(1500 * time.Millisecond), t0.Add(1600 * time.Millisecond), -500 * time.Millisecond},
		{t0.Add(3 * time.Second), t0, t0.Add(time.Second), 2 * time.Second},
		{t0, t0.Add(-time.Second), t0.Add(time.Second), 0}, // slow request covers it
	}
	for i, tt := range tests {
		if got := ClockSkew(tt.date, tt.before, tt.after); got != tt.want {
			t.Errorf("%d: ClockSkew = %s, want %s", i, got, tt.want)
		}
	}
}
