package k8se2e

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// TestDemoK8s is the quick start's last steps as a user types them:
// `trellis demo --kubernetes | kubectl apply --server-side -f -`, then
// `trellis edges -n NS` shows every edge of the demo (loadgen -> web ->
// books -> authors) served by the expected SPIFFE identity over mTLS, and
// `trellis check --proxy -n NS` passes. (make e2e SUITE=demo-k8s)
func TestDemoK8s(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-demo-k8s"
	c.sharedInstall(t)
	c.namespace(t, ns)
	c.waitInjector(t)
	manifest := c.mustTrellis(t, nil, "demo", "--kubernetes", "-n", ns, "--image", c.image("demo-app"), "--rps", "10")
	c.mustRun(t, []byte(manifest), "apply", "--server-side", "-f", "-")
	c.rollout(t, ns, "authors", "books", "web", "loadgen")
	for _, p := range c.pods(t, ns, "") {
		if p.DeletionTimestamp == nil {
			if err := meshed(p, c.tag); err != nil {
				t.Error(err)
			}
		}
	}

	want := map[string]string{ // client app -> destination service of its edge
		"loadgen": "web", "web": "books", "books": "authors",
	}
	start := time.Now()
	var last string
	eventually(t, 2*time.Minute, "every demo edge served over mTLS by its identity", func() error {
		out, err := c.trellis(t.Context(), nil, "edges", "-n", ns, "-o", "json")
		last = out
		if err != nil {
			return err
		}
		var res struct {
			Edges []struct {
				Pod, ServiceAccount, Destination, PeerIdentity string
				MTLS                                           bool
				Requests, SuccessRate                          float64
			}
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			return fmt.Errorf("trellis edges -o json: %w", err)
		}
		seen := map[string]bool{}
		for _, e := range res.Edges {
			dst, ok := want[e.ServiceAccount]
			if !ok {
				continue
			}
			if !e.MTLS && e.PeerIdentity == "" && e.SuccessRate == 0 {
				// Requests that reached no peer: the proxy answered them
				// itself (the load generator starts before web has an
				// endpoint: 503 no_endpoints). Nothing went in plaintext.
				t.Logf("%s -> %s: %g requests answered by its own proxy (no endpoint yet)", e.Pod, e.Destination, e.Requests)
				continue
			}
			if !e.MTLS {
				return fmt.Errorf("%s -> %s: not mTLS (served by %q)", e.Pod, e.Destination, e.PeerIdentity)
			}
			if e.PeerIdentity == "spiffe://cluster.local/ns/"+ns+"/sa/"+dst && e.Requests > 0 && e.SuccessRate > 0 {
				seen[e.ServiceAccount] = true
			}
		}
		for client := range want {
			if !seen[client] {
				return fmt.Errorf("no successful meshed edge from %s yet", client)
			}
		}
		return nil
	})
	t.Logf("all demo edges meshed %s after the rollout; trellis edges -o json:\n%s", time.Since(start).Round(time.Second), last)
	t.Logf("trellis edges -n %s:\n%s", ns, c.mustTrellis(t, nil, "edges", "-n", ns))
	if r := c.check(t, "--proxy", "-n", ns); !r.Success {
		t.Errorf("trellis check --proxy -n %s failed", ns)
	}
}
