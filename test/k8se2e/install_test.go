package k8se2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestInstall is the suite "install": trellis install (default and --ha)
// applied with kubectl, the controller ready, trellis check green, then
// trellis uninstall --apply leaving nothing behind.
func TestInstall(t *testing.T) {
	c := newCluster(t)
	for _, tc := range []struct {
		name     string
		flags    []string
		replicas int
		policy   string // the webhook's failurePolicy
	}{
		{name: "default", replicas: 1, policy: "Ignore"},
		{name: "ha", flags: []string{"--ha"}, replicas: 3, policy: "Fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := dryCount(t, c, tc.flags) + dryCount(t, c, []string{"--crds"})
			applied := c.install(t, tc.flags...)
			t.Logf("install %s: %d objects applied (%d CRDs + control plane)", tc.name, applied, dryCount(t, c, []string{"--crds"}))
			if applied != want {
				t.Errorf("kubectl applied %d objects, trellis install --dry-count says %d", applied, want)
			}

			// The Deployment as the profile promises it.
			ready := c.mustRun(t, nil, "-n", "trellis-system", "get", "deployment/trellis-controller", "-o", "jsonpath={.status.readyReplicas}")
			if ready != strconv.Itoa(tc.replicas) {
				t.Errorf("controller ready replicas = %q, want %d", ready, tc.replicas)
			}
			policy := c.mustRun(t, nil, "get", "mutatingwebhookconfiguration/trellis-injector", "-o", "jsonpath={.webhooks[*].failurePolicy}")
			if policy != tc.policy {
				t.Errorf("injector failurePolicy = %q, want %q", policy, tc.policy)
			}
			if tc.name == "ha" {
				c.mustRun(t, nil, "-n", "trellis-system", "get", "poddisruptionbudget/trellis-controller")
				aff := c.mustRun(t, nil, "-n", "trellis-system", "get", "deployment/trellis-controller", "-o", "jsonpath={.spec.template.spec.affinity.podAntiAffinity}")
				if !strings.Contains(aff, "preferredDuringScheduling") || strings.Contains(aff, "requiredDuringScheduling") {
					t.Errorf("HA anti-affinity should be preferred only on one node, got %s", aff)
				}
			}

			// The rollout being done does not mean the API server reaches
			// the webhook yet (kube-proxy programs the Service a moment
			// later); check's webhook-call probe fails in that window, so
			// wait for the injector first and log how long it took.
			c.waitInjector(t)

			// trellis check: every control-plane, webhook and identity check
			// green; with nothing injected yet only "meshed pods found" may
			// warn and the proxy scrape is skipped.
			r := c.check(t)
			if !r.Success || r.Summary.Fail != 0 {
				t.Errorf("trellis check failed: %+v", r.Summary)
			}
			for _, ch := range r.Checks {
				if ch.Status == "ok" || (ch.Group == "data plane" && ch.Status != "fail") {
					continue
				}
				t.Errorf("check %q (%s): %s: %s (hint: %s)", ch.Name, ch.Group, ch.Status, ch.Message, ch.Hint)
			}

			c.uninstall(t)
			assertNothingLeft(t, c)
		})
	}
}

// dryCount is the total trellis install --dry-count prints.
func dryCount(t *testing.T, c *cluster, flags []string) int {
	t.Helper()
	out := c.mustTrellis(t, nil, append([]string{"install", "--dry-count"}, flags...)...)
	m := regexp.MustCompile(`(?m)^total\s+(\d+)\s*$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("trellis install --dry-count %v printed no total:\n%s", flags, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// assertNothingLeft looks through every listable resource type for an
// object with the Trellis labels, and for the CRDs and the webhook.
func assertNothingLeft(t *testing.T, c *cluster) {
	t.Helper()
	kinds := strings.Fields(c.mustRun(t, nil, "api-resources", "--verbs=list", "-o", "name"))
	// Events carry no labels of ours and come and go; skip them.
	var list []string
	for _, k := range kinds {
		if k != "events" && k != "events.events.k8s.io" {
			list = append(list, k)
		}
	}
	left := strings.TrimSpace(c.mustRun(t, nil, "get", strings.Join(list, ","), "-A", "--ignore-not-found",
		"-l", "app.kubernetes.io/part-of=trellis,app.kubernetes.io/managed-by=trellis", "-o", "name"))
	if left != "" {
		t.Errorf("objects with the Trellis labels left after uninstall:\n%s", left)
	}
	crds := c.mustRun(t, nil, "get", "customresourcedefinitions", "-o", "name")
	for _, l := range strings.Fields(crds) {
		if strings.HasSuffix(l, ".trellis.io") {
			t.Errorf("CRD left after uninstall: %s", l)
		}
	}
	if wh := strings.TrimSpace(c.mustRun(t, nil, "get", "mutatingwebhookconfigurations", "-o", "name")); strings.Contains(wh, "trellis") {
		t.Errorf("webhook configuration left after uninstall: %s", wh)
	}
}
