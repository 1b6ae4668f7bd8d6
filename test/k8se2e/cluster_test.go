package k8se2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
	corev1 "k8s.io/api/core/v1"
)

// skipHint is what a skipped suite says: how to run it for real.
const skipHint = "set TRELLIS_E2E_K8S=1 to run the Kubernetes suites on a cluster " +
	"(make cluster-up && make images, or simply make e2e SUITE=name); see test/k8se2e/README.md"

// cmdTimeout bounds every single kubectl or trellis call.
const cmdTimeout = 3 * time.Minute

// cluster is how a suite reaches the cluster: the harness's kubeconfig,
// a kubectl, the trellis binaries and the image tag they were built with.
type cluster struct {
	dir        string // the harness's directory (TRELLIS_CLUSTER_DIR)
	kubeconfig string
	kubectl    []string // argv prefix, e.g. [".../k8s-all", "kubectl"]
	bin        string   // directory of trellis, trellis-proxy, ...
	tag        string   // tag of the trellis/* images (the CLI's version)
	registry   string   // registry part of the image names
}

// newCluster skips the test unless TRELLIS_E2E_K8S=1, then finds and
// checks everything a suite needs; a missing piece fails with a hint.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	if os.Getenv("TRELLIS_E2E_K8S") != "1" {
		t.Skip(skipHint)
	}
	c, err := findCluster()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.bin, "trellis")); err != nil {
		t.Fatalf("trellis binary: %v (run make build, or set TRELLIS_BIN)", err)
	}
	// trellis install asks for images tagged with the CLI's version, so the
	// images in the cluster must carry exactly that tag.
	c.tag = strings.TrimSpace(c.mustTrellis(t, nil, "version", "--client", "--short"))
	if c.tag == "" || strings.ContainsAny(c.tag, " \n") {
		t.Fatalf("trellis version --client --short printed %q", c.tag)
	}
	images, err := os.ReadFile(filepath.Join(c.bin, "images", "images.txt"))
	if err != nil {
		t.Fatalf("images: %v (run make images)", err)
	}
	for _, name := range []string{"controller", "proxy", "init", "demo-app"} {
		if !bytes.Contains(images, []byte(" "+c.registry+"/"+name+":"+c.tag+" ")) {
			t.Fatalf("bin/images/images.txt has no %s/%s:%s: run make images after make build", c.registry, name, c.tag)
		}
	}
	if _, err := c.run(t.Context(), nil, "get", "--raw", "/readyz"); err != nil {
		t.Fatalf("cluster not ready: %v (make cluster-up)", err)
	}
	return c
}

