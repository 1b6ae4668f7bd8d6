package discovery

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
)

// resolveFirst serves first to a new Resolver and resolves books.
func resolveFirst(t *testing.T, first *apiv1.Update, opts Options) (*Resolver, *Service, *destServer, *prometheus.Registry) {
	t.Helper()
	srv := newDestServer(func(string) []*apiv1.Update { return []*apiv1.Update{first} })
	a, _ := serve(t, "127.0.0.1:0", srv)
	r, reg := newResolver(t, dial(t, a), opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := r.Resolve(ctx, books)
	if err != nil {
		t.Fatal(err)
	}
	return r, svc, srv, reg
}

func withBalancer(u *apiv1.Update, accrual, slowStart string) *apiv1.Update {
	u.GetAdd().Balancer = &apiv1.BalancerConfig{FailureAccrual: accrual, SlowStart: slowStart}
	return u
}

// The Service's annotations reach its balancer with each AddSet; a value
// the proxy cannot parse falls back to the default; ejections, picks and
// zones are exported per destination.
func TestBalancerConfigAndMetrics(t *testing.T) {
	_, svc, srv, reg := resolveFirst(t, withBalancer(add("10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"), "consecutive:1", "0"), Options{Zone: "z1"})
	bal := svc.Balancer()
	if got := bal.Config(); got.Accrual != (balance.Accrual{Consecutive: 1}) || got.SlowStart.Window != 0 {
		t.Fatalf("config = %+v", got)
	}
	p, err := bal.Pick(nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Done(time.Millisecond, true)
	labels := map[string]string{"dst_service": books, "endpoint": p.Endpoint.Addr}
	if got := metricValue(t, reg, "trellis_endpoint_ejected", labels); got != 1 {
		t.Fatalf("trellis_endpoint_ejected%v = %v, want 1", labels, got)
	}
	if got := metricValue(t, reg, "trellis_ejections_total", map[string]string{"dst_service": books}); got != 1 {
		t.Fatalf("trellis_ejections_total = %v, want 1", got)
	}
	// The endpoints have no zone: nothing counts as cross-zone.
	if got := metricValue(t, reg, "trellis_cross_zone_requests_total", map[string]string{"dst_service": books}); got != 0 {
		t.Fatalf("trellis_cross_zone_requests_total = %v, want 0", got)
	}

	srv.push(books, withBalancer(add("10.0.0.4:8080"), "consecutive:x", "45s"))
	waitFor(t, "new config", func() bool { return bal.Config().SlowStart.Window == 45*time.Second })
	if got := bal.Config().Accrual; got != balance.DefaultConfig().Accrual {
		t.Fatalf("invalid accrual gave %+v, want the default", got)
	}
	srv.push(books, add("10.0.0.5:8080"))
	waitFor(t, "defaults", func() bool { return bal.Config() == balance.DefaultConfig() })
}

func TestSetZone(t *testing.T) {
	u := add("10.0.0.1:8080", "10.0.0.2:8080")
	u.GetAdd().Addrs[0].Zone, u.GetAdd().Addrs[1].Zone = "z1", "z2"
	r, svc, _, reg := resolveFirst(t, u, Options{})
	r.SetZone("z1")
	cross := 0
	for range 100 {
		p, err := svc.Balancer().Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		p.Done(time.Millisecond, false)
		if p.Endpoint.Zone != "z1" {
			cross++
		}
	}
	// One pick explores the other zone.
	if cross > 1 {
		t.Fatalf("%d of 100 picks left the zone", cross)
	}
	if got := metricValue(t, reg, "trellis_balancer_picks_total", map[string]string{"dst_service": books}); got != 100 {
		t.Fatalf("trellis_balancer_picks_total = %v, want 100", got)
	}
}
