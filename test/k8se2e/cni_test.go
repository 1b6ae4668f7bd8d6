package k8se2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	cniinstall "github.com/trellis-mesh/trellis/cni/install"
)

// TestCNI is the suite "cni": trellis install --cni puts the trellis-cni
// installer DaemonSet on the node, which chains the plugin into the
// runtime's conflist; the injected demo then runs with no NET_ADMIN or
// NET_RAW in any pod, each pod's trellis-validate proved redirection
// before the proxy and the app started, and every edge is mutual TLS. With
// the plugin taken off the node, a new injected pod never starts its app;
// uninstall removes the DaemonSet and restores the node's conflist.
func TestCNI(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-cni"
	// The harness's containerd: bin_dir = Debian's plugins, conf_dir in
	// the run directory (test/cluster/k8s/cmd/cluster/config.go).
	binDir := envOr("TRELLIS_CNI_BIN_DIR", "/usr/lib/cni")
	confDir := envOr("TRELLIS_CNI_CONF_DIR", filepath.Join(c.dir, "run", "cni", "net.d"))
	images, _ := os.ReadFile(filepath.Join(c.bin, "images", "images.txt"))
	if !bytes.Contains(images, []byte(" "+c.image("cni")+" ")) {
		t.Fatalf("bin/images/images.txt has no %s: run make images after make build", c.image("cni"))
	}
	node := &cniNode{binDir: binDir, confDir: confDir}
	base := node.baseline(t)
	t.Logf("node CNI: bin %s, primary conf %s (plugins %v)", binDir, node.conf, pluginTypes(t, base))

	// Registered before install: runs after its uninstall, also on failure.
	t.Cleanup(func() {
		c.waitGone(t, "namespace/trellis-cni")
		if err := node.restored(base); err != nil {
			t.Errorf("after the suite: %v", err)
		}
	})
	start := time.Now()
	// Install-time proxy settings, which the injector must apply to every
	// pod (a pod's annotations still win: see checkUnredirectedPodFails).
	flags := []string{"--cni", "--set", "cni.binDir=" + binDir + ",cni.confDir=" + confDir,
		"--set", "proxy.resources.requests.memory=24Mi,proxy.resources.limits.cpu=500m,proxy.logLevel=warn"}
	want := dryCount(t, c, flags) + dryCount(t, c, []string{"--crds"})
	if applied := c.install(t, flags...); applied != want {
		t.Errorf("kubectl applied %d objects, trellis install --dry-count says %d", applied, want)
	} else {
		t.Logf("install --cni: %d objects applied (CRDs included), as --dry-count says", applied)
	}
	c.mustRun(t, nil, "-n", "trellis-cni", "rollout", "status", "daemonset/trellis-cni", "--timeout=2m")
	eventually(t, time.Minute, "trellis-cni in the node's conflist", node.installed)
	t.Logf("installer DaemonSet ready and plugin chained %s after trellis install", time.Since(start).Round(100*time.Millisecond))
	c.checkInstallerPod(t)

	// The demo, injected with CNI redirection by default.
	c.namespace(t, ns)
	c.waitInjector(t)
	c.mustRun(t, render(t, demoServers, demoParams{
		NS: ns, Image: c.image("demo-app"), BooksReplicas: 1,
		ServiceAccounts: []string{"authors", "books", "web", "loadgen"}, Services: demoServices,
	}), "apply", "--server-side", "-f", "-")
	c.rollout(t, ns, "authors", "books", "web")
	c.startLoad(t, loadParams{NS: ns, Name: "loadgen", Target: "web." + ns + ".svc.cluster.local:80", RPS: 10})
	c.rollout(t, ns, "loadgen")
	pods := map[string]string{}
	for _, p := range c.pods(t, ns, "") {
		if p.DeletionTimestamp != nil {
			continue
		}
		if err := meshedCNI(p, c.tag); err != nil {
			t.Error(err)
		}
		if err := proxySettings(p, "24Mi", "500m", "warn"); err != nil {
			t.Error(err)
		}
		// The check ran and proved redirection by probe.
		log := c.mustRun(t, nil, "-n", ns, "logs", p.Name, "-c", "trellis-validate")
		if !strings.Contains(log, "ipv4: outbound redirection proven by probe") {
			t.Errorf("%s: trellis-validate did not prove redirection:\n%s", p.Name, log)
		}
		t.Logf("%s: no NET_ADMIN/NET_RAW in any container; proxy from the install's settings (memory request 24Mi, cpu limit 500m, log level warn); trellis-validate: %s", p.Name, strings.ReplaceAll(strings.TrimSpace(log), "\n", " | "))
		pods[p.Labels["app"]] = p.Name
	}
	if t.Failed() {
		t.FailNow()
	}
	c.checkEdges(t, ns, pods, start)

	// Take the plugin off the node: the installer's pod stops (a node
	// selector no node has) and its --cleanup-on-exit removes the entry.
	c.mustRun(t, nil, "-n", "trellis-cni", "patch", "daemonset/trellis-cni", "--type=merge",
		"-p", `{"spec":{"template":{"spec":{"nodeSelector":{"trellis.io/e2e-no-such-node":"true"}}}}}`)
	eventually(t, 2*time.Minute, "the stopped installer restoring the conflist", func() error { return node.restored(base) })
	t.Log("installer stopped: the plugin is out of the conflist and its binary removed")
	// containerd reloads its CNI configuration on the file change; give
	// it a moment so the next sandbox is set up without the plugin.
	time.Sleep(3 * time.Second)
	c.checkUnredirectedPodFails(t, ns)

	// Back on the node, then uninstalled for good.
	c.mustRun(t, nil, "-n", "trellis-cni", "patch", "daemonset/trellis-cni", "--type=merge",
		"-p", `{"spec":{"template":{"spec":{"nodeSelector":{"trellis.io/e2e-no-such-node":null}}}}}`)
	c.mustRun(t, nil, "-n", "trellis-cni", "rollout", "status", "daemonset/trellis-cni", "--timeout=2m")
	eventually(t, time.Minute, "trellis-cni back in the node's conflist", node.installed)
	c.deleteNamespace(t, ns)
	c.uninstall(t)
	c.waitGone(t, "namespace/trellis-cni")
	if out, err := c.run(t.Context(), nil, "get", "daemonsets", "-A", "-l", "app.kubernetes.io/name=trellis-cni", "-o", "name"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("trellis-cni DaemonSet still there after uninstall: %q %v", out, err)
	}
	eventually(t, time.Minute, "the conflist restored after uninstall", func() error { return node.restored(base) })
	t.Log("uninstalled: DaemonSet and namespace gone, conflist as before install, plugin binary removed")
}

