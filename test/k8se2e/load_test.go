package k8se2e

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestJob is the suite "job": a Job whose pod gets the injected proxy as a
// native sidecar completes once its app exits (the kubelet stops the
// proxy), and the app's requests went through the mesh.
func TestJob(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-job"
	c.sharedInstall(t)
	c.deployDemo(t, ns, 1)
	c.startLoad(t, loadParams{NS: ns, Name: "client", Target: "books." + ns + ".svc.cluster.local:80", RPS: 5, Duration: 5 * time.Second})
	res := c.jobLoadResult(t, ns, "client", 3*time.Minute)
	t.Logf("job result: %+v", res)
	if res.OK == 0 || res.Failed != 0 {
		t.Errorf("job's requests: %d ok, %d failed; want all ok", res.OK, res.Failed)
	}
	pods := c.pods(t, ns, "app=client")
	if len(pods) != 1 {
		t.Fatalf("job pods: %d, want 1", len(pods))
	}
	p := pods[0]
	if _, native := proxyContainer(p); !native {
		t.Errorf("job pod %s has no native trellis-proxy sidecar", p.Name)
	}
	if p.Status.Phase != corev1.PodSucceeded {
		t.Errorf("job pod %s phase %s, want Succeeded", p.Name, p.Status.Phase)
	}
	// The server's proxy saw the job's identity over mTLS.
	books := c.pods(t, ns, "app=books")
	m, err := c.metrics(t.Context(), ns, books[0].Name, 4191)
	if err != nil {
		t.Fatal(err)
	}
	if v := m.Value("trellis_responses_total", map[string]string{"direction": "inbound", "tls": "true", "peer_identity": "spiffe://cluster.local/ns/" + ns + "/sa/loadgen", "classification": "success"}); v < float64(res.OK) {
		t.Errorf("books saw %g successful mTLS requests from the job's identity, the job counted %d ok", v, res.OK)
	}
}

// TestRollout is the suite "rollout": a rolling restart of a 3-replica
// backend while an injected client sends steady load to it; the client
// counts zero failed requests.
func TestRollout(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-rollout"
	c.sharedInstall(t)
	c.deployDemo(t, ns, 3)
	before := podNames(c.pods(t, ns, "app=books"))

	const load = 75 * time.Second
	c.startLoad(t, loadParams{NS: ns, Name: "client", Target: "books." + ns + ".svc.cluster.local:80", RPS: 50, Duration: load})
	client := c.waitRunning(t, ns, "app=client")
	started := time.Now()
	time.Sleep(5 * time.Second)
	c.mustRun(t, nil, "-n", ns, "rollout", "restart", "deployment/books")
	c.rollout(t, ns, "books")
	// The client's proxy is gone with the Job: keep what it saw of the
	// rollout for the diagnosis of a failure.
	time.Sleep(3 * time.Second)
	if m, err := c.metrics(t.Context(), ns, client, 4191); err != nil {
		t.Logf("client proxy metrics: %v", err)
	} else {
		t.Logf("client proxy after the rollout:\n%s\n%s\n%s\n%s", m.Series("trellis_responses_total"), m.Series("trellis_request_errors_total"),
			m.Series("trellis_retries_total"), m.Series("trellis_tls_handshake_errors_total"))
	}
	t.Logf("rolling restart of books (3 replicas) took %s", time.Since(started).Round(time.Second)-5*time.Second)
	if time.Since(started) > load {
		t.Fatalf("the rollout outlasted the load (%s): the result would not cover it", load)
	}
	// Old pods may still be terminating: only live ones count.
	var after []string
	for _, p := range c.pods(t, ns, "app=books") {
		if p.DeletionTimestamp == nil {
			after = append(after, p.Name)
		}
	}
	if len(after) != 3 {
		t.Errorf("books has %d live pods after the rollout, want 3: %v", len(after), after)
	}
	for _, p := range after {
		if slices.Contains(before, p) {
			t.Errorf("pod %s survived the rolling restart", p)
		}
	}
	res := c.jobLoadResult(t, ns, "client", load+2*time.Minute)
	t.Logf("client result: %+v", res)
	if res.OK == 0 || res.Failed != 0 || res.Dropped != 0 {
		t.Errorf("under the rollout: %d ok, %d failed, %d dropped; want none failed or dropped", res.OK, res.Failed, res.Dropped)
	}
}

// e2eOutage is how long the control-plane-down suites keep a controller
// down: TRELLIS_E2E_OUTAGE, else def.
func e2eOutage(t *testing.T, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv("TRELLIS_E2E_OUTAGE")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("TRELLIS_E2E_OUTAGE: %v", err)
	}
	return d
}