// findCluster locates the kubeconfig, kubectl and the binaries (not yet
// checked: newCluster does that).
func findCluster() (*cluster, error) {
	clusterDir := envOr("TRELLIS_CLUSTER_DIR", "/var/tmp/trellis-cluster")
	c := &cluster{
		dir:        clusterDir,
		kubeconfig: envOr("TRELLIS_KUBECONFIG", envOr("KUBECONFIG", filepath.Join(clusterDir, "run", "admin.kubeconfig"))),
		bin:        envOr("TRELLIS_BIN", filepath.Join(repoRoot(), "bin")),
		registry:   envOr("TRELLIS_IMAGE_REPO", "trellis"),
	}
	if _, err := os.Stat(c.kubeconfig); err != nil {
		return nil, fmt.Errorf("kubeconfig: %w (is the cluster up? make cluster-up)", err)
	}
	switch k := os.Getenv("TRELLIS_KUBECTL"); {
	case k != "":
		c.kubectl = strings.Fields(k)
	default:
		if m, _ := filepath.Glob(filepath.Join(clusterDir, "cache", "k8s-*", "k8s-all")); len(m) > 0 {
			c.kubectl = []string{m[0], "kubectl"}
		} else if p, err := exec.LookPath("kubectl"); err == nil {
			c.kubectl = []string{p}
		} else {
			return nil, errors.New("no kubectl: set TRELLIS_KUBECTL, or build the harness (make cluster-up)")
		}
	}
	return c, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// repoRoot is two levels up from this package's directory (go test runs
// in the package's directory).
func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return "../.."
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

func (c *cluster) image(name string) string { return c.registry + "/" + name + ":" + c.tag }

// exec runs one program with the kubeconfig in its environment and
// returns stdout; the error carries stderr.
func (c *cluster) exec(ctx context.Context, stdin []byte, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig, "NO_COLOR=1")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(shortArgv(argv), " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// shortArgv drops the directory of the program for messages.
func shortArgv(argv []string) []string {
	out := append([]string{filepath.Base(argv[0])}, argv[1:]...)
	return out
}

// run is kubectl.
func (c *cluster) run(ctx context.Context, stdin []byte, args ...string) (string, error) {
	argv := append(append(append([]string{}, c.kubectl...), "--kubeconfig", c.kubeconfig), args...)
	return c.exec(ctx, stdin, argv...)
}

func (c *cluster) mustRun(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, err := c.run(t.Context(), stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (c *cluster) trellis(ctx context.Context, stdin []byte, args ...string) (string, error) {
	return c.exec(ctx, stdin, append([]string{filepath.Join(c.bin, "trellis")}, args...)...)
}

func (c *cluster) mustTrellis(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, err := c.trellis(t.Context(), stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// install lays down the CRDs then the control plane exactly as
// docs/install.md says, waits for the controller to be rolled out, and
// uninstalls at the end of the test. It returns the number of objects
// kubectl applied (CRDs included).
func (c *cluster) install(t *testing.T, flags ...string) int {
	t.Helper()
	if _, err := c.run(t.Context(), nil, "get", "namespace", "trellis-system"); err == nil {
		t.Log("a previous run left Trellis installed: uninstalling it first")
		c.uninstall(t)
	}
	t.Cleanup(func() { c.uninstall(t) })
	return c.applyInstall(t, flags...)
}

// applyInstall applies the CRDs and the control plane and waits for the
// controller; it returns the number of objects applied.
func (c *cluster) applyInstall(t *testing.T, flags ...string) int {
	t.Helper()
	applied := 0
	for _, args := range [][]string{{"install", "--crds"}, append([]string{"install"}, flags...)} {
		manifest := c.mustTrellis(t, nil, args...)
		out := c.mustRun(t, []byte(manifest), "apply", "--server-side", "-f", "-")
		applied += strings.Count(out, " serverside-applied")
	}
	c.mustRun(t, nil, "-n", "trellis-system", "rollout", "status", "deployment/trellis-controller", "--timeout=3m")
	return applied
}

// uninstall runs trellis uninstall --apply and waits until the namespace
// and the CRDs are really gone, so the next suite starts clean.
func (c *cluster) uninstall(t *testing.T) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	if out, err := c.trellis(ctx, nil, "uninstall", "--apply"); err != nil {
		t.Errorf("trellis uninstall --apply: %v\n%s", err, out)
		return
	}
	if _, err := c.run(ctx, nil, "wait", "--for=delete", "namespace/trellis-system", "--timeout=3m"); err != nil && !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("trellis-system still there after uninstall: %v", err)
	}
}

// namespace makes sure ns does not exist yet and deletes it (waiting) at
// the end of the test; the manifests create it.
func (c *cluster) namespace(t *testing.T, ns string) {
	t.Helper()
	if _, err := c.run(t.Context(), nil, "get", "namespace", ns); err == nil {
		t.Logf("namespace %s left by a previous run: deleting it", ns)
		c.deleteNamespace(t, ns)
	}
	t.Cleanup(func() { c.deleteNamespace(t, ns) })
	// Runs before the deletion: what a failed suite left, for its log.
	t.Cleanup(func() {
		if t.Failed() {
			c.dump(t, ns)
		}
	})
}

// dump logs the state of ns and of the control plane: pods, events and
// every container's log (the previous run's too).
func (c *cluster) dump(t *testing.T, ns string) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	for _, n := range []string{ns, "trellis-system"} {
		out, _ := c.run(ctx, nil, "-n", n, "get", "pods", "-o", "wide")
		t.Logf("pods of %s:\n%s", n, out)
		out, _ = c.run(ctx, nil, "-n", n, "get", "events", "--sort-by=.lastTimestamp")
		t.Logf("events of %s:\n%s", n, out)
		names, _ := c.run(ctx, nil, "-n", n, "get", "pods", "-o", "name")
		for _, pod := range strings.Fields(names) {
			out, _ = c.run(ctx, nil, "-n", n, "logs", pod, "--all-containers", "--prefix", "--tail=20")
			t.Logf("logs of %s/%s:\n%s", n, pod, out)
			if prev, err := c.run(ctx, nil, "-n", n, "logs", pod, "--all-containers", "--prefix", "--previous", "--tail=20"); err == nil {
				t.Logf("previous logs of %s/%s:\n%s", n, pod, prev)
			}
		}
	}
}

func (c *cluster) deleteNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	if _, err := c.run(ctx, nil, "delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=3m"); err != nil {
		t.Errorf("deleting namespace %s: %v", ns, err)
	}
}

// rollout waits for each Deployment of ns to be rolled out.
func (c *cluster) rollout(t *testing.T, ns string, deployments ...string) {
	t.Helper()
	for _, d := range deployments {
		c.mustRun(t, nil, "-n", ns, "rollout", "status", "deployment/"+d, "--timeout=3m")
	}
}

// pods lists the pods of ns matching selector (empty: all).
func (c *cluster) pods(t *testing.T, ns, selector string) []corev1.Pod {
	t.Helper()
	args := []string{"-n", ns, "get", "pods", "-o", "json"}
	if selector != "" {
		args = append(args, "-l", selector)
	}
	var list corev1.PodList
	if err := json.Unmarshal([]byte(c.mustRun(t, nil, args...)), &list); err != nil {
		t.Fatalf("decoding pods of %s: %v", ns, err)
	}
	return list.Items
}

// metrics scrapes a pod's port through the API server's pod proxy, the way
// trellis check does: no port-forward, no route to pod IPs needed.
func (c *cluster) metrics(ctx context.Context, ns, pod string, port int) (harness.Metrics, error) {
	out, err := c.run(ctx, nil, "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:%d/proxy/metrics", ns, pod, port))
	if err != nil {
		return nil, err
	}
	return harness.ParseMetrics(strings.NewReader(out))
}

// eventually polls f every second until it returns nil or the timeout,
// then fails with f's last error.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		case <-time.After(time.Second):
		}
	}
}

