package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
)

// demoSpiffe is the identity prefix of `trellis demo`'s workloads.
const demoSpiffe = "spiffe://cluster.local/ns/demo/sa/"

// demoHops are the calls of one demo request: loadgen -> web -> books ->
// authors, each a client span and a server span.
var demoHops = []harness.Hop{
	{Client: "loadgen", Server: "web", ClientIdentity: demoSpiffe + "loadgen", ServerIdentity: demoSpiffe + "web"},
	{Client: "web", Server: "books", ClientIdentity: demoSpiffe + "web", ServerIdentity: demoSpiffe + "books"},
	{Client: "books", Server: "authors", ClientIdentity: demoSpiffe + "books", ServerIdentity: demoSpiffe + "authors"},
}

// TestTracingDemo runs the real `trellis demo --trace-collector` (a
// controller, web, books v1 and v2 and authors, each behind a real proxy,
// and a load generator) against a real Jaeger, and asks Jaeger's query API
// for a trace that holds a client and a server span of every hop, each
// naming both identities.
func TestTracingDemo(t *testing.T) {
	requireBinaries(t)
	dir := filepath.Dir(bins.Proxy)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	began := time.Now()
	jaeger, err := harness.BuildCollector(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("jaeger built in %s", time.Since(began).Round(time.Second))
	build := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "github.com/trellis-mesh/trellis/cmd/trellis-demo-app")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build trellis-demo-app: %v\n%s", err, out)
	}
	logDir := t.TempDir()
	col := harness.StartCollector(t, jaeger, logDir, &ports)

	demo := harness.StartProcess(t, "trellis-demo", logDir, bins.CLI, "demo", "--bin-dir", dir,
		"--trace-collector", col.OTLP, "--rps", "10", "--duration", "60s", "--interval", "5s")
	began = time.Now()
	var last error
	for time.Since(began) < 90*time.Second && !demo.Exited() {
		if last = completeTrace(ctx, col); last == nil {
			t.Logf("a complete trace of web -> books -> authors in Jaeger %s after the demo started", time.Since(began).Round(time.Millisecond))
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("no complete trace after %s: %v\n%s", time.Since(began).Round(time.Second), last, demo.LogTail(30))
}

// completeTrace is nil when Jaeger holds a trace with every demo hop.
func completeTrace(ctx context.Context, col *harness.Collector) error {
	traces, err := col.Traces(ctx, "authors", 20)
	if err != nil {
		return err
	}
	var last error = errNoTrace
	for _, tr := range traces {
		if last = harness.CheckHops(tr, demoHops); last == nil {
			return nil
		}
	}
	return last
}

var errNoTrace = errors.New("jaeger has no trace with a span of authors yet")

// traceparent values of the header tests.
const (
	tpTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	tpValid  = "00-" + tpTrace + "-00f067aa0ba902b7-01"
	tpBroken = "00-" + tpTrace + "-00f067aa0ba902b7-1"
)

// traceHeaders is a request's trace context as a client sends it, plus a
// header that is none of it. With a malformed traceparent there is no B3
// (a valid B3 would be the parent).
func traceHeaders(traceparent string) map[string][]string {
	h := map[string][]string{
		"Traceparent": {traceparent},
		"Tracestate":  {"vendor=opaque,other=1"},
		"X-App":       {"kept"},
		"User-Agent":  {"tracing-e2e"},
	}
	if traceparent == tpValid {
		h["B3"] = []string{tpTrace + "-00f067aa0ba902b7-1"}
		h["X-B3-Sampled"] = []string{"1"}
	}
	return h
}

// TestTracingHeaders: what the app behind the mesh receives. Tracing off,
// every header is exactly what the client sent, a malformed traceparent
// included. Tracing on, only traceparent changes (the same trace, the
// proxies' span as parent, the caller's sampled flag), and a malformed one
// is replaced by a new trace with its tracestate dropped; the collector
// being unreachable costs the requests nothing.
func TestTracingHeaders(t *testing.T) {
	requireBinaries(t)
	rec := startRecorder(t, map[string]scripted{"/t": {body: []byte("ok")}})
	nowhere := ports.Addr(t) // nothing listens: every export fails
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"off", nil},
		{"on", []string{"--trace-collector", nowhere, "--trace-sample-ratio", "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, px := startTraceMesh(t, rec.Addr, tc.args)
			for _, tp := range []string{tpValid, tpBroken} {
				sent := traceHeaders(tp)
				got := sendVia(t, client, sent, rec)
				diff := headerDiff(sent, got)
				if tc.args == nil {
					if diff != "" {
						t.Errorf("tracing off changed the headers (traceparent %q):%s", tp, diff)
					}
					continue
				}
				checkTraced(t, tp, sent, got)
			}
			if tc.args != nil {
				checkExportFailed(t, px)
			}
		})
	}
}

