package install

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	apiservertest.Stop() // the API server TestHelmKeepsInstalledIdentity may have started
	os.Exit(code)
}

// TestHelmKeepsInstalledIdentity applies an install to a real API server,
// then renders the chart with `helm template --dry-run=server` (lookup
// reads the cluster) from values holding ANOTHER identity and webhook
// certificate, and requires the installed ones, byte for byte.
func TestHelmKeepsInstalledIdentity(t *testing.T) {
	helm := helmBinary(t)
	path := apiservertest.Kubeconfig(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	dc := dynamic.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if ex, err := DetectExisting(ctx, cs); err != nil || ex != nil {
		t.Skipf("the API server already holds a Trellis install (%v): this test installs its own", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if found, err := FindInstalled(ctx, dc); err == nil {
			_ = Delete(ctx, dc, found)
		}
	})
	id, wh := testMaterial(t)
	m, err := Render(Options{Version: "dev", Identity: id, Webhook: wh})
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(ctx, dc, m); err != nil {
		t.Fatal(err)
	}

	otherID, otherWH := testMaterial(t)
	values, err := yaml.Marshal(map[string]any(MaterialValues(otherID, otherWH)))
	if err != nil {
		t.Fatal(err)
	}
	valuesFile := filepath.Join(t.TempDir(), "other.yaml")
	if err := os.WriteFile(valuesFile, values, 0o600); err != nil {
		t.Fatal(err)
	}
	chartDir := filepath.Join("..", "charts", "trellis")
	args := []string{"template", "trellis", chartDir, "--namespace", Namespace, "--kube-version", "1.36.3",
		"--dry-run=server", "--kubeconfig", path, "-f", filepath.Join(chartDir, "values-ha.yaml"), "-f", valuesFile}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %v: %v\n%s", args, err, stderr.String())
	}
	got, err := ParseDocuments(stdout.Bytes(), "helm template")
	if err != nil {
		t.Fatal(err)
	}
	sec, err := cs.CoreV1().Secrets(Namespace).Get(ctx, IssuerSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wsec, err := cs.CoreV1().Secrets(Namespace).Get(ctx, WebhookSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, o := range got {
		switch {
		case o.Kind.Kind == "Secret" && o.Name == IssuerSecretName:
			requireData(t, o, sec.Data)
		case o.Kind.Kind == "Secret" && o.Name == WebhookSecretName:
			requireData(t, o, wsec.Data)
		case o.Kind.Kind == "ConfigMap" && o.Name == TrustAnchorsName:
			data, _ := o.Content["data"].(map[string]any)
			if data[TrustAnchorsKey] != string(id.TrustAnchorsPEM) {
				t.Error("helm template replaced the installed trust anchors")
			}
		case o.Kind.Kind == "MutatingWebhookConfiguration":
			hooks, _ := o.Content["webhooks"].([]any)
			h, _ := hooks[0].(map[string]any)
			cc, _ := h["clientConfig"].(map[string]any)
			if cc["caBundle"] != b64(wh.CAPEM) {
				t.Error("helm template replaced the webhook caBundle")
			}
		default:
			continue
		}
		checked++
	}
	if checked != 4 {
		t.Fatalf("checked %d of the 4 identity objects", checked)
	}
	t.Logf("helm template --dry-run=server kept the installed anchors, issuer and webhook certificate")
}

func requireData(t *testing.T, o Object, want map[string][]byte) {
	t.Helper()
	data, _ := o.Content["data"].(map[string]any)
	if len(data) != len(want) {
		t.Errorf("%s: %d keys, the cluster's has %d", o.Ref(), len(data), len(want))
	}
	for k, v := range want {
		if data[k] != b64(v) {
			t.Errorf("%s: %s is not the installed one", o.Ref(), k)
		}
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
