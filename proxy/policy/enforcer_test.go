package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/syncbuf"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// fixedSource is a Source of pure logic: the snapshot of each port, set by
// the test (the Watcher's behaviour has its own tests over real gRPC).
type fixedSource struct {
	mu    sync.Mutex
	snaps map[uint16]inboundpolicy.Snapshot
	def   *apiv1.ServerPolicy
}

func (s *fixedSource) Get(_ context.Context, port uint16) inboundpolicy.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sn, ok := s.snaps[port]; ok {
		return sn
	}
	return inboundpolicy.Snapshot{Port: port, Policy: s.def, Unwatched: true}
}

func (s *fixedSource) set(port uint16, p *apiv1.ServerPolicy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snaps[port] = inboundpolicy.Snapshot{Port: port, Policy: p, FromController: true}
}

func newEnforcer(t *testing.T, def string) (*Enforcer, *fixedSource, *prometheus.Registry) {
	t.Helper()
	dp, err := inboundpolicy.Default(def)
	if err != nil {
		t.Fatal(err)
	}
	src := &fixedSource{snaps: map[uint16]inboundpolicy.Snapshot{}, def: dp}
	reg := prometheus.NewRegistry()
	m, err := metrics.NewAuthz(reg)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEnforcer(EnforcerConfig{Source: src, Default: def, TrustDomain: "cluster.local", Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	return e, src, reg
}

func reasonOf(err error) string {
	var d *Denial
	if errors.As(err, &d) {
		return d.Reason
	}
	return ""
}

// TestEnforcerUnwatchedPort: a port past the watch bound is denied
// whatever the default (all-unauthenticated here), so that a stranger who
// dials many ports cannot turn a Server's policy into the default.
func TestEnforcerUnwatchedPort(t *testing.T) {
	e, src, _ := newEnforcer(t, AllUnauthenticated)
	src.set(8080, &apiv1.ServerPolicy{Name: "server/a", Access: apiv1.AccessPolicy_ALL_UNAUTHENTICATED})
	ip := netip.MustParseAddr("10.0.0.1")
	if err := e.Authorize(context.Background(), Caller{ClientIP: ip, Port: 8080}, nil); err != nil {
		t.Fatalf("watched port: %v", err)
	}
	err := e.Authorize(context.Background(), Caller{ClientIP: ip, Port: 9999}, nil)
	if reasonOf(err) != ReasonUnwatched {
		t.Fatalf("unwatched port: %v, want %s", err, ReasonUnwatched)
	}
	if e.Check(context.Background(), Caller{ClientIP: ip, Port: 9999}, nil) {
		t.Fatal("Check allows the unwatched port")
	}
}

// TestEnforcerKeepsPreviousOnBadPolicy: an answer that does not compile
// keeps the port's previous policy.
func TestEnforcerKeepsPreviousOnBadPolicy(t *testing.T) {
	e, src, _ := newEnforcer(t, AllUnauthenticated)
	web := Caller{Identity: meshID, TLS: true, Port: 8080}
	src.set(8080, &apiv1.ServerPolicy{Name: "server/a", Access: apiv1.AccessPolicy_DENY})
	if reasonOf(e.Authorize(context.Background(), web, nil)) == "" {
		t.Fatal("deny policy allowed")
	}
	src.set(8080, &apiv1.ServerPolicy{Name: "server/broken", Authorizations: []*apiv1.Authorization{
		{Name: "x", Unauthenticated: true, Networks: []string{"not a cidr"}}}})
	if err := e.Authorize(context.Background(), web, nil); reasonOf(err) == "" {
		t.Fatal("a broken policy replaced the previous deny")
	}
	src.set(8080, &apiv1.ServerPolicy{Name: "server/a", Access: apiv1.AccessPolicy_ALL_AUTHENTICATED})
	if err := e.Authorize(context.Background(), web, nil); err != nil {
		t.Fatalf("a good policy after a broken one: %v", err)
	}
}

// TestAuthzClientIDBound: client_id takes at most MaxAuthzClients values.
func TestAuthzClientIDBound(t *testing.T) {
	e, src, reg := newEnforcer(t, AllAuthenticated)
	src.set(8080, &apiv1.ServerPolicy{Name: "server/a", Access: apiv1.AccessPolicy_ALL_AUTHENTICATED})
	for i := range metrics.MaxAuthzClients + 50 {
		c := Caller{Identity: fmt.Sprintf("spiffe://cluster.local/ns/n/sa/s%d", i), TLS: true, Port: 8080}
		if err := e.Authorize(context.Background(), c, nil); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, mf := range mfs {
		if mf.GetName() == "trellis_inbound_authz_allow_total" {
			series = len(mf.GetMetric())
		}
	}
	if series != metrics.MaxAuthzClients+1 {
		t.Errorf("%d series, want %d and (other)", series, metrics.MaxAuthzClients+1)
	}
	if v, _ := grpctest.Metric(t, reg, "trellis_inbound_authz_allow_total", map[string]string{"client_id": metrics.OtherClient}); v != 50 {
		t.Errorf("(other) counted %v, want 50", v)
	}
}

// TestEnforcerLogsOncePerClientAndServer: a flood of denials of one
// client by one server is one log line; another client, or the same
// client denied by another server, is another line.
func TestEnforcerLogsOncePerClientAndServer(t *testing.T) {
	var buf syncbuf.Buffer
	dp, _ := inboundpolicy.Default(Deny)
	src := &fixedSource{snaps: map[uint16]inboundpolicy.Snapshot{}, def: dp}
	src.set(8080, &apiv1.ServerPolicy{Name: "server/a", Access: apiv1.AccessPolicy_DENY})
	src.set(9090, &apiv1.ServerPolicy{Name: "server/b", Access: apiv1.AccessPolicy_DENY})
	e, err := NewEnforcer(EnforcerConfig{Source: src, Default: Deny, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("10.0.0.1")
	for range 100 {
		_ = e.Authorize(context.Background(), Caller{Identity: meshID, TLS: true, ClientIP: ip, Port: 8080}, nil)
	}
	_ = e.Authorize(context.Background(), Caller{ClientIP: ip, Port: 8080}, nil)
	_ = e.Authorize(context.Background(), Caller{Identity: meshID, TLS: true, ClientIP: ip, Port: 9090}, nil)
	lines := strings.Count(buf.String(), "authorization denied")
	if lines != 3 {
		t.Fatalf("%d denial lines, want 3:\n%s", lines, buf.String())
	}
	if !strings.Contains(buf.String(), "server=server/b") || !strings.Contains(buf.String(), `client="unauthenticated 10.0.0.1"`) {
		t.Errorf("the lines do not name the server and client:\n%s", buf.String())
	}
}
