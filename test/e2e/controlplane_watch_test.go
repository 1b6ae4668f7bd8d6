package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/routes"
	"github.com/trellis-mesh/trellis/test/harness"
)

// The minimum backoff of the proxy's policy and routes clients
// (watchcache.DefaultMinBackoff): each wait is at least 3/4 of it.
const minWatchBackoff = 100 * time.Millisecond

// waitScrape scrapes addr until check passes or d passes, and returns the
// passing scrape.
func waitScrape(t *testing.T, who, addr string, d time.Duration, check func(harness.Metrics) error) harness.Metrics {
	t.Helper()
	start := time.Now()
	var last harness.Metrics
	err := eventually(d, func() error {
		ms, err := harness.Scrape(context.Background(), addr)
		if err != nil {
			return err
		}
		last = ms
		return check(ms)
	})
	if err != nil {
		t.Fatalf("%s after %v: %v", who, time.Since(start).Round(time.Millisecond), err)
	}
	return last
}

// gaugeIs checks that the series of name matching labels sum to want.
func gaugeIs(name string, labels map[string]string, want float64) func(harness.Metrics) error {
	return func(ms harness.Metrics) error {
		if v, found := ms.Sum(name, labels); !found || v != want {
			return fmt.Errorf("%s%v = %g (found %v), want %g\n%s", name, labels, v, found, want, ms.Series(name))
		}
		return nil
	}
}

var (
	policySvc = map[string]string{"service": "policy"}
	routesSvc = map[string]string{"service": "routes"}
)