// cniNode reads the node's CNI directories (the suite runs on the node).
type cniNode struct {
	binDir, confDir string
	conf            string // the primary conflist
}

// baseline returns the primary conflist's content without any trellis-cni
// entry (a previous run may have left one).
func (n *cniNode) baseline(t *testing.T) []byte {
	t.Helper()
	in := &cniinstall.Installer{ConfDir: n.confDir}
	path, err := in.PrimaryConf()
	if err != nil || path == "" {
		t.Fatalf("no CNI configuration in %s (%v): is the cluster up? Set TRELLIS_CNI_CONF_DIR for another runtime", n.confDir, err)
	}
	n.conf = path
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out, changed, err := cniinstall.RemoveEntry(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if changed {
		t.Logf("%s holds a trellis-cni entry left by an earlier run; the baseline is without it", path)
	}
	return out
}

// installed says why the plugin is not chained last in the conflist with
// its binary in place, or nil.
func (n *cniNode) installed() error {
	data, err := os.ReadFile(n.conf)
	if err != nil {
		return err
	}
	types, err := conflistTypes(data)
	if err != nil {
		return err
	}
	if len(types) == 0 || types[len(types)-1] != cniinstall.PluginType {
		return fmt.Errorf("%s plugins %v: trellis-cni is not last", n.conf, types)
	}
	if _, err := os.Stat(filepath.Join(n.binDir, cniinstall.PluginType)); err != nil {
		return fmt.Errorf("plugin binary: %w", err)
	}
	return nil
}

// restored says how the conflist differs from base (as JSON) or the
// binary is still there, or nil.
func (n *cniNode) restored(base []byte) error {
	data, err := os.ReadFile(n.conf)
	if err != nil {
		return err
	}
	var got, want any
	if err := json.Unmarshal(data, &got); err != nil {
		return fmt.Errorf("%s: %w", n.conf, err)
	}
	if err := json.Unmarshal(base, &want); err != nil {
		return err
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("%s is not the conflist from before install:\n%s", n.conf, data)
	}
	if _, err := os.Stat(filepath.Join(n.binDir, cniinstall.PluginType)); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("plugin binary %s still there (%v)", filepath.Join(n.binDir, cniinstall.PluginType), err)
	}
	return nil
}

