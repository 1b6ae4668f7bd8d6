package k8se2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// idCheck is one check of trellis check -o json, by its stable id.
type idCheck struct {
	ID       string `json:"id"`
	Category string `json:"category"`
	Status   string `json:"status"`
	Message  string `json:"message"`
	Hint     string `json:"hint"`
}

// checksByID runs trellis check -o json (any exit status) and indexes it.
func (c *cluster) checksByID(t *testing.T, args ...string) map[string]idCheck {
	t.Helper()
	out, _ := c.trellis(t.Context(), nil, append([]string{"check", "-o", "json"}, args...)...)
	var r struct {
		Checks []idCheck `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("trellis check -o json: not the JSON report: %v\n%s", err, out)
	}
	m := map[string]idCheck{}
	for _, ch := range r.Checks {
		if ch.ID == "" || ch.Category == "" {
			t.Errorf("check without id or category: %+v", ch)
		}
		m[ch.ID] = ch
	}
	return m
}

// waitCheck waits until check id has status and its message holds every
// substring, and returns it.
func (c *cluster) waitCheck(t *testing.T, timeout time.Duration, id, status string, substrs ...string) idCheck {
	t.Helper()
	var got idCheck
	start := time.Now()
	eventually(t, timeout, "check "+id+" "+status, func() error {
		got = c.checksByID(t)[id]
		if got.Status != status {
			return fmt.Errorf("%s is %q: %s", id, got.Status, got.Message)
		}
		for _, s := range substrs {
			if !strings.Contains(got.Message, s) {
				return fmt.Errorf("%s message lacks %q: %s", id, s, got.Message)
			}
		}
		return nil
	})
	t.Logf("check %s %s after %s: %s", id, status, time.Since(start).Round(time.Second), got.Message)
	return got
}

// checkSeesBreakage is the second part of the reinstall suite (issue 15,
// item 2): on the running demo, each new check passes, then is made to
// fail on purpose, as a user would break the mesh.
func (c *cluster) checkSeesBreakage(t *testing.T, ns string) {
	start := time.Now()
	healthy := c.checksByID(t)
	for _, id := range []string{"namespace-inject", "pod-annotations", "meshed-images", "proxy-trust-anchors", "proxy-issuer", "proxy-control-plane"} {
		if healthy[id].Status != "ok" {
			t.Errorf("on a healthy mesh, check %s is %q: %s", id, healthy[id].Status, healthy[id].Message)
		}
	}

	// Bad input a user writes: a namespace asking "yes", a Deployment with
	// two bad annotations, a meshed pod whose image does not exist.
	const badNS = "e2e-reinstall-yes"
	c.namespace(t, badNS)
	c.mustRun(t, nil, "create", "namespace", badNS)
	c.mustRun(t, nil, "annotate", "namespace", badNS, "trellis.io/inject=yes")
	deploy := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"typos","namespace":"` + ns + `"},"spec":{"replicas":0,` +
		`"selector":{"matchLabels":{"app":"typos"}},"template":{"metadata":{"labels":{"app":"typos"},"annotations":{"trellis.io/inject":"enabled",` +
		`"config.trellis.io/redirect":"iptables","config.trellis.io/proxy-cpu-limit":"lots"}},"spec":{"containers":[{"name":"app","image":"` + c.image("demo-app") + `"}]}}}}`
	c.mustRun(t, []byte(deploy), "apply", "--server-side", "-f", "-")
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"nope","namespace":"` + ns + `","annotations":{"trellis.io/inject":"enabled"}},` +
		`"spec":{"containers":[{"name":"app","image":"trellis/nope:e2e","imagePullPolicy":"Always"}]}}`
	c.mustRun(t, []byte(pod), "apply", "--server-side", "-f", "-")
	c.waitCheck(t, 90*time.Second, "meshed-images", "fail", ns+"/nope: container app: image trellis/nope:e2e:")
	c.waitCheck(t, 10*time.Second, "namespace-inject", "fail", badNS+` (trellis.io/inject="yes")`)
	c.waitCheck(t, 10*time.Second, "pod-annotations", "fail", "deployment "+ns+"/typos: ", `config.trellis.io/redirect="iptables"`, `config.trellis.io/proxy-cpu-limit="lots"`)
	c.mustRun(t, nil, "-n", ns, "delete", "pod", "nope", "--grace-period=0", "--force")
	c.mustRun(t, nil, "-n", ns, "delete", "deployment", "typos")

	// The outage of issue 15: the anchor and issuer replaced at once (an
	// install rendered with no cluster to read), then the controller
	// restarted, as a changed Deployment would.
	keep := c.mustTrellis(t, nil, "upgrade")
	kc := filepath.Join(t.TempDir(), "unreachable.kubeconfig")
	if err := os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {token: x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := c.mustTrellis(t, nil, "install", "--kubeconfig", kc)
	c.mustRun(t, []byte(fresh), "apply", "--server-side", "-f", "-")
	c.mustRun(t, nil, "-n", "trellis-system", "rollout", "restart", "deployment/trellis-controller")
	c.mustRun(t, nil, "-n", "trellis-system", "rollout", "status", "deployment/trellis-controller", "--timeout=3m")
	c.waitCheck(t, 90*time.Second, "proxy-trust-anchors", "fail", "do not trust the bundle of trellis-trust-anchors")
	c.waitCheck(t, 10*time.Second, "proxy-issuer", "fail", "chaining to no anchor")
	c.waitCheck(t, 90*time.Second, "proxy-control-plane", "fail", "disconnected")

	// Put the identity back (the cleanup uninstalls anyway).
	c.mustRun(t, []byte(keep), "apply", "--server-side", "-f", "-")
	c.mustRun(t, nil, "-n", "trellis-system", "rollout", "restart", "deployment/trellis-controller")
	c.mustRun(t, nil, "-n", "trellis-system", "rollout", "status", "deployment/trellis-controller", "--timeout=3m")
	t.Logf("check sees what breaks: took %s", time.Since(start).Round(time.Second))
}
