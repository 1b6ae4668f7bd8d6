package k8se2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReinstall is the suite "reinstall" (issue 15, item 1): under load
// through the meshed demo, `trellis install` is run again and applied,
// first with --ha, then plain, then the Helm chart is rendered with `helm
// template --dry-run=server` and applied (when TRELLIS_HELM names a helm
// binary). Each keeps the trust anchors and issuer byte for byte, and the
// client counts zero failed requests. The cleanup uninstalls, as every
// suite's install does, so the next suite starts clean.
func TestReinstall(t *testing.T) {
	c := newCluster(t)
	suiteStart := time.Now()
	const ns = "e2e-reinstall"
	c.install(t)
	c.deployDemo(t, ns, 2)
	before := c.identityObjects(t)

	const load = 100 * time.Second
	c.startLoad(t, loadParams{NS: ns, Name: "client", Target: "web." + ns + ".svc.cluster.local:80", RPS: 20, Duration: load})
	c.waitRunning(t, ns, "app=client")
	started := time.Now()
	time.Sleep(5 * time.Second)

	steps := []struct {
		name  string
		apply func() string
	}{
		{"trellis install --ha", func() string { return c.mustTrellis(t, nil, "install", "--ha") }},
		{"trellis install", func() string { return c.mustTrellis(t, nil, "install") }},
	}
	if helm := helmForSuite(t); helm != "" {
		steps = append(steps, struct {
			name  string
			apply func() string
		}{"helm template --dry-run=server", func() string { return c.helmTemplate(t, helm) }})
	}
	for _, s := range steps {
		stepStart := time.Now()
		manifest := s.apply()
		c.mustRun(t, []byte(manifest), "apply", "--server-side", "--force-conflicts", "-f", "-")
		c.mustRun(t, nil, "-n", "trellis-system", "rollout", "status", "deployment/trellis-controller", "--timeout=3m")
		if got := c.identityObjects(t); got != before {
			t.Fatalf("%s replaced the mesh's identity:\nbefore: %s\nafter:  %s", s.name, before, got)
		}
		t.Logf("%s applied under load, identity kept, controller rolled out in %s", s.name, time.Since(stepStart).Round(time.Second))
	}
	// Back to the default profile: HA's PodDisruptionBudget is not in the
	// default render, so apply does not remove it.
	c.mustRun(t, nil, "-n", "trellis-system", "delete", "poddisruptionbudget", "-l", "app.kubernetes.io/part-of=trellis", "--ignore-not-found")
	if time.Since(started) > load {
		t.Fatalf("the re-installs outlasted the load (%s): the result would not cover them", load)
	}
	res := c.jobLoadResult(t, ns, "client", load+2*time.Minute)
	t.Logf("client result over %d re-installs: sent %d, ok %d, failed %d, dropped %d", len(steps), res.Sent, res.OK, res.Failed, res.Dropped)
	if res.OK == 0 || res.Failed != 0 || res.Dropped != 0 {
		t.Errorf("under the re-installs: %d ok, %d failed, %d dropped; want none failed or dropped", res.OK, res.Failed, res.Dropped)
	}
	t.Run("check sees what breaks", func(t *testing.T) { c.checkSeesBreakage(t, ns) })
	t.Logf("suite reinstall took %s", time.Since(suiteStart).Round(time.Second))
}

// identityObjects is the anchors ConfigMap's bundle and the issuer
// Secret's data, as one comparable string.
func (c *cluster) identityObjects(t *testing.T) string {
	t.Helper()
	cm := c.mustRun(t, nil, "-n", "trellis-system", "get", "configmap", "trellis-trust-anchors", "-o", "jsonpath={.data.ca-bundle\\.crt}")
	sec := c.mustRun(t, nil, "-n", "trellis-system", "get", "secret", "trellis-identity-issuer", "-o", "jsonpath={.data}")
	if strings.TrimSpace(cm) == "" || strings.TrimSpace(sec) == "" {
		t.Fatal("no trust anchors or issuer in trellis-system")
	}
	return fmt.Sprintf("anchors %x, issuer %x", sha(cm), sha(sec))
}

// helmTemplate renders the chart with lookup reading the cluster, with
// the images of this build (trellis install's defaults).
func (c *cluster) helmTemplate(t *testing.T, helm string) string {
	t.Helper()
	chart := filepath.Join(repoRoot(), "charts", "trellis")
	// A helm built by go install assumes Kubernetes v1.20 even with
	// --dry-run=server; the chart requires >= 1.31.
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.Unmarshal([]byte(c.mustRun(t, nil, "get", "--raw", "/version")), &v); err != nil {
		t.Fatal(err)
	}
	out, err := c.exec(t.Context(), nil, helm, "template", "trellis", chart, "--namespace", "trellis-system",
		"--dry-run=server", "--kubeconfig", c.kubeconfig, "--kube-version", v.GitVersion,
		"--set", "image.registry="+c.registry, "--set", "image.tag="+c.tag)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// helmForSuite is TRELLIS_HELM as the Helm parity test takes it (a path,
// or go-install to build it); "" skips the chart step, said in the log.
func helmForSuite(t *testing.T) string {
	t.Helper()
	v := os.Getenv("TRELLIS_HELM")
	switch v {
	case "":
		t.Log("TRELLIS_HELM not set: the chart step is skipped (set it to a helm binary, or go-install)")
		return ""
	case "go-install":
		bin := t.TempDir()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "install", "helm.sh/helm/v3/cmd/helm@v3.19.0")
		cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=-mod=mod")
		cmd.Dir = bin
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go install helm: %v\n%s", err, out)
		}
		return filepath.Join(bin, "helm")
	}
	return v
}

func sha(s string) [32]byte { return sha256.Sum256([]byte(s)) }