// checkReport is trellis check -o json (docs/check.md).
type checkReport struct {
	Success bool `json:"success"`
	Summary struct {
		OK, Warn, Fail, Skip int
	} `json:"summary"`
	Checks []struct {
		Group   string `json:"group"`
		Name    string `json:"name"`
		Status  string `json:"status"`
		Message string `json:"message"`
		Hint    string `json:"hint"`
	} `json:"checks"`
}

// check runs trellis check -o json, logs the report and returns it; a
// non-zero exit must come with success=false.
func (c *cluster) check(t *testing.T, args ...string) checkReport {
	t.Helper()
	out, err := c.trellis(t.Context(), nil, append([]string{"check", "-o", "json"}, args...)...)
	t.Logf("trellis check -o json %s:\n%s", strings.Join(args, " "), out)
	var r checkReport
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		t.Fatalf("trellis check -o json: %v; output is not the JSON report: %v", err, jerr)
	}
	if (err != nil) == r.Success {
		t.Errorf("trellis check exit status (%v) disagrees with success=%v", err, r.Success)
	}
	return r
}

// loadResult is the JSON line trellis-demo-app --role loadgen prints when
// its run ends (demoapp/loadgen.Result).
type loadResult struct {
	Sent      uint64 `json:"sent"`
	OK        uint64 `json:"ok"`
	Failed    uint64 `json:"failed"`
	Cancelled uint64 `json:"cancelled"`
	Dropped   uint64 `json:"dropped"`
	// Statuses counts responses by HTTP status code; "error": no response.
	Statuses map[string]uint64 `json:"statuses"`
	// Latencies from each request's intended send time.
	MeanLatencyMS float64 `json:"mean_latency_ms"`
	MaxLatencyMS  float64 `json:"max_latency_ms"`
	P50LatencyMS  float64 `json:"p50_latency_ms"`
	P99LatencyMS  float64 `json:"p99_latency_ms"`
	ElapsedS      float64 `json:"elapsed_s"`
}

// jobLoadResult waits for a loadgen Job to complete and decodes the
// result line from its app container's log.
func (c *cluster) jobLoadResult(t *testing.T, ns, job string, timeout time.Duration) loadResult {
	t.Helper()
	if _, err := c.run(t.Context(), nil, "-n", ns, "wait", "--for=condition=complete", "job/"+job, "--timeout="+strconv.Itoa(int(timeout.Seconds()))+"s"); err != nil {
		desc, _ := c.run(t.Context(), nil, "-n", ns, "describe", "job/"+job)
		logs, _ := c.run(t.Context(), nil, "-n", ns, "logs", "job/"+job, "--all-containers")
		t.Fatalf("job %s did not complete: %v\n%s\n%s", job, err, desc, logs)
	}
	logs := c.mustRun(t, nil, "-n", ns, "logs", "job/"+job, "-c", "app")
	var res loadResult
	found := false
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), &res); err == nil {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("job %s: no result line in its log:\n%s", job, logs)
	}
	return res
}

