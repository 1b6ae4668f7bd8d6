package k8se2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// upgradePolicy is a Server and an AuthorizationPolicy written with the
// fields every version since policy.trellis.io/v1alpha1 appeared knows:
// books' HTTP port, callable by web's identity alone. They are stored by
// the previous version and must be read (and enforced) by the new one.
//
// The AuthorizationPolicy comes first, as docs/policy.md advises for a
// port that already serves traffic: the Server's default deny never
// applies without it.
const upgradePolicy = `
apiVersion: policy.trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: books-from-web, namespace: %[1]s}
spec:
  targetRef: {kind: Server, name: books-http}
  identities: ["spiffe://cluster.local/ns/%[1]s/sa/web"]
---
apiVersion: policy.trellis.io/v1alpha1
kind: Server
metadata: {name: books-http, namespace: %[1]s}
spec:
  podSelector: {matchLabels: {app: books}}
  port: 8080
  protocol: HTTP/1
`

// TestUpgrade is the suite "upgrade" (issue 15 item 8): the previous
// version (TRELLIS_E2E_UPGRADE_FROM, a commit or tag, built here from the
// repository's history) is installed and meshes the demo under load with
// a policy in place; `trellis upgrade` (CRDs, then the control plane)
// moves it to this version; the workloads are restarted one by one, so
// old and new proxies serve side by side. The client counts zero failed
// requests, the stored custom resources are still read as they were
// written, and `trellis check` warns for the skew while it lasts and is
// green at the end.
func TestUpgrade(t *testing.T) {
	c := newCluster(t)
	from := os.Getenv("TRELLIS_E2E_UPGRADE_FROM")
	if from == "" {
		t.Fatal("TRELLIS_E2E_UPGRADE_FROM is not set: the commit or tag to upgrade from (make e2e sets it: E2E_UPGRADE_FROM in test/k8se2e/e2e.mk)")
	}
	prev := c.previousVersion(t, from)
	const ns = "e2e-upgrade"
	if _, err := c.run(t.Context(), nil, "get", "namespace", "trellis-system"); err == nil {
		c.uninstall(t)
	}
	t.Cleanup(func() { c.uninstall(t) })
	for _, args := range [][]string{{"install", "--crds"}, {"install"}} {
		c.mustRun(t, []byte(prev.mustTrellis(t, nil, args...)), "apply", "--server-side", "-f", "-")
	}
	c.mustRun(t, nil, "-n", "trellis-system", "rollout", "status", "deployment/trellis-controller", "--timeout=3m")
	c.namespace(t, ns)
	prev.meshWithLoad(t, ns, 20)
	c.mustRun(t, []byte(fmt.Sprintf(upgradePolicy, ns)), "apply", "--server-side", "-f", "-")
	stored := c.mustRun(t, nil, "-n", ns, "get", "servers,authorizationpolicies", "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name} {.spec}{\"\\n\"}{end}")
	t.Logf("%s meshed the demo; stored:\n%s", prev.tag, stored)

	start := time.Now()
	for _, args := range [][]string{{"upgrade", "--crds"}, {"upgrade"}} {
		c.mustRun(t, []byte(c.mustTrellis(t, nil, args...)), "apply", "--server-side", "--force-conflicts", "-f", "-")
	}
	c.mustRun(t, nil, "-n", "trellis-system", "rollout", "status", "deployment/trellis-controller", "--timeout=3m")
	c.waitOldControllersGone(t)
	c.waitInjector(t)
	t.Logf("control plane upgraded to %s in %s", c.tag, time.Since(start).Round(time.Second))
	c.assertSkewWarned(t, ns, prev.tag)

	var follows []func() string
	for _, d := range []string{"authors", "books", "web"} {
		// The replaced pods are deleted with their logs: keep them.
		follows = append(follows, c.followLogs(t, ns, "app="+d))
		c.mustRun(t, nil, "-n", ns, "rollout", "restart", "deployment/"+d)
		c.rollout(t, ns, d)
		t.Logf("%s restarted onto %s proxies (%s since the upgrade)", d, c.tag, time.Since(start).Round(time.Second))
	}
	got := c.mustRun(t, nil, "-n", ns, "get", "servers,authorizationpolicies", "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name} {.spec}{\"\\n\"}{end}")
	if err := specsKept(stored, got); err != nil {
		t.Errorf("stored policy objects after the upgrade: %v\nbefore:\n%s\nafter:\n%s", err, stored, got)
	}
	t.Logf("stored policy objects as this version reads them (new fields defaulted by the new schema):\n%s", got)
	r := c.finalLoad(t, ns)
	for _, stop := range follows {
		if logs := stop(); r.Failed != 0 || r.Dropped != 0 {
			t.Logf("the replaced pods' warnings, errors and error answers:\n%s", grepFailures(logs, 60))
		}
	}
	t.Logf("upgrade %s -> %s under load: sent %d, ok %d, failed %d, dropped %d", prev.tag, c.tag, r.Sent, r.OK, r.Failed, r.Dropped)
	// The client itself still runs the previous proxy: the skew is still there.
	c.assertSkewWarned(t, ns, prev.tag)
	c.mustRun(t, nil, "-n", ns, "rollout", "restart", "deployment/client")
	c.rollout(t, ns, "client")
	if rep := c.check(t, "--proxy", "-n", ns); !rep.Success || rep.Summary.Warn != 0 || rep.Summary.Fail != 0 {
		t.Errorf("trellis check after every workload restarted: %+v, want all ok", rep.Summary)
	}
}