// TestControlPlaneDown is the suite "controlplane-down": the controller
// scaled to zero under load for TRELLIS_E2E_OUTAGE (default 2m); the
// proxies keep serving from what they hold and the client counts zero
// failed requests.
func TestControlPlaneDown(t *testing.T) {
	c := newCluster(t)
	outage := e2eOutage(t, 2*time.Minute)
	const ns = "e2e-cpdown"
	c.sharedInstall(t)
	c.deployDemo(t, ns, 2)
	load := outage + 60*time.Second
	c.startLoad(t, loadParams{NS: ns, Name: "client", Target: "web." + ns + ".svc.cluster.local:80", RPS: 20, Duration: load})
	client := c.waitRunning(t, ns, "app=client")
	started := time.Now()
	time.Sleep(10 * time.Second)

	c.mustRun(t, nil, "-n", "trellis-system", "scale", "deployment/trellis-controller", "--replicas=0")
	c.mustRun(t, nil, "-n", "trellis-system", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=trellis-controller", "--timeout=2m")
	down := time.Now()
	// The outage is real: the client's proxy has lost its Destination
	// stream. (Scraping goes through the API server, not the controller.)
	eventually(t, 30*time.Second, "client proxy notices the controller is gone", func() error {
		m, err := c.metrics(t.Context(), ns, client, 4191)
		if err != nil {
			return err
		}
		if v := m.Value("trellis_control_plane_connected", map[string]string{"service": "destination"}); v != 0 {
			return fmt.Errorf("trellis_control_plane_connected{service=destination} = %g", v)
		}
		return nil
	})
	t.Logf("controller down; holding for %s", outage)
	time.Sleep(time.Until(down.Add(outage)))
	c.mustRun(t, nil, "-n", "trellis-system", "scale", "deployment/trellis-controller", "--replicas=1")
	c.mustRun(t, nil, "-n", "trellis-system", "rollout", "status", "deployment/trellis-controller", "--timeout=3m")
	t.Logf("controller back after %s", time.Since(down).Round(time.Second))
	if time.Since(started) > load {
		t.Fatalf("the outage outlasted the load (%s): the result would not cover it", load)
	}
	res := c.jobLoadResult(t, ns, "client", load+2*time.Minute)
	t.Logf("client result: %+v", res)
	if res.OK == 0 || res.Failed != 0 || res.Dropped != 0 {
		t.Errorf("with the control plane down: %d ok, %d failed, %d dropped; want none failed or dropped", res.OK, res.Failed, res.Dropped)
	}
	// Every one of those requests reached web over mTLS from the client's
	// identity, through the outage.
	// The count is read until it covers the client's (a counter only
	// grows; a handler still finishing would show as a wait, printed).
	web := c.pods(t, ns, "app=web")[0].Name
	mtls := map[string]string{"direction": "inbound", "tls": "true", "peer_identity": "spiffe://cluster.local/ns/" + ns + "/sa/loadgen", "classification": "success"}
	counted := time.Now()
	eventually(t, 30*time.Second, "web counts every request the client saw succeed, over mTLS from its identity", func() error {
		m, err := c.metrics(t.Context(), ns, web, 4191)
		if err != nil {
			return err
		}
		if v := m.Value("trellis_responses_total", mtls); v < float64(res.OK) {
			return fmt.Errorf("web saw %g successful mTLS requests from the client, the client counted %d ok:\n%s\n%s\n%s\n%s", v, res.OK,
				m.Series("trellis_responses_total"), m.Series("trellis_requests_total"), m.Series("trellis_tcp_open_total"), m.Series("trellis_protocol_detect_total"))
		}
		return nil
	})
	t.Logf("web's count covered the client's %s after the load ended", time.Since(counted).Round(time.Millisecond))
	// The proxies reconnected once it was back.
	eventually(t, time.Minute, "web's proxy reconnects", func() error {
		m, err := c.metrics(t.Context(), ns, web, 4191)
		if err != nil {
			return err
		}
		if v := m.Value("trellis_control_plane_connected", map[string]string{"service": "destination"}); v != 1 {
			return fmt.Errorf("web's trellis_control_plane_connected{service=destination} = %g", v)
		}
		return nil
	})
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

// waitRunning waits for the app container of the one pod matching
// selector to run, and returns the pod's name.
func (c *cluster) waitRunning(t *testing.T, ns, selector string) string {
	t.Helper()
	var name string
	eventually(t, 2*time.Minute, "pod "+selector+" running", func() error {
		pods := c.pods(t, ns, selector)
		if len(pods) != 1 {
			return fmt.Errorf("%d pods", len(pods))
		}
		for _, s := range pods[0].Status.ContainerStatuses {
			if s.Name == "app" && s.State.Running != nil {
				name = pods[0].Name
				return meshed(pods[0], c.tag)
			}
		}
		return fmt.Errorf("pod %s: app not running (phase %s)", pods[0].Name, pods[0].Status.Phase)
	})
	return name
}
