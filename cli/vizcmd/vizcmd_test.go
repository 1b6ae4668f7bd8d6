package vizcmd

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/viz/model"
)

func TestParseResource(t *testing.T) {
	for _, c := range []struct {
		args []string
		want model.Resource
		err  bool
	}{
		{args: []string{"deploy"}, want: model.Resource{Kind: "deployments", Namespace: "demo"}},
		{args: []string{"deploy/web"}, want: model.Resource{Kind: "deployments", Namespace: "demo", Name: "web"}},
		{args: []string{"po", "web-1"}, want: model.Resource{Kind: "pods", Namespace: "demo", Name: "web-1"}},
		{args: []string{"ns/demo"}, want: model.Resource{Kind: "namespaces", Name: "demo"}},
		{args: []string{"SVC", "books"}, want: model.Resource{Kind: "services", Namespace: "demo", Name: "books"}},
		{args: []string{"wl/web"}, want: model.Resource{Kind: "workloads", Namespace: "demo", Name: "web"}},
		{args: []string{"deploy/"}, err: true},
		{args: []string{"deploy/web", "x"}, err: true},
		{args: []string{"cronjob"}, err: true},
		{args: nil, err: true},
	} {
		got, err := ParseResource(c.args, "demo")
		if (err != nil) != c.err || (err == nil && got != c.want) {
			t.Errorf("ParseResource(%q) = %+v, %v", c.args, got, err)
		}
	}
	if _, err := ParseRef("to", "web", "demo"); err == nil {
		t.Error("--to without a kind accepted")
	}
}

func TestResourceOfPod(t *testing.T) {
	yes := true
	pod := func(kind, owner, hash string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "demo", Labels: map[string]string{}}}
		if owner != "" {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: owner, Controller: &yes}}
		}
		if hash != "" {
			p.Labels["pod-template-hash"] = hash
		}
		return p
	}
	for _, c := range []struct {
		pod  *corev1.Pod
		kind string
		want string // name, "" = not part of one
	}{
		{pod("ReplicaSet", "web-5d8f7c9b4", "5d8f7c9b4"), "deployments", "web"},
		{pod("ReplicaSet", "web-5d8f7c9b4", "5d8f7c9b4"), "replicasets", ""},
		{pod("ReplicaSet", "bare-rs", ""), "replicasets", "bare-rs"},
		{pod("StatefulSet", "db", ""), "statefulsets", "db"},
		{pod("StatefulSet", "db", ""), "deployments", ""},
		{pod("", "", ""), "deployments", ""},
		{pod("", "", ""), "pods", "p"},
		{pod("", "", ""), "namespaces", "demo"},
	} {
		r, ok := resourceOfPod(c.pod, c.kind)
		if ok != (c.want != "") || (ok && r.Name != c.want) {
			t.Errorf("%s of pod owned by %v: %+v %v, want %q", c.kind, c.pod.OwnerReferences, r, ok, c.want)
		}
	}
}