// assertSkewWarned: while pods of the previous version run, check passes
// with the proxy-version check warning (not failing) and naming them.
func (c *cluster) assertSkewWarned(t *testing.T, ns, prevTag string) {
	t.Helper()
	rep := c.check(t, "--proxy", "-n", ns)
	if !rep.Success {
		t.Errorf("trellis check fails during a supported skew (%s proxies, %s control plane)", prevTag, c.tag)
	}
	for _, ch := range rep.Checks {
		if ch.Name == "proxies are on the control plane's version" {
			if ch.Status != "warn" || !strings.Contains(ch.Message, prevTag) {
				t.Errorf("proxy-version check during the skew: %s %q, want a warning naming %s", ch.Status, ch.Message, prevTag)
			}
			return
		}
	}
	t.Error("no proxy-version check in trellis check's report")
}

// previousVersion builds the trellis binaries and images of commit (or
// tag) from, once per commit, in the harness's cache (from the
// repository's history: CI's clone has it), imports the images into the
// cluster and returns a cluster whose CLI and images are that version.
func (c *cluster) previousVersion(t *testing.T, from string) *cluster {
	t.Helper()
	root := repoRoot()
	sha, err := exec.Command("git", "-C", root, "rev-parse", "--short", from+"^{commit}").Output()
	if err != nil {
		t.Fatalf("git rev-parse %s: %v (the clone needs the history: git fetch --unshallow)", from, err)
	}
	version := "prev-" + strings.TrimSpace(string(sha))
	src := filepath.Join(c.dir, "cache", version, "src")
	if _, err := os.Stat(filepath.Join(src, "Makefile")); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		sh := fmt.Sprintf("git -C %q archive --format=tar %s | tar -x -C %q", root, from, src)
		if out, err := exec.Command("sh", "-c", sh).CombinedOutput(); err != nil {
			_ = os.RemoveAll(src)
			t.Fatalf("%s: %v\n%s", sh, err, out)
		}
	}
	start := time.Now()
	// The version is given, not derived: the extracted tree is no git checkout.
	mk := exec.Command("make", "-C", src, "images",
		"GOFLAGS_BUILD=-tags grpcnotrace -trimpath -ldflags \"-s -w -X github.com/trellis-mesh/trellis/internal/version.Version="+version+"\"",
		"TRELLIS_IMAGE_TAG="+version, "TRELLIS_CLUSTER_DIR="+c.dir)
	// Not the outer make's variables (SUITE=upgrade means nothing to the old tree).
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" && k != "SUITE" {
			mk.Env = append(mk.Env, kv)
		}
	}
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("building %s (%s): %v\n%s", from, src, err, out)
	}
	t.Logf("previous version %s (%s) built and imported in %s", version, from, time.Since(start).Round(time.Second))
	p := *c
	p.bin, p.tag = filepath.Join(src, "bin"), version
	return &p
}

// waitOldControllersGone waits until every controller pod runs this
// version's image: `rollout status` returns while the old replica still
// drains (it serves, not ready, for --drain-delay, and the API server may
// still reach its webhook), and a pod created then is injected with the
// old proxy (docs/install.md, "Upgrades and version skew").
func (c *cluster) waitOldControllersGone(t *testing.T) {
	t.Helper()
	start := time.Now()
	eventually(t, 2*time.Minute, "only controller pods of "+c.tag, func() error {
		for _, p := range c.pods(t, "trellis-system", "") {
			if !strings.HasPrefix(p.Name, "trellis-controller-") {
				continue
			}
			for _, ct := range p.Spec.Containers {
				if ct.Image != c.image("controller") {
					return fmt.Errorf("%s still runs %s", p.Name, ct.Image)
				}
			}
		}
		return nil
	})
	t.Logf("the old controller pods were gone %s after the rollout", time.Since(start).Round(time.Second))
}

// specsKept checks that every object of before (lines "Kind/name {spec}")
// is still there with every field it was written with, unchanged; fields
// the new schema adds are defaulted on read (a Server's accessPolicy: deny,
// what an old Server meant) and allowed.
func specsKept(before, after string) error {
	parse := func(s string) (map[string]map[string]any, error) {
		out := map[string]map[string]any{}
		for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
			name, spec, ok := strings.Cut(line, " ")
			if !ok {
				return nil, fmt.Errorf("unexpected line %q", line)
			}
			m := map[string]any{}
			if err := json.Unmarshal([]byte(spec), &m); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			out[name] = m
		}
		return out, nil
	}
	b, err := parse(before)
	if err != nil {
		return err
	}
	a, err := parse(after)
	if err != nil {
		return err
	}
	for name, spec := range b {
		now, ok := a[name]
		if !ok {
			return fmt.Errorf("%s is gone", name)
		}
		for k, v := range spec {
			if !reflect.DeepEqual(now[k], v) {
				return fmt.Errorf("%s: spec.%s was %v, now %v", name, k, v, now[k])
			}
		}
	}
	return nil
}
