package k8se2e

import (
	"errors"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/trellis-mesh/trellis/test/harness"
)

// TestInject is the suite "inject": on a fresh install, the demo
// application in a namespace with trellis.io/inject: enabled comes up with
// every pod meshed, and the proxies' own metrics prove every edge is mutual
// TLS with the expected SPIFFE identities and no failed request. It prints
// the time from trellis install to the first verified mTLS request and the
// controller's memory with the demo running.
func TestInject(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-inject"
	start := time.Now()
	c.install(t)
	c.deployDemo(t, ns, 1)
	c.startLoad(t, loadParams{NS: ns, Name: "loadgen", Target: "web." + ns + ".svc.cluster.local:80", RPS: 10})
	c.rollout(t, ns, "loadgen")

	id := func(sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }
	pods := map[string]string{} // app -> pod name
	for _, p := range c.pods(t, ns, "") {
		if err := meshed(p, c.tag); err != nil {
			t.Error(err)
		}
		pods[p.Labels["app"]] = p.Name
	}
	if t.Failed() {
		t.FailNow()
	}

	// The first request the load generator's proxy saw answered over mTLS
	// by a peer proving web's identity.
	eventually(t, 2*time.Minute, "first verified mTLS request", func() error {
		m, err := c.metrics(t.Context(), ns, pods["loadgen"], 4191)
		if err != nil {
			return err
		}
		if m.Value("trellis_responses_total", map[string]string{"direction": "outbound", "tls": "true", "peer_identity": id("web"), "classification": "success"}) == 0 {
			return errors.New("no successful mTLS response yet:\n" + m.Series("trellis_responses_total"))
		}
		return nil
	})
	t.Logf("time from trellis install to the first verified mTLS request: %s", time.Since(start).Round(100*time.Millisecond))

	// Let traffic flow on every edge, then read every proxy.
	time.Sleep(10 * time.Second)
	type edge struct{ app, direction, peer string }
	want := []edge{
		{"loadgen", "outbound", id("web")},
		{"web", "inbound", id("loadgen")},
		{"web", "outbound", id("books")},
		{"books", "inbound", id("web")},
		{"books", "outbound", id("authors")},
		{"authors", "inbound", id("books")},
	}
	for app, pod := range pods {
		m, err := c.metrics(t.Context(), ns, pod, 4191)
		if err != nil {
			t.Fatalf("metrics of %s: %v", pod, err)
		}
		for _, e := range want {
			if e.app != app {
				continue
			}
			ok := m.Value("trellis_responses_total", map[string]string{"direction": e.direction, "tls": "true", "peer_identity": e.peer, "classification": "success"})
			if ok == 0 {
				t.Errorf("%s: no successful %s mTLS response with peer %s:\n%s", app, e.direction, e.peer, m.Series("trellis_responses_total"))
			}
		}
		// Nothing else: no plain-text series, no unexpected peer, no
		// failure, no request the proxy answered itself, no bad handshake.
		allowed := map[string]bool{}
		for _, e := range want {
			if e.app == app {
				allowed[e.direction+" "+e.peer] = true
			}
		}
		var total, failed float64
		for _, s := range series(m, "trellis_responses_total") {
			total += s.value
			if s.labels["tls"] != "true" || !allowed[s.labels["direction"]+" "+s.labels["peer_identity"]] {
				t.Errorf("%s: unexpected series %v = %g", app, s.labels, s.value)
			}
			if s.labels["classification"] != "success" {
				failed += s.value
			}
		}
		if failed > 0 {
			t.Errorf("%s: %g of %g responses failed:\n%s", app, failed, total, m.Series("trellis_responses_total"))
		}
		for _, name := range []string{"trellis_request_errors_total", "trellis_tls_handshake_errors_total"} {
			if v := m.Value(name, nil); v != 0 {
				t.Errorf("%s: %s = %g:\n%s", app, name, v, m.Series(name))
			}
		}
		t.Logf("%s (%s): %g responses, success rate %.1f%%, all mTLS", app, pod, total, 100*(total-failed)/max(total, 1))
	}

	// With the demo meshed, trellis check is entirely green.
	r := c.check(t)
	if !r.Success || r.Summary.Warn+r.Summary.Fail+r.Summary.Skip != 0 {
		t.Errorf("trellis check with the demo running is not all green: %+v", r.Summary)
	}
	logControllerMemory(t, c)
}

// logControllerMemory prints the controller's resident memory from its
// own /metrics.
func logControllerMemory(t *testing.T, c *cluster) {
	t.Helper()
	pod := c.controllerPod(t)
	m, err := c.metrics(t.Context(), "trellis-system", pod, 9996)
	if err != nil {
		t.Errorf("controller metrics: %v", err)
		return
	}
	rss, ok := m.Sum("process_resident_memory_bytes", nil)
	if !ok {
		t.Errorf("controller has no process_resident_memory_bytes")
		return
	}
	heap := m.Value("go_memstats_heap_inuse_bytes", nil)
	t.Logf("controller %s memory: RSS %.1f MiB, Go heap in use %.1f MiB", pod, rss/(1<<20), heap/(1<<20))
}

type sample struct {
	labels map[string]string
	value  float64
}

// series lists a counter's or gauge's samples with their labels.
func series(m harness.Metrics, name string) []sample {
	f, ok := m[name]
	if !ok {
		return nil
	}
	var out []sample
	for _, mm := range f.GetMetric() {
		s := sample{labels: map[string]string{}, value: metricValue(mm)}
		for _, lp := range mm.GetLabel() {
			s.labels[lp.GetName()] = lp.GetValue()
		}
		out = append(out, s)
	}
	return out
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}