// checkTraced checks the headers the app got with tracing on.
func checkTraced(t *testing.T, tp string, sent, got map[string][]string) {
	t.Helper()
	fwd := got["Traceparent"]
	if len(fwd) != 1 || len(fwd[0]) != 55 || !strings.HasPrefix(fwd[0], "00-") {
		t.Fatalf("traceparent %q reached the app, want one version 00 value", fwd)
	}
	if tp == tpValid {
		if !strings.HasPrefix(fwd[0], "00-"+tpTrace+"-") || !strings.HasSuffix(fwd[0], "-01") || fwd[0] == tp {
			t.Errorf("traceparent %q -> %q: want the same trace, sampled, with the proxy's span as parent", tp, fwd[0])
		}
		if !slices.Equal(got["Tracestate"], sent["Tracestate"]) {
			t.Errorf("tracestate %q -> %q", sent["Tracestate"], got["Tracestate"])
		}
	} else {
		if strings.Contains(fwd[0], tpTrace) {
			t.Errorf("a malformed traceparent %q was taken as the parent: %q", tp, fwd[0])
		}
		if _, ok := got["Tracestate"]; ok {
			t.Errorf("the tracestate of a malformed traceparent was forwarded: %q", got["Tracestate"])
		}
	}
	for _, k := range []string{"B3", "X-B3-Sampled", "X-App"} {
		if !slices.Equal(got[k], sent[k]) {
			t.Errorf("%s %q -> %q: tracing changes traceparent only", k, sent[k], got[k])
		}
	}
}

// startTraceMesh runs a controller, a proxy in front of the recorder at
// appAddr (service rec.e2e:80) and a client proxy, all with args, and
// returns a client of the client proxy, and that proxy.
func startTraceMesh(t *testing.T, appAddr string, args []string) (*http.Client, *harness.Proxy) {
	t.Helper()
	store := harness.Store{
		Services: []harness.Service{{Name: "rec", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client"},
			{Name: "rec-w", Namespace: ns, ServiceAccount: "rec", Endpoints: []harness.Endpoint{{Service: "rec", Port: 80}}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	m.StartReadyProxy(harness.ProxySpec{Workload: "rec-w", AppAddr: appAddr, Args: args})
	client := m.StartReadyProxy(harness.ProxySpec{Workload: "client", Args: args})
	return meshClient(client.OutboundAddr, 10*time.Second), client
}

// checkExportFailed: the spans the requests made could not be exported
// (no collector), and the proxy counted them.
func checkExportFailed(t *testing.T, px *harness.Proxy) {
	t.Helper()
	began := time.Now()
	err := eventually(time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m, err := px.Metrics(ctx)
		if err != nil {
			return err
		}
		if n, _ := m.Sum("trellis_trace_spans_total", map[string]string{"outcome": "failed"}); n < 2 {
			return fmt.Errorf("trellis_trace_spans_total{outcome=\"failed\"} %v, want the 2 spans", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failed exports counted %s after the requests", time.Since(began).Round(time.Millisecond))
}

// sendVia sends GET rec.e2e:80/t with hdr through the mesh and returns the
// headers the recorder received.
func sendVia(t *testing.T, c *http.Client, hdr map[string][]string, rec *recorder) http.Header {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://rec.e2e:80/t", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = slices.Clone(v)
	}
	// The client proxy learns the route from the controller: the first
	// request may come before it.
	if err := eventually(10*time.Second, func() error {
		r, err := c.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", r.StatusCode)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s, ok := rec.seen("/t")
	if !ok {
		t.Fatal("the recorder saw no request")
	}
	return s.header
}
