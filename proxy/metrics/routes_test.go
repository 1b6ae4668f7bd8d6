package metrics

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestStatusClass(t *testing.T) {
	for status, want := range map[int]string{0: "0xx", 99: "0xx", 101: "1xx", 200: "2xx", 302: "3xx", 404: "4xx", 599: "5xx", 600: "0xx", -1: "0xx"} {
		if got := StatusClass(status); got != want {
			t.Errorf("StatusClass(%d) = %q, want %q", status, got, want)
		}
	}
}

// TestRoutesBounded: past MaxRouteSeries label sets, new routes are
// counted under (other), and nothing is lost.
func TestRoutesBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := NewRoutes(reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < MaxRouteSeries+10; i++ {
		r.Request(RouteKey{Route: fmt.Sprintf("ns/r%d", i), Rule: "0", Direction: Outbound, Service: "a:80", DstService: "a:80", Class: "2xx"}, 0.01)
	}
	r.Request(RouteKey{Route: "ns/r0", Direction: Outbound, DstService: "a:80", Class: ClassCancelled}, 5)
	// The cap's routes, and (other) for 2xx and for cancelled.
	if n := testutil.CollectAndCount(r.requests); n != MaxRouteSeries+2 {
		t.Errorf("%d series, want %d", n, MaxRouteSeries+2)
	}
	if v := testutil.ToFloat64(r.requests.WithLabelValues(OtherService, "", Outbound, OtherService, OtherService, "2xx")); v != 10 {
		t.Errorf("(other) counted %v, want 10", v)
	}
	var nilRoutes *Routes
	nilRoutes.Request(RouteKey{}, 1) // no metrics: nothing, no panic
	nilRoutes.Fault("r", FaultAbort)
	nilRoutes.Mirror("r", MirrorSent)
}
