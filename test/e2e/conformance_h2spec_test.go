package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
)

// h2specBaselineFile holds, per target, the h2spec cases that passed when
// it was recorded. Regenerate it with `make conformance-update` (or
// TRELLIS_H2SPEC_UPDATE=1) after a change that makes more cases pass.
const h2specBaselineFile = "testdata/h2spec-baseline.txt"

// h2specCaseTimeout is h2spec's -o: seconds a case waits for the frame it
// expects. Passing cases answer in milliseconds; a failing case that
// expects a frame which never comes costs the whole timeout.
const h2specCaseTimeout = 2

// h2specTarget is one listener h2spec speaks HTTP/2 (prior knowledge) to.
type h2specTarget struct {
	name string
	host string // also the :authority h2spec sends, with the port
	port int
	// reference targets are reported but not held to the baseline.
	reference bool
}

// TestConformanceH2spec runs the h2spec conformance suite against the
// proxies' HTTP/2 listeners and fails on any case that passed in the
// recorded baseline and does not now:
//
//   - outbound: h2spec -> client proxy's outbound listener (explicit mode)
//     -> mesh mTLS -> server proxy's inbound -> h2c app. The service is
//     named "localhost" with the outbound port as its port, so the
//     :authority h2spec sends ("localhost:<port>", it always sends the
//     address it dials) resolves in the client's namespace to a real
//     service and every request reaches the app through the mesh.
//   - inbound-plain: h2spec -> server proxy's inbound listener in plain
//     text (h2c prior knowledge) -> app: the inbound HTTP/2 server that
//     also serves mesh peers after TLS.
//   - app (reference): h2spec -> the app itself, the Go HTTP/2 server
//     both proxies are built on; a case failing there too is the
//     library's, not the proxy's.
func TestConformanceH2spec(t *testing.T) {
	requireBinaries(t)
	ctx := t.Context()
	start := time.Now()
	bin, err := harness.BuildH2spec(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	client, server, a := startH2specMesh(t)
	checkH2specRoute(t, client, server, a)

	targets := []h2specTarget{
		{name: "outbound", host: "localhost", port: port(t, client.OutboundAddr)},
		{name: "inbound-plain", host: "127.0.0.1", port: port(t, server.InboundAddr)},
		{name: "app", host: "127.0.0.1", port: port(t, a.Addr), reference: true},
	}
	runs := map[string]harness.H2specRun{}
	reportDir := t.TempDir()
	for _, tg := range targets {
		began := time.Now()
		run, err := harness.RunH2spec(ctx, bin, tg.host, tg.port, h2specCaseTimeout, reportDir)
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		runs[tg.name] = run
		p, f, s := run.Counts()
		t.Logf("h2spec %-13s %d passed, %d failed, %d skipped (%s)", tg.name, p, f, s, time.Since(began).Round(time.Millisecond))
	}
	for _, px := range []*harness.Proxy{client, server} {
		// Informational: x/net/http2 logs protocol errors with the standard
		// log package, outside slog and --log-level (issue 9, finding 11).
		t.Logf("%s: %d log lines not from slog after the runs", px.Name, nonSlogLines(t, px.Process.LogPath))
	}
	if os.Getenv("TRELLIS_H2SPEC_UPDATE") == "1" {
		writeH2specBaseline(t, targets, runs)
		return
	}
	compareH2specBaseline(t, targets, runs)
	t.Logf("h2spec conformance took %s in all", time.Since(start).Round(time.Millisecond))
}

// startH2specMesh starts a controller, a server proxy in front of an echo
// app (HTTP/1.1, h2c, gRPC) and a client proxy whose outbound port is also
// the port of the service "localhost" that the app backs.
func startH2specMesh(t *testing.T) (client, server *harness.Proxy, a *app) {
	t.Helper()
	a = startApp(t, "h2spec-app")
	outbound := ports.Addr(t)
	outPort := port(t, outbound)
	store := harness.Store{
		Services: []harness.Service{
			{Name: "localhost", Namespace: ns, Ports: []harness.ServicePort{{Port: outPort}}},
		},
		Workloads: []harness.Workload{
			{Name: "h2spec-client", Namespace: ns, ServiceAccount: "client"},
			{Name: "h2spec-server", Namespace: ns, ServiceAccount: "echo", Endpoints: []harness.Endpoint{
				{Service: "localhost", Port: outPort, TargetPort: port(t, a.Addr)},
			}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	server = m.StartReadyProxy(harness.ProxySpec{Workload: "h2spec-server", AppAddr: a.Addr})
	// The last --outbound-addr wins over the one StartProxy allocates.
	client = m.StartReadyProxy(harness.ProxySpec{Workload: "h2spec-client", Args: []string{"--outbound-addr", outbound}})
	client.OutboundAddr = outbound
	return client, server, a
}

// checkH2specRoute proves the outbound target is the whole mesh path: an
// h2c request for the authority h2spec will send reaches the app, and the
// server proxy saw it over mTLS from the client's identity. Without this a
// routing failure would look like conformance (a 502 is a valid answer).
func checkH2specRoute(t *testing.T, client, server *harness.Proxy, a *app) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	authority := fmt.Sprintf("localhost:%d", port(t, client.OutboundAddr))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+authority+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := h2cClient(client.OutboundAddr, 10*time.Second)
	defer c.CloseIdleConnections()
	before := a.served.Load()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("h2c GET %s through the client proxy: %v", authority, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || a.served.Load() <= before {
		t.Fatalf("h2c GET %s: %s %s (app served %d -> %d), body %q", authority, resp.Proto, resp.Status, before, a.served.Load(), body)
	}
	metricAtLeast(t, server, "trellis_requests_total", map[string]string{
		"direction": "inbound", "tls": "true", "peer_identity": client.Identity,
	}, 1, 5*time.Second)
}

func compareH2specBaseline(t *testing.T, targets []h2specTarget, runs map[string]harness.H2specRun) {
	t.Helper()
	f, err := os.Open(h2specBaselineFile)
	if err != nil {
		t.Fatalf("%v (record it with TRELLIS_H2SPEC_UPDATE=1)", err)
	}
	base, err := harness.ReadH2specBaseline(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ref := runs["app"]
	refOutcome := map[string]string{}
	for _, c := range ref.Cases {
		refOutcome[c.ID] = c.Outcome
	}
	for _, tg := range targets {
		if tg.reference {
			continue
		}
		regressions, improvements := harness.CompareH2spec(base[tg.name], runs[tg.name])
		for _, c := range improvements {
			t.Logf("h2spec %s: %s now passes (%s): tighten the baseline (make conformance-update)", tg.name, c.ID, c.Desc)
		}
		for _, c := range regressions {
			t.Errorf("h2spec %s: REGRESSION %s %s (%s; on the app directly: %s)\n%s",
				tg.name, c.ID, c.Outcome, c.Desc, refOutcome[c.ID], indent(c.Detail))
		}
		for _, c := range runs[tg.name].Cases {
			if c.Outcome == harness.H2specFailed && !base[tg.name][c.ID] {
				t.Logf("h2spec %s: known failure %s (%s; on the app directly: %s): %s",
					tg.name, c.ID, c.Desc, refOutcome[c.ID], oneLine(c.Detail))
			}
		}
	}
}

func writeH2specBaseline(t *testing.T, targets []h2specTarget, runs map[string]harness.H2specRun) {
	t.Helper()
	passing := map[string][]string{}
	for _, tg := range targets {
		if !tg.reference {
			passing[tg.name] = runs[tg.name].Passing()
		}
	}
	var b strings.Builder
	header := "h2spec cases that pass today, per target (see conformance_h2spec_test.go).\n" +
		"A case listed here that fails is a regression. Regenerate: make conformance-update"
	if err := harness.WriteH2specBaseline(&b, header, passing); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h2specBaselineFile, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", h2specBaselineFile)
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// nonSlogLines counts the lines of a process log that slog's text handler
// did not write (nor the harness's "===" start line).
func nonSlogLines(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(data)) {
		if !strings.HasPrefix(line, "time=") && !strings.HasPrefix(line, "=== ") {
			n++
		}
	}
	return n
}
