package k8se2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/bench/procstat"
	"github.com/trellis-mesh/trellis/install/vizk8s"
	"github.com/trellis-mesh/trellis/test/browser"
)

// TestDashboard (suite dashboard, issue 14): `trellis dashboard` run as a
// user would (the kubeconfig's credentials, a port-forward to the viz
// Prometheus, taps through the aggregated API) over the demo application
// on the shared install, driven in a real headless Chromium: every
// deployment with live figures, the edges graph, a live tap of
// deploy/web, the identities; no console error or CSP violation.
// Installs viz when the viz suite did not leave it. (make e2e SUITE=dashboard)
func TestDashboard(t *testing.T) {
	c := newCluster(t)
	b := browser.Start(t) // fails in CI without chromium
	const ns = "e2e-dashboard"
	c.sharedInstall(t)
	if _, err := c.run(t.Context(), nil, "-n", vizk8s.Namespace, "get", "deployment/prometheus"); err != nil {
		c.vizInstall(t)
	} else {
		t.Log("viz already installed: using its Prometheus")
	}
	c.namespace(t, ns)
	c.waitInjector(t)
	start := time.Now()
	c.mustRun(t, nil, "wait", "--for=condition=Available", "apiservice/v1alpha1.tap.trellis.io", "--timeout=2m")
	t.Logf("APIService v1alpha1.tap.trellis.io Available after %s", time.Since(start).Round(100*time.Millisecond))
	manifest := c.mustTrellis(t, nil, "demo", "--kubernetes", "-n", ns, "--image", c.image("demo-app"), "--rps", "10")
	c.mustRun(t, []byte(manifest), "apply", "--server-side", "-f", "-")
	c.rollout(t, ns, "authors", "books", "web", "loadgen")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "trellis"), "dashboard", "--no-browser", "--port", "0")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig, "NO_COLOR=1")
	d := browser.RunDashboard(t, cmd, 2*time.Minute)
	browser.CheckDashboard(t, b, strings.TrimSuffix(d.URL, "/"), browser.DashboardExpect{
		Query:     "?ns=" + ns,
		Workloads: []string{"loadgen", "web", "books", "authors"},
		Serving:   []string{"web", "books", "authors"},
		Edges:     3, // loadgen -> web -> books -> authors, every hop mTLS
		TapQuery:  "ns=" + ns + "&target=deploy/web",
		// Prometheus scrapes every 15 s and rates need two scrapes.
		Ceiling:    4 * time.Minute,
		ShotPrefix: "dashboard-k8s-",
	})
	if m, err := procstat.ReadMemory(d.Pid); err == nil {
		t.Logf("trellis dashboard process after every page and a tap: RSS %.1f MiB (peak %.1f MiB)", float64(m.RSS)/(1<<20), float64(m.HWM)/(1<<20))
	}
	if err := d.Stop(30 * time.Second); err != nil {
		t.Errorf("trellis dashboard after Ctrl-C: %v", err)
	}
	c.deleteNamespace(t, ns)
}
