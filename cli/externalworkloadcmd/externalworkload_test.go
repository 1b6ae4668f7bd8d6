package externalworkloadcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kfake "k8s.io/client-go/kubernetes/fake"

	wlfake "github.com/trellis-mesh/trellis/api/workload/client/clientset/versioned/fake"
	wlv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
	"github.com/trellis-mesh/trellis/internal/ewtoken/ewsecret"
)

func legacy() *wlv1.ExternalWorkload {
	return &wlv1.ExternalWorkload{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "shop"},
		Spec:       wlv1.ExternalWorkloadSpec{ServiceAccount: "legacy-sa", Addresses: []wlv1.WorkloadAddress{{IP: "172.31.254.2"}}},
	}
}

// controller is the controller's Deployment with a trust domain, which
// list reads.
func controller(td string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "trellis-controller", Namespace: "trellis-system"},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "controller", Args: []string{"kubernetes", "--trust-domain=" + td}},
		}}}},
	}
}

func run(t *testing.T, c Clients, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newCommand(func(string, string) (Clients, error) { return c, nil })
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestToken(t *testing.T) {
	c := Clients{Kube: kfake.NewClientset(), Workloads: wlfake.NewSimpleClientset(legacy())}
	stdout, stderr, err := run(t, c, "token", "legacy", "-n", "shop")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ewtoken.ParseBootstrap([]byte(strings.TrimSuffix(stdout, "\n")))
	if err != nil || b.Namespace != "shop" || b.Name != "legacy" {
		t.Fatalf("stdout %q: %v", stdout, err)
	}
	if strings.Contains(stderr, b.Token()) || !strings.Contains(stderr, "shop/legacy") {
		t.Errorf("stderr %q: want a note naming the workload, without the token", stderr)
	}
	s, err := c.Kube.CoreV1().Secrets("trellis-system").Get(context.Background(), ewsecret.Name(b.Hash()), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := ewsecret.Read(s)
	if err != nil || rec.Hash != b.Hash() {
		t.Errorf("stored record %+v, %v", rec, err)
	}
	if d := time.Until(rec.Expiry); d > time.Hour || d < 59*time.Minute {
		t.Errorf("expires in %s, want the default hour", d)
	}

	stdout, _, err = run(t, c, "token", "legacy", "-n", "shop", "--ttl", "8h", "--control-plane-namespace", "mesh", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var doc tokenDoc
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || doc.Namespace != "shop" || doc.Name != "legacy" || time.Until(doc.Expiry) < 7*time.Hour {
		t.Errorf("json %q: %+v, %v", stdout, doc, err)
	}
	if list, _ := c.Kube.CoreV1().Secrets("mesh").List(context.Background(), metav1.ListOptions{}); len(list.Items) != 1 {
		t.Errorf("%d Secrets in --control-plane-namespace, want 1", len(list.Items))
	}
}

func TestTokenRefusals(t *testing.T) {
	for _, args := range [][]string{
		{"token", "missing", "-n", "shop"},
		{"token", "legacy", "-n", "shop", "--ttl", "25h"},
		{"token", "legacy", "-n", "shop", "--ttl", "0s"},
		{"token", "legacy"},
		{"token", "Legacy", "-n", "shop"},
	} {
		c := Clients{Kube: kfake.NewClientset(), Workloads: wlfake.NewSimpleClientset(legacy())}
		stdout, _, err := run(t, c, args...)
		if err == nil || stdout != "" {
			t.Errorf("%v: err %v, stdout %q; want a refusal and nothing printed", args, err, stdout)
		}
		if list, _ := c.Kube.CoreV1().Secrets("trellis-system").List(context.Background(), metav1.ListOptions{}); len(list.Items) != 0 {
			t.Errorf("%v: a Secret was created", args)
		}
	}
}

func TestList(t *testing.T) {
	certified := legacy()
	exp := metav1.NewTime(time.Now().Add(2 * time.Hour).Truncate(time.Second))
	certified.Status = wlv1.ExternalWorkloadStatus{
		KeySHA256: strings.Repeat("ab", 32), CertificateExpiry: &exp,
		Conditions: []metav1.Condition{{Type: wlv1.ConditionCertified, Status: metav1.ConditionTrue, Reason: wlv1.ReasonCertified}},
	}
	waiting := &wlv1.ExternalWorkload{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "data"},
		Spec:       wlv1.ExternalWorkloadSpec{ServiceAccount: "db", Addresses: []wlv1.WorkloadAddress{{IP: "10.0.0.9"}, {IP: "fd00::9"}}},
	}
	c := Clients{Kube: kfake.NewClientset(controller("east.local")), Workloads: wlfake.NewSimpleClientset(certified, waiting)}
	stdout, _, err := run(t, c, "list", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"spiffe://east.local/ns/shop/sa/legacy-sa", "True", "172.31.254.2", "10.0.0.9,fd00::9", "Unknown", strings.Repeat("ab", 32), "left)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("list -o wide lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Index(stdout, "data") > strings.Index(stdout, "shop") {
		t.Errorf("not sorted by namespace:\n%s", stdout)
	}
	stdout, _, err = run(t, c, "list", "-n", "shop", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var doc listDoc
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || len(doc.Workloads) != 1 || doc.Workloads[0].Certified != "True" || doc.TrustDomain != "east.local" {
		t.Errorf("json %q: %+v, %v", stdout, doc, err)
	}

	// Without a controller: the default trust domain, with a warning.
	c.Kube = kfake.NewClientset()
	stdout, stderr, err := run(t, c, "list")
	if err != nil || !strings.Contains(stdout, "spiffe://cluster.local/") || !strings.Contains(stderr, "warning") {
		t.Errorf("no controller: %q, %q, %v", stdout, stderr, err)
	}
}
