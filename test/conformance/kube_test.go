package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kube is the harness's cluster as test/k8se2e sees it (the same
// environment: KUBECONFIG, TRELLIS_BIN, TRELLIS_CLUSTER_DIR), with only
// what this suite needs: kubectl, the trellis CLI and its image tag.
type kube struct {
	kubeconfig string
	kubectl    []string
	bin        string // directory of the trellis binaries
	tag        string // the CLI's version: the tag of the images it installs
}

// cmdTimeout bounds one kubectl or trellis call.
const cmdTimeout = 5 * time.Minute

func findKube(t *testing.T) *kube {
	t.Helper()
	dir := envOr("TRELLIS_CLUSTER_DIR", "/var/tmp/trellis-cluster")
	k := &kube{
		kubeconfig: envOr("KUBECONFIG", filepath.Join(dir, "run", "admin.kubeconfig")),
		bin:        envOr("TRELLIS_BIN", filepath.Join(repoRoot(), "bin")),
	}
	if _, err := os.Stat(k.kubeconfig); err != nil {
		t.Fatalf("kubeconfig: %v (is the cluster up? make cluster-up)", err)
	}
	if v := os.Getenv("TRELLIS_KUBECTL"); v != "" {
		k.kubectl = strings.Fields(v)
	} else if m, _ := filepath.Glob(filepath.Join(dir, "cache", "k8s-*", "k8s-all")); len(m) > 0 {
		k.kubectl = []string{m[0], "kubectl"}
	} else if p, err := exec.LookPath("kubectl"); err == nil {
		k.kubectl = []string{p}
	} else {
		t.Fatal("no kubectl: set TRELLIS_KUBECTL, or build the harness (make cluster-up)")
	}
	k.tag = strings.TrimSpace(k.mustTrellis(t, "version", "--client", "--short"))
	return k
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

// exec runs one program with the kubeconfig in its environment and
// returns stdout; the error carries stderr.
func (k *kube) exec(ctx context.Context, stdin []byte, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+k.kubeconfig, "NO_COLOR=1")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(argv[0]), strings.Join(argv[1:], " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// run is kubectl.
func (k *kube) run(ctx context.Context, stdin []byte, args ...string) (string, error) {
	argv := append(append(append([]string{}, k.kubectl...), "--kubeconfig", k.kubeconfig), args...)
	return k.exec(ctx, stdin, argv...)
}

func (k *kube) mustRun(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, err := k.run(t.Context(), stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (k *kube) mustTrellis(t *testing.T, args ...string) string {
	t.Helper()
	out, err := k.exec(t.Context(), nil, append([]string{filepath.Join(k.bin, "trellis")}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sharedAnnotation is test/k8se2e's mark of its shared default install
// (shared_test.go): the value is the image tag it was made from.
const sharedAnnotation = "e2e.trellis.io/shared-install"

// sharedInstall reuses test/k8se2e's shared default install when it is
// there and whole (make e2e runs this suite after those, keeping it), or
// makes one the same way (`trellis install --crds`, `trellis install`)
// and marks it so. It is removed at the end unless E2E_KEEP_INSTALL=1.
func (k *kube) sharedInstall(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { k.removeShared(t) })
	got, err := k.run(t.Context(), nil, "get", "namespace", "trellis-system",
		"-o", "jsonpath={.metadata.annotations.e2e\\.trellis\\.io/shared-install}")
	if err == nil && got == k.tag {
		if _, err := k.run(t.Context(), nil, "-n", "trellis-system", "rollout", "status",
			"deployment/trellis-controller", "--timeout=2m"); err == nil {
			t.Log("reusing the shared default install")
			return
		}
		t.Log("the shared install is not healthy: installing again")
	}
	if err == nil {
		t.Log("Trellis is installed (not the shared install of this tag): uninstalling it first")
		k.uninstall(t)
	}
	start := time.Now()
	for _, args := range [][]string{{"install", "--crds"}, {"install"}} {
		k.mustRun(t, []byte(k.mustTrellis(t, args...)), "apply", "--server-side", "-f", "-")
	}
	k.mustRun(t, nil, "-n", "trellis-system", "rollout", "status", "deployment/trellis-controller", "--timeout=3m")
	k.mustRun(t, nil, "annotate", "--overwrite", "namespace", "trellis-system", sharedAnnotation+"="+k.tag)
	t.Logf("shared default install made in %s", time.Since(start).Round(time.Second))
}

func (k *kube) removeShared(t *testing.T) {
	if os.Getenv("E2E_KEEP_INSTALL") == "1" {
		return
	}
	k.uninstall(t)
}

func (k *kube) uninstall(t *testing.T) {
	ctx := context.WithoutCancel(t.Context())
	if out, err := k.exec(ctx, nil, filepath.Join(k.bin, "trellis"), "uninstall", "--apply"); err != nil {
		t.Errorf("trellis uninstall --apply: %v\n%s", err, out)
		return
	}
	if _, err := k.run(ctx, nil, "wait", "--for=delete", "namespace/trellis-system", "--timeout=3m"); err != nil && !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("trellis-system still there after uninstall: %v", err)
	}
}

// routeCRDs applies the standard channel's HTTPRoute and GRPCRoute CRDs of
// the Gateway API release this module pins (the product's pin, checked by
// TestGatewayAPIPin), from the module cache, if the cluster lacks them:
// as test/k8se2e's gatewayRouteCRDs does, so both leave the same CRDs.
func (k *kube) routeCRDs(t *testing.T) {
	t.Helper()
	if _, err := k.run(t.Context(), nil, "get", "crd", "httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io"); err == nil {
		return
	}
	dir, err := goList(t.Context(), ".", "{{.Dir}}", "sigs.k8s.io/gateway-api")
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, "config", "crd", "standard")
	for _, f := range []string{"gateway.networking.k8s.io_httproutes.yaml", "gateway.networking.k8s.io_grpcroutes.yaml"} {
		k.mustRun(t, nil, "apply", "--server-side", "-f", filepath.Join(dir, f))
	}
	k.mustRun(t, nil, "wait", "--for=condition=Established", "crd/httproutes.gateway.networking.k8s.io", "crd/grpcroutes.gateway.networking.k8s.io", "--timeout=1m")
}

// goList is `go list -m -f format module` in dir.
func goList(ctx context.Context, dir, format, module string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", format, module)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return "", fmt.Errorf("go list -m %s in %s: %w: %s", module, dir, err, ee.Stderr)
	}
	if err != nil {
		return "", fmt.Errorf("go list -m %s in %s: %w", module, dir, err)
	}
	return strings.TrimSpace(string(out)), nil
}