func conflistTypes(data []byte) ([]string, error) {
	var l struct {
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, err
	}
	var out []string
	for _, p := range l.Plugins {
		out = append(out, p.Type)
	}
	return out, nil
}

func pluginTypes(t *testing.T, data []byte) []string {
	t.Helper()
	types, err := conflistTypes(data)
	if err != nil {
		t.Fatal(err)
	}
	return types
}

// waitGone waits until a cluster object no longer exists.
func (c *cluster) waitGone(t *testing.T, obj string) {
	t.Helper()
	// Also from a Cleanup, when t.Context() is already cancelled.
	ctx := context.WithoutCancel(t.Context())
	if _, err := c.run(ctx, nil, "wait", "--for=delete", obj, "--timeout=3m"); err != nil && !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("%s still there: %v", obj, err)
	}
}

// checkInstallerPod logs the installer's pod and requires its least
// privilege as rendered: no capability, not privileged, no API token.
func (c *cluster) checkInstallerPod(t *testing.T) {
	t.Helper()
	pods := c.pods(t, "trellis-cni", "app.kubernetes.io/name=trellis-cni")
	if len(pods) != 1 {
		t.Fatalf("%d installer pods, want 1 (one node)", len(pods))
	}
	p := pods[0]
	for _, ctr := range p.Spec.Containers {
		if sc := ctr.SecurityContext; sc == nil || sc.Capabilities == nil || len(sc.Capabilities.Add) > 0 || (sc.Privileged != nil && *sc.Privileged) {
			t.Errorf("installer container %s: capabilities or privilege: %+v", ctr.Name, sc)
		}
	}
	for _, v := range p.Spec.Volumes {
		if v.Projected != nil {
			t.Errorf("installer pod has a projected volume %s (an API token?)", v.Name)
		}
	}
	log := c.mustRun(t, nil, "-n", "trellis-cni", "logs", p.Name)
	t.Logf("installer %s log:\n%s", p.Name, strings.TrimSpace(log))
}

