package dashboardcmd

import (
	"context"
	"strings"
	"testing"
	"time"

	prommodel "github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/trellis-mesh/trellis/viz/dashboard"
	"github.com/trellis-mesh/trellis/viz/model"
)

// answers maps a query's metric name to the vector Prometheus returns.
type answers map[string]prommodel.Vector

func (a answers) Query(_ context.Context, q string) (prommodel.Vector, error) {
	for name, v := range a {
		if strings.Contains(q, name) {
			return v, nil
		}
	}
	return prommodel.Vector{}, nil
}

func pod(name, sa string, proxy bool, owner *metav1.OwnerReference, hash string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo", Labels: map[string]string{}}, Spec: corev1.PodSpec{ServiceAccountName: sa,
		Containers: []corev1.Container{{Name: "app"}}}}
	if hash != "" {
		p.Labels["pod-template-hash"] = hash
	}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	if proxy {
		p.Spec.InitContainers = []corev1.Container{{Name: "trellis-proxy", Env: []corev1.EnvVar{
			{Name: "TRELLIS_PROXY_IDENTITY", Value: "spiffe://example.org/ns/$(TRELLIS_POD_NAMESPACE)/sa/$(TRELLIS_POD_SA)"}}}}
	}
	return p
}

func TestKubeViews(t *testing.T) {
	yes := true
	rs := &metav1.OwnerReference{Kind: "ReplicaSet", Name: "web-5d8f7", Controller: &yes}
	sts := &metav1.OwnerReference{Kind: "StatefulSet", Name: "db", Controller: &yes}
	client := fake.NewClientset(pod("web-5d8f7-abc", "web", true, rs, "5d8f7"), pod("db-0", "", true, sts, ""), pod("plain", "x", false, nil, ""))
	exp := time.Unix(1796400000, 0)
	k := &kubeViews{client: client, prom: answers{
		"trellis_identity_cert_expiry_timestamp_seconds": {{Metric: prommodel.Metric{"namespace": "demo", "pod": "web-5d8f7-abc"}, Value: prommodel.SampleValue(exp.Unix())}},
		"trellis_inbound_authz_deny_total": {
			{Metric: prommodel.Metric{"namespace": "demo", "pod": "web-5d8f7-abc", "server": "web", "reason": "unauthorized", "client_id": "spiffe://example.org/ns/demo/sa/intruder", "tls": "true"}, Value: 3.4},
			{Metric: prommodel.Metric{"namespace": "demo", "pod": "gone-1", "server": "web", "reason": "unauthorized", "tls": "false"}, Value: 1},
		},
	}}
	ids, err := k.Identities(context.Background(), "demo")
	if err != nil || len(ids) != 2 {
		t.Fatalf("identities %+v, %v: want the 2 meshed pods", ids, err)
	}
	byPod := map[string]dashboard.Identity{}
	for _, id := range ids {
		byPod[id.Pod] = id
	}
	web, db := byPod["web-5d8f7-abc"], byPod["db-0"]
	if web.Resource != (model.Resource{Kind: "deployments", Namespace: "demo", Name: "web"}) || web.Identity != "spiffe://example.org/ns/demo/sa/web" || !web.NotAfter.Equal(exp) {
		t.Errorf("web: %+v", web)
	}
	if db.Resource != (model.Resource{Kind: "statefulsets", Namespace: "demo", Name: "db"}) || db.Identity != "spiffe://example.org/ns/demo/sa/default" || !db.NotAfter.IsZero() {
		t.Errorf("db: %+v", db)
	}
	ds, err := k.Decisions(context.Background(), "demo", time.Minute)
	if err != nil || len(ds) != 2 {
		t.Fatalf("decisions %+v, %v", ds, err)
	}
	for _, d := range ds {
		switch d.Resource.Name {
		case "web":
			if d.Count != 3 || d.Decision != "deny" || d.Reason != "unauthorized" || !d.TLS {
				t.Errorf("web decision %+v", d)
			}
		case "gone-1": // a pod that no longer exists shows as itself
			if d.Resource.Kind != "pods" {
				t.Errorf("gone pod %+v", d)
			}
		default:
			t.Errorf("unexpected %+v", d)
		}
	}
	if _, err := (&kubeViews{client: client}).Decisions(context.Background(), "demo", time.Minute); err == nil {
		t.Error("no Prometheus: want an error")
	}
}
