package k8se2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// sharedAnnotation marks a default install made by sharedInstall, with the
// image tag it was made from, on the trellis-system namespace.
const sharedAnnotation = "e2e.trellis.io/shared-install"

// sharedInstall gives a suite the default install (`trellis install --crds`
// then `trellis install`), shared by every suite that needs nothing else:
// the first one installs it and the next ones reuse it, each saving an
// install and an uninstall (about 30 s). A suite that needs its own
// install (c.install) removes it first; TestMain removes it at the end.
// Suites that share it must keep to their own namespaces and leave the
// control plane as they found it (scaled back, no cluster-wide object).
func (c *cluster) sharedInstall(t *testing.T) {
	t.Helper()
	ns, err := c.run(t.Context(), nil, "get", "namespace", "trellis-system",
		"-o", "jsonpath={.metadata.annotations.e2e\\.trellis\\.io/shared-install}")
	if err == nil && ns == c.tag {
		// Reused only if it is still whole: a suite that broke it fails here, not later.
		if _, err := c.run(t.Context(), nil, "-n", "trellis-system", "rollout", "status",
			"deployment/trellis-controller", "--timeout=2m"); err == nil {
			t.Logf("reusing the shared default install")
			c.waitInjector(t)
			return
		}
		t.Logf("the shared install is not healthy: installing again")
	}
	if err == nil {
		t.Log("Trellis is installed (not the shared install of this tag): uninstalling it first")
		c.uninstall(t)
	}
	start := time.Now()
	c.applyInstall(t)
	c.mustRun(t, nil, "annotate", "--overwrite", "namespace", "trellis-system", sharedAnnotation+"="+c.tag)
	t.Logf("shared default install made in %s", time.Since(start).Round(time.Second))
}

// TestMain removes the shared install after the suites (unless
// E2E_KEEP_INSTALL=1), so that the cluster is left as the suites found it.
func TestMain(m *testing.M) {
	code := m.Run()
	if os.Getenv("TRELLIS_E2E_K8S") == "1" && os.Getenv("E2E_KEEP_INSTALL") != "1" {
		for _, rm := range []func() error{removeShared, removeSharedMC} {
			if err := rm(); err != nil {
				fmt.Fprintln(os.Stderr, "k8se2e: removing the shared install:", err)
				if code == 0 {
					code = 1
				}
			}
		}
	}
	os.Exit(code)
}

func removeShared() error {
	c, err := findCluster()
	if err != nil {
		return err
	}
	return c.removeAnnotatedInstall("e2e\\.trellis\\.io/shared-install")
}

// removeSharedMC removes the shared multicluster installs (mcInstall) of
// both clusters.
func removeSharedMC() error {
	c, err := findCluster()
	if err != nil {
		return err
	}
	peer := os.Getenv("TRELLIS_E2E_PEER_KUBECONFIG")
	if peer == "" {
		return nil
	}
	p := *c
	p.kubeconfig = peer
	for _, x := range []*cluster{c, &p} {
		if err := x.removeAnnotatedInstall("e2e\\.trellis\\.io/shared-mc-install"); err != nil {
			return err
		}
	}
	return nil
}

// removeAnnotatedInstall uninstalls Trellis if trellis-system carries the
// annotation (jsonpath-escaped), and waits until it is gone.
func (c *cluster) removeAnnotatedInstall(annotation string) error {
	ctx := context.Background()
	ns, err := c.run(ctx, nil, "get", "namespace", "trellis-system", "-o", "jsonpath={.metadata.annotations."+annotation+"}")
	if err != nil || ns == "" {
		return nil // none, or not ours
	}
	if out, err := c.trellis(ctx, nil, "uninstall", "--apply"); err != nil {
		return fmt.Errorf("trellis uninstall --apply: %w\n%s", err, out)
	}
	if _, err := c.run(ctx, nil, "wait", "--for=delete", "namespace/trellis-system", "--timeout=3m"); err != nil && !strings.Contains(err.Error(), "NotFound") {
		return fmt.Errorf("trellis-system still there after uninstall: %w", err)
	}
	return nil
}
