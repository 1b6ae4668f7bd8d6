package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/internal/destdebug"
)

// oneService knows books.demo:80 with two endpoints; a bare "books:80"
// resolves only for callers in demo, as the real sources do.
type oneService struct{ released *int }

func (s oneService) Resolve(a authority.Authority, ns string) (destination.Resolution, <-chan struct{}, func()) {
	release := func() { *s.released++ }
	full := a.String() == "books.demo.svc.cluster.local:80"
	bare := a.String() == "books:80" && ns == "demo"
	if !full && !bare {
		return destination.Resolution{}, make(chan struct{}), release
	}
	return destination.Resolution{Service: "books.demo.svc.cluster.local:80", Endpoints: destination.Endpoints{
		Exists: true, Labels: map[string]string{"service": "books"},
		Addrs: map[string]*apiv1.WeightedAddr{
			"10.0.0.9:4143": {Addr: &apiv1.TcpAddress{Ip: "10.0.0.9", Port: 4143}, Weight: 3, Zone: "b",
				TlsIdentity: &apiv1.TlsIdentity{SpiffeId: "spiffe://cluster.local/ns/demo/sa/books"}},
			"10.0.0.1:8080": {Addr: &apiv1.TcpAddress{Ip: "10.0.0.1", Port: 8080}},
		}}}, make(chan struct{}), release
}

func TestServeDestination(t *testing.T) {
	reg := prometheus.NewRegistry()
	released := 0
	h := New(reg)
	if err := h.ServeDestination(reg, oneService{&released}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, tc := range []struct {
		name, query string
		code        int
		want        string // substring of the body
		endpoints   int
	}{
		{"fqdn", "/books.demo.svc.cluster.local:80", 200, `"identity":"spiffe://cluster.local/ns/demo/sa/books"`, 2},
		{"bare name in the caller's namespace", "/books:80?caller-namespace=demo", 200, `"zone":"b"`, 2},
		{"bare name without a namespace names nothing", "/books:80", 200, `"exists":false`, 0},
		{"no authority", "/", 404, "not found", 0},
		{"bad authority", "/" + url.PathEscape("books demo:80"), 400, "authority", 0},
		{"no port", "/books.demo.svc.cluster.local", 400, "authority", 0},
		{"bad namespace", "/books:80?caller-namespace=Not_A_Label", 400, "caller-namespace", 0},
		{"query too long", "/books:80?caller-namespace=" + strings.Repeat("a", destdebug.MaxQuery), 400, "query longer", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get(srv.URL + destdebug.Path + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.want) {
				t.Fatalf("%d %s, want %d containing %s", resp.StatusCode, body, tc.code, tc.want)
			}
			if tc.code != 200 {
				return
			}
			var ans destdebug.Answer
			if err := json.Unmarshal(body, &ans); err != nil {
				t.Fatal(err)
			}
			if len(ans.Endpoints) != tc.endpoints {
				t.Fatalf("%d endpoints, want %d: %s", len(ans.Endpoints), tc.endpoints, body)
			}
			if tc.endpoints > 0 && (ans.Endpoints[0].Address != "10.0.0.1:8080" || ans.Endpoints[0].Weight != 1 || ans.Endpoints[1].Weight != 3) {
				t.Fatalf("endpoints not sorted by address or default weight not 1: %+v", ans.Endpoints)
			}
		})
	}
	if released != 3 {
		t.Errorf("released %d resolutions, want 3 (one per answered request)", released)
	}
	if n := counterValue(t, reg, "bad_request"); n != 4 {
		t.Errorf("bad_request counted %v times, want 4", n)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "trellis_controller_debug_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no trellis_controller_debug_requests_total{result=%q}", result)
	return 0
}
