package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/version"
)

func TestMain(m *testing.M) {
	code := m.Run()
	apiservertest.Stop()
	os.Exit(code)
}

// TestVersionReadsTheControlPlane: against a real API server holding a
// controller Deployment, `trellis version -o json` reports its image tag;
// without an installation it says why and still prints the client.
func TestVersionReadsTheControlPlane(t *testing.T) {
	kubeconfig := apiservertest.Kubeconfig(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	ns := k8slabels.ControlPlaneNamespace
	_, _ = kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	_ = kube.AppsV1().Deployments(ns).Delete(ctx, "trellis-controller", metav1.DeleteOptions{})

	var doc versionDoc
	out, err := run(t, "version", "-o", "json", "--kubeconfig", kubeconfig)
	if err != nil || json.Unmarshal([]byte(out), &doc) != nil {
		t.Fatalf("version -o json = %q, %v", out, err)
	}
	if doc.ControlPlane != nil || !strings.Contains(doc.ControlPlaneError, "not found") || doc.Client.Version != version.Version {
		t.Errorf("no installation: %+v", doc)
	}

	two := int32(2)
	labels := map[string]string{"app": "trellis-controller"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "trellis-controller", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &two,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "trellis-controller", Image: "registry.local:5000/trellis/controller:v9.8.7"}}},
			},
		},
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.AppsV1().Deployments(ns).Delete(ctx, dep.Name, metav1.DeleteOptions{}) })
	out, err = run(t, "version", "-o", "yaml", "--kubeconfig", kubeconfig)
	if err != nil || !strings.Contains(out, "version: v9.8.7") || !strings.Contains(out, "replicas: 2") {
		t.Errorf("version -o yaml = %q, %v", out, err)
	}
	out, err = run(t, "version", "--short", "--kubeconfig", kubeconfig)
	if err != nil || out != "Client: "+version.Version+"\nControl plane: v9.8.7\n" {
		t.Errorf("version --short = %q, %v", out, err)
	}
}

// TestJSONErrorOnStdout: a command that fails under -o json or yaml
// prints an error document on stdout, naming the command and the culprit.
func TestJSONErrorOnStdout(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	for _, tt := range []struct {
		args    []string
		command string
	}{
		{[]string{"check", "-o", "json", "--kubeconfig", missing}, "trellis check"},
		{[]string{"demo", "-o", "json", "--fail", "nosuch=" + missing}, "trellis demo"},
		{[]string{"identity", "verify", "--issuer", missing, "-o", "json"}, "trellis identity verify"},
		{[]string{"identity", "rotate", "--state-dir", missing, "--status", "-o", "yaml"}, "trellis identity rotate"},
		{[]string{"policy", "validate", "-f", missing, "-o", "yaml"}, "trellis policy validate"},
	} {
		root := NewRootCommand()
		root.SetArgs(tt.args)
		root.SetOut(new(bytes.Buffer))
		root.SetErr(new(bytes.Buffer))
		cmd, err := root.ExecuteC()
		if err == nil {
			t.Errorf("%v succeeded", tt.args)
			continue
		}
		var stdout, stderr bytes.Buffer
		output.ReportError(cmd, err, &stdout, &stderr)
		var doc output.ErrorDoc
		if err := yaml.UnmarshalStrict(stdout.Bytes(), &doc); err != nil { // JSON is YAML
			t.Errorf("%v: stdout %q: %v", tt.args, stdout.String(), err)
			continue
		}
		if doc.Error.Command != tt.command || !strings.Contains(doc.Error.Message, missing) {
			t.Errorf("%v: error doc = %+v", tt.args, doc)
		}
	}
}