// proxyContainer returns the pod's trellis-proxy container and whether it
// is a native sidecar (an init container with restartPolicy Always).
func proxyContainer(p corev1.Pod) (c *corev1.Container, native bool) {
	for i := range p.Spec.InitContainers {
		ic := &p.Spec.InitContainers[i]
		if ic.Name == "trellis-proxy" {
			return ic, ic.RestartPolicy != nil && *ic.RestartPolicy == corev1.ContainerRestartPolicyAlways
		}
	}
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == "trellis-proxy" {
			return &p.Spec.Containers[i], false
		}
	}
	return nil, false
}

// proxyState says why the pod lacks the proxy's state volume (its trust
// anchors cache, docs/injection.md): an in-memory emptyDir mounted
// read-write into trellis-proxy alone, named by the proxy's environment.
func proxyState(p corev1.Pod) error {
	const vol, mount = "trellis-proxy-state", "/var/run/trellis/state"
	found := false
	for _, v := range p.Spec.Volumes {
		if v.Name == vol {
			if v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
				return fmt.Errorf("volume %s is not an in-memory emptyDir: %+v", vol, v.VolumeSource)
			}
			found = true
		}
	}
	if !found {
		return fmt.Errorf("no %s volume", vol)
	}
	var errs []error
	for _, ctr := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		mounted, rw, cache := false, false, ""
		for _, m := range ctr.VolumeMounts {
			if m.Name == vol {
				mounted, rw = true, m.MountPath == mount && !m.ReadOnly
			}
		}
		for _, e := range ctr.Env {
			if e.Name == "TRELLIS_PROXY_TRUST_ANCHORS_CACHE" {
				cache = e.Value
			}
		}
		switch {
		case ctr.Name == "trellis-proxy" && (!rw || !strings.HasPrefix(cache, mount+"/")):
			errs = append(errs, fmt.Errorf("trellis-proxy: %s mounted read-write at %s: %v, cache %q", vol, mount, rw, cache))
		case ctr.Name != "trellis-proxy" && mounted:
			errs = append(errs, fmt.Errorf("container %s mounts %s", ctr.Name, vol))
		}
	}
	return errors.Join(errs...)
}

// meshed says why a running pod is not meshed as the injector promises
// (docs/injection.md), or nil.
func meshed(p corev1.Pod, version string) error {
	proxy, native := proxyContainer(p)
	var errs []error
	if proxy == nil {
		errs = append(errs, errors.New("no trellis-proxy container"))
	} else if !native {
		errs = append(errs, errors.New("trellis-proxy is not a native sidecar"))
	}
	hasInit := false
	for _, ic := range p.Spec.InitContainers {
		hasInit = hasInit || ic.Name == "trellis-init"
	}
	if !hasInit {
		errs = append(errs, errors.New("no trellis-init container"))
	}
	if err := proxyState(p); err != nil {
		errs = append(errs, err)
	}
	if p.Labels["trellis.io/proxied"] != "true" {
		errs = append(errs, errors.New("no trellis.io/proxied=true label"))
	}
	if v := p.Annotations["trellis.io/proxy-version"]; v != version {
		errs = append(errs, fmt.Errorf("trellis.io/proxy-version %q, want %q", v, version))
	}
	ready := false
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name == "trellis-proxy" {
			ready = s.Ready
		}
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == "trellis-proxy" {
			ready = s.Ready
		}
	}
	if !ready {
		errs = append(errs, errors.New("trellis-proxy not ready"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pod %s: %w", p.Name, err)
	}
	return nil
}

// controllerPod is the name of a running controller pod.
func (c *cluster) controllerPod(t *testing.T) string {
	t.Helper()
	for _, p := range c.pods(t, "trellis-system", "") {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && strings.HasPrefix(p.Name, "trellis-controller-") {
			return p.Name
		}
	}
	t.Fatal("no running controller pod")
	return ""
}