// The proxies watch the policy of their app ports and the routes of the
// services they send to, one stream per key (counted on the controller);
// across a controller outage they keep their answers and a change made to
// the store meanwhile reaches them after the controller is back.
func TestProxyWatchesSurviveControllerOutage(t *testing.T) {
	b := newBasicMesh(t)
	c := meshClient(b.client.OutboundAddr, 15*time.Second)
	defer c.CloseIdleConnections()
	if resp, _, err := get(t.Context(), c, "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	// Server proxy: --app-addr's port and one --app-ports; client proxy:
	// its --app-addr's port. The client sent to echo: one routes watch.
	waitGauge(t, b.server, "trellis_control_plane_watches", policySvc, 2, 10*time.Second)
	waitGauge(t, b.client, "trellis_control_plane_watches", policySvc, 1, 10*time.Second)
	waitGauge(t, b.client, "trellis_control_plane_watches", routesSvc, 1, 10*time.Second)
	ctrlStreams := func(want float64) {
		t.Helper()
		waitScrape(t, "controller", b.mesh.ControllerAdminAddr, 20*time.Second, func(ms harness.Metrics) error {
			if err := gaugeIs("trellis_controller_policy_streams", nil, want)(ms); err != nil {
				return err
			}
			return gaugeIs("trellis_controller_route_streams", nil, 1)(ms)
		})
	}
	ctrlStreams(3)
	appPort := port(t, b.app.Addr)
	answer := func(protocol, first string) []string {
		return []string{`msg="control-plane answer"`, " service=policy ", fmt.Sprintf(" port=%d ", appPort),
			" first=" + first + " ", " protocol=" + protocol + " "}
	}
	waitLog(t, b.server.Process, answer("UNKNOWN", "true")...)

	before, err := b.server.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b.mesh.Controller().Kill()
	killed := time.Now()
	for _, px := range []*harness.Proxy{b.server, b.client} {
		waitGauge(t, px, "trellis_control_plane_connected", policySvc, 0, 10*time.Second)
	}
	waitGauge(t, b.client, "trellis_control_plane_connected", routesSvc, 0, 10*time.Second)
	// The cached answers keep serving: the watches stay, traffic flows.
	waitGauge(t, b.server, "trellis_control_plane_watches", policySvc, 2, time.Second)
	if resp, _, err := get(t.Context(), c, "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("request during the outage: %v %v", resp, err)
	}

	// While it is down, the echo service port becomes HTTP/1.1: the
	// policy of the app's port changes protocol.
	st := b.mesh.Store()
	st.Services[0].Ports[0].Protocol = "http"
	b.mesh.WriteStore(st)
	time.Sleep(time.Until(killed.Add(2 * time.Second)))
	b.mesh.StartController()
	waitLog(t, b.server.Process, answer("HTTP1", "false")...)
	outage := time.Since(killed)
	for _, px := range []*harness.Proxy{b.server, b.client} {
		waitGauge(t, px, "trellis_control_plane_connected", policySvc, 1, 20*time.Second)
	}
	waitGauge(t, b.client, "trellis_control_plane_connected", routesSvc, 1, 20*time.Second)
	ctrlStreams(3) // reconnected, none duplicated

	after, err := b.server.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	errs := after.Value("trellis_control_plane_stream_errors_total", policySvc) - before.Value("trellis_control_plane_stream_errors_total", policySvc)
	// With backoff each of the 2 watches waits at least 3/4 of the minimum
	// between attempts; a retry loop without it would fail thousands of
	// times.
	ceiling := 2 * (float64(outage)/float64(minWatchBackoff*3/4) + 1)
	t.Logf("outage %v: %g policy stream errors on the server proxy (ceiling %.0f)", outage.Round(time.Millisecond), errs, ceiling)
	if errs < 2 || errs > ceiling {
		t.Fatalf("%g stream errors during a %v outage, want 2..%.0f", errs, outage, ceiling)
	}
	if last := after.Value("trellis_control_plane_last_update_timestamp_seconds", policySvc); last < float64(killed.Unix()) {
		t.Fatalf("last update %v is before the controller came back (%d)", last, killed.Unix())
	}
}

// waitLog waits until a line of the process's log holds every part.
func waitLog(t *testing.T, p *harness.Process, parts ...string) {
	t.Helper()
	err := eventually(20*time.Second, func() error {
		data, err := os.ReadFile(p.LogPath)
		if err != nil {
			return err
		}
	lines:
		for _, line := range strings.Split(string(data), "\n") {
			for _, part := range parts {
				if !strings.Contains(line, part) {
					continue lines
				}
			}
			return nil
		}
		return fmt.Errorf("%s: no log line with %q", p.Name, parts)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, p.LogTail(20))
	}
}

// controlPlaneConn dials the mesh's controller as a proxy does once it is a
// certified workload: TLS verifying the controller's identity, the
// workload's certificate (Certify with its token first).
func controlPlaneConn(t *testing.T, m *harness.Mesh, local, token string) *grpc.ClientConn {
	t.Helper()
	pem, err := os.ReadFile(m.AnchorPath())
	if err != nil {
		t.Fatal(err)
	}
	anchors, err := pki.ParseCertsPEM(pem)
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.Parse(local)
	if err != nil {
		t.Fatal(err)
	}
	store, err := meshtls.NewStore(id, anchors)
	if err != nil {
		t.Fatal(err)
	}
	dial := func() *grpc.ClientConn {
		cc, err := grpc.NewClient(m.ControllerAddr, grpc.WithTransportCredentials(credentials.NewTLS(store.ControlPlaneConfig(identity.Controller(id.TrustDomain)))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	// The controller answers policy watches only to the workload's own
	// certificate: certify first, then a connection that presents it.
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	resp, err := apiv1.NewIdentityClient(dial()).Certify(ctx, &apiv1.CertifyRequest{Identity: local, Token: []byte(token), CertificateSigningRequest: csr}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetCertificate(resp.GetChain(), key); err != nil {
		t.Fatal(err)
	}
	return dial()
}

// The policy and routes clients against the real controller over TLS:
// many callers share one stream per key, answers are served from the
// cache while the controller is down, store edits made meanwhile arrive
// after it returns, and keys nobody asks for are swept.
func TestWatchClientsAgainstController(t *testing.T) {
	requireBinaries(t)
	store := harness.Store{
		Services: []harness.Service{{Name: "books", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{{Name: "books-1", Namespace: ns, ServiceAccount: "books", Endpoints: []harness.Endpoint{
			{Service: "books", Port: 80, TargetPort: 8080},
		}}},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	cc := controlPlaneConn(t, m, identityOf("books"), store.Workloads[0].Token)
	const idle = 3 * time.Second
	policies, err := inboundpolicy.New(apiv1.NewPolicyClient(cc), inboundpolicy.Options{
		Workload: identityOf("books"), Ports: []uint16{8080}, IdleTimeout: idle,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer policies.Close()
	rt := routes.New(apiv1.NewDestinationClient(cc), routes.Options{CallerIdentity: identityOf("books"), IdleTimeout: idle})
	defer rt.Close()
	const (
		books   = "books.e2e:80"
		authors = "authors.e2e:80" // not in the store yet
	)
	ctx := t.Context()
	first, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	// 64 callers of two ports and two authorities: one stream per key.
	var wg sync.WaitGroup
	pols := make([]inboundpolicy.Snapshot, 64)
	rts := make([]routes.Snapshot, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pols[i] = policies.Get(first, []uint16{8080, 9090}[i%2])
			rts[i] = rt.Get(first, []string{books, authors}[i%2])
		}()
	}
	wg.Wait()
	for i := range 64 {
		if !pols[i].FromController || !rts[i].FromController {
			t.Fatalf("caller %d: no answer from the controller: %+v %+v", i, pols[i], rts[i])
		}
	}
	if p := pols[0].Policy.GetProtocol(); p != apiv1.ProtocolHint_UNKNOWN {
		t.Fatalf("port 8080 protocol %v, want UNKNOWN (the store declares none)", p)
	}
	if s := rts[0].Service; s != "books.e2e.svc.cluster.local:80" {
		t.Fatalf("books routes for service %q", s)
	}
	if s := rts[1].Service; s != authors {
		t.Fatalf("unknown authors routes for service %q, want the authority itself", s)
	}
	streams := func(policy, route float64) {
		t.Helper()
		waitScrape(t, "controller", m.ControllerAdminAddr, 20*time.Second, func(ms harness.Metrics) error {
			if err := gaugeIs("trellis_controller_policy_streams", nil, policy)(ms); err != nil {
				return err
			}
			return gaugeIs("trellis_controller_route_streams", nil, route)(ms)
		})
	}
	streams(2, 2)

	// Controller down: every key is still answered from the cache.
	m.Controller().Kill()
	st := m.Store()
	st.Services[0].Ports[0].Protocol = "grpc"
	st.Services = append(st.Services, harness.Service{Name: "authors", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}})
	m.WriteStore(st)
	touch := func() (inboundpolicy.Snapshot, inboundpolicy.Snapshot, routes.Snapshot, routes.Snapshot) {
		return policies.Get(ctx, 8080), policies.Get(ctx, 9090), rt.Get(ctx, books), rt.Get(ctx, authors)
	}
	for range 10 {
		p1, p2, r1, r2 := touch()
		if !p1.FromController || !p2.FromController || !r1.FromController || r2.Service != authors {
			t.Fatalf("answers during the outage: %+v %+v %+v %+v", p1, p2, r1, r2)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Back with the edited store: the new answers arrive on the new streams.
	m.StartController()
	start := time.Now()
	err = eventually(20*time.Second, func() error {
		p1, _, _, r2 := touch()
		if p1.Policy.GetProtocol() != apiv1.ProtocolHint_GRPC || r2.Service != "authors.e2e.svc.cluster.local:80" {
			return fmt.Errorf("still %v and %q", p1.Policy.GetProtocol(), r2.Service)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("store edit after the restart: %v", err)
	}
	t.Logf("edits arrived %v after the restart", time.Since(start).Round(time.Millisecond))
	streams(2, 2)

	// Only the pinned port and books stay in use: 9090 and authors are
	// swept after the idle time, their streams closed on the controller.
	start = time.Now()
	err = eventually(10*idle, func() error {
		policies.Get(ctx, 8080)
		rt.Get(ctx, books)
		ms, err := harness.Scrape(ctx, m.ControllerAdminAddr)
		if err != nil {
			return err
		}
		if err := gaugeIs("trellis_controller_policy_streams", nil, 1)(ms); err != nil {
			return err
		}
		return gaugeIs("trellis_controller_route_streams", nil, 1)(ms)
	})
	if err != nil {
		t.Fatalf("idle watches not swept: %v", err)
	}
	t.Logf("idle watches swept %v after the check began (idle time %v)", time.Since(start).Round(time.Millisecond), idle)
}