// meshedCNI is meshed for CNI redirection: the native-sidecar proxy ready,
// trellis-validate completed before it, no trellis-init, and no container
// of the pod with NET_ADMIN, NET_RAW or privilege.
func meshedCNI(p corev1.Pod, version string) error {
	var errs []error
	proxy, native := proxyContainer(p)
	if proxy == nil || !native {
		errs = append(errs, errors.New("no native-sidecar trellis-proxy"))
	}
	names := []string{}
	for _, ic := range p.Spec.InitContainers {
		names = append(names, ic.Name)
	}
	if len(names) < 2 || names[0] != "trellis-validate" || names[1] != "trellis-proxy" {
		errs = append(errs, fmt.Errorf("init containers %v, want trellis-validate then trellis-proxy first", names))
	}
	if err := proxyState(p); err != nil {
		errs = append(errs, err)
	}
	for _, ctr := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if ctr.Name == "trellis-init" {
			errs = append(errs, errors.New("has trellis-init"))
		}
		sc := ctr.SecurityContext
		if sc == nil {
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			errs = append(errs, fmt.Errorf("container %s is privileged", ctr.Name))
		}
		if sc.Capabilities != nil {
			for _, capa := range sc.Capabilities.Add {
				if capa == "NET_ADMIN" || capa == "NET_RAW" || capa == "ALL" {
					errs = append(errs, fmt.Errorf("container %s adds %s", ctr.Name, capa))
				}
			}
		}
	}
	if p.Annotations["config.trellis.io/redirect"] != "cni" {
		errs = append(errs, fmt.Errorf("config.trellis.io/redirect %q, want cni", p.Annotations["config.trellis.io/redirect"]))
	}
	if p.Labels["trellis.io/proxied"] != "true" || p.Annotations["trellis.io/proxy-version"] != version {
		errs = append(errs, errors.New("no trellis.io/proxied label or wrong proxy version"))
	}
	validated, ready := false, false
	for _, s := range p.Status.InitContainerStatuses {
		switch s.Name {
		case "trellis-validate":
			validated = s.State.Terminated != nil && s.State.Terminated.ExitCode == 0
		case "trellis-proxy":
			ready = s.Ready
		}
	}
	if !validated {
		errs = append(errs, errors.New("trellis-validate did not complete successfully"))
	}
	if !ready {
		errs = append(errs, errors.New("trellis-proxy not ready"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pod %s: %w", p.Name, err)
	}
	return nil
}

// proxySettings says how the pod's injected proxy differs from the
// expected memory request, CPU limit and log level, or nil.
func proxySettings(p corev1.Pod, memRequest, cpuLimit, logLevel string) error {
	proxy, _ := proxyContainer(p)
	if proxy == nil {
		return fmt.Errorf("pod %s: no proxy", p.Name)
	}
	lvl := ""
	for _, e := range proxy.Env {
		if e.Name == "TRELLIS_PROXY_LOG_LEVEL" {
			lvl = e.Value
		}
	}
	mem, cpu := proxy.Resources.Requests.Memory().String(), proxy.Resources.Limits.Cpu().String()
	if mem != memRequest || cpu != cpuLimit || lvl != logLevel {
		return fmt.Errorf("pod %s: proxy memory request %s, cpu limit %s, log level %q; want %s, %s, %q", p.Name, mem, cpu, lvl, memRequest, cpuLimit, logLevel)
	}
	return nil
}

// checkUnredirectedPodFails creates an injected pod while no plugin is on
// the node: its trellis-validate must fail with a clear message, and
// neither the proxy nor the app may ever start.
func (c *cluster) checkUnredirectedPodFails(t *testing.T, ns string) {
	t.Helper()
	pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"unredirected","namespace":%q,
"annotations":{"config.trellis.io/proxy-memory-request":"30Mi"}},
"spec":{"restartPolicy":"Never","serviceAccountName":"authors","containers":[{"name":"app","image":%q,"imagePullPolicy":"IfNotPresent",
"args":["--role=authors","--listen=0.0.0.0:8080","--proxy="]}]}}`, ns, c.image("demo-app"))
	c.mustRun(t, []byte(pod), "apply", "--server-side", "-f", "-")
	var p corev1.Pod
	eventually(t, 2*time.Minute, "the unredirected pod failing", func() error {
		out, err := c.run(t.Context(), nil, "-n", ns, "get", "pod", "unredirected", "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	if err := meshedCNI(p, c.tag); err == nil {
		t.Error("the pod without redirection passed as meshed")
	}
	// Its own annotation won over the install's memory request; the rest
	// is the install's.
	if err := proxySettings(p, "30Mi", "500m", "warn"); err != nil {
		t.Error(err)
	}
	var msg string
	for _, s := range p.Status.InitContainerStatuses {
		switch s.Name {
		case "trellis-validate":
			if s.State.Terminated == nil || s.State.Terminated.ExitCode != 1 {
				t.Errorf("trellis-validate state %+v, want terminated with exit code 1", s.State)
			} else {
				msg = strings.TrimSpace(s.State.Terminated.Message)
			}
		case "trellis-proxy":
			if s.State.Running != nil || s.State.Terminated != nil || s.Started != nil && *s.Started {
				t.Errorf("the proxy started without redirection: %+v", s.State)
			}
		}
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Running != nil || s.State.Terminated != nil && s.State.Terminated.StartedAt.Unix() > 0 {
			t.Errorf("container %s started without redirection: %+v", s.Name, s.State)
		}
	}
	if !strings.Contains(msg, "redirection rules are not in place") {
		t.Errorf("trellis-validate's message %q does not say redirection is missing", msg)
	}
	t.Logf("pod created without the plugin: phase %s, app never started; trellis-validate said: %s", p.Status.Phase, msg)
	c.mustRun(t, nil, "-n", ns, "delete", "pod", "unredirected", "--wait=true")
}
