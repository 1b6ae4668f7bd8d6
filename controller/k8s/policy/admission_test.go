package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
	"github.com/trellis-mesh/trellis/install"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// TestDefaultInboundPolicyAdmission applies the chart's
// ValidatingAdmissionPolicy (as trellis install renders it) to a real
// kube-apiserver: a namespace whose default inbound policy is not one of
// the five values is refused with the allowed values named; the five are
// admitted.
func TestDefaultInboundPolicyAdmission(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", apiservertest.Kubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	kc := kubernetes.NewForConfigOrDie(cfg)
	dc := dynamic.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id, err := install.GenerateIdentity("cluster.local", install.DefaultAnchorValidity, install.DefaultIssuerValidity, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	wh, err := install.GenerateWebhookTLS(install.Namespace, install.DefaultWebhookValidity, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m, err := install.Render(install.Options{Version: "dev", Identity: id, Webhook: wh})
	if err != nil {
		t.Fatal(err)
	}
	applied := 0
	for _, o := range m.Objects {
		if !strings.HasPrefix(o.Kind.Kind, "ValidatingAdmissionPolicy") {
			continue
		}
		var u unstructured.Unstructured
		if err := yaml.Unmarshal(o.YAML, &u.Object); err != nil {
			t.Fatal(err)
		}
		body, _ := u.MarshalJSON()
		if _, err := dc.Resource(o.Kind.GVR()).Patch(ctx, o.Name, types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "policy-test", Force: new(true)}); err != nil {
			t.Fatalf("apply %s: %v", o.Ref(), err)
		}
		applied++
	}
	if applied != 2 {
		t.Fatalf("the chart rendered %d admission policy objects, want the policy and its binding", applied)
	}
	create := func(name, value string) error {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{k8slabels.AnnotationDefaultInboundPolicy: value}}}
		_, err := kc.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
		return err
	}
	// The policy takes effect once the API server has loaded it: retry the
	// refused case until it is refused.
	// (Namespaces never finish deleting without a controller manager, so
	// each try has its own name.)
	start := time.Now()
	for try := 0; ; try++ {
		err := create(fmt.Sprintf("bad-default-%d", try), "yes")
		if err != nil {
			if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
				t.Fatalf("refused for another reason: %v", err)
			}
			msg := err.Error()
			for _, want := range append(k8slabels.DefaultInboundPolicies(), "config.trellis.io/default-inbound-policy: yes") {
				if !strings.Contains(msg, want) {
					t.Errorf("refusal %q does not name %q", msg, want)
				}
			}
			t.Logf("refused after %v: %s", time.Since(start).Round(time.Millisecond), msg)
			break
		}
		if ctx.Err() != nil {
			t.Fatal("a namespace with default-inbound-policy: yes is still admitted")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, v := range k8slabels.DefaultInboundPolicies() {
		if err := create("ok-"+v, v); err != nil {
			t.Errorf("%s refused: %v", v, err)
		}
	}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "no-annotation"}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("a namespace without the annotation refused: %v", err)
	}
}
