package admin

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "trellis_controller_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	h := New(reg)
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/ready"); code != http.StatusServiceUnavailable {
		t.Fatalf("/ready before SetReady = %d", code)
	}
	h.SetReady(true)
	if code, _ := get("/ready"); code != http.StatusOK {
		t.Fatalf("/ready = %d", code)
	}
	if code, _ := get("/live"); code != http.StatusOK {
		t.Fatalf("/live = %d", code)
	}
	code, body := get("/metrics")
	if code != http.StatusOK || !strings.Contains(body, "trellis_controller_test_total 3") {
		t.Fatalf("/metrics = %d\n%s", code, body)
	}
	var issuerErr error
	h.SetCheck(func() error { return issuerErr })
	if code, _ := get("/ready"); code != http.StatusOK {
		t.Fatalf("/ready with a passing check = %d", code)
	}
	issuerErr = errors.New("issuer expired at 2026-01-01T00:00:00Z")
	if code, body := get("/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "issuer expired") {
		t.Fatalf("/ready with a failing check = %d %q", code, body)
	}
	issuerErr = nil
	h.SetReady(false)
	if code, _ := get("/ready"); code != http.StatusServiceUnavailable {
		t.Fatalf("/ready after SetReady(false) = %d", code)
	}
	if code, _ := get("/nope"); code != http.StatusNotFound {
		t.Fatalf("/nope = %d", code)
	}
}
