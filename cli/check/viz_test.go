package check

import (
	"context"
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/trellis-mesh/trellis/install/vizk8s"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

func TestVizCheck(t *testing.T) {
	ready := []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	prom := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-1", Namespace: vizk8s.Namespace,
			Labels: map[string]string{"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/part-of": "trellis"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: ready},
	}
	deploy := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "prometheus", Namespace: vizk8s.Namespace}}
	meshed := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS, Labels: map[string]string{k8slabels.LabelProxied: "true"}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	}
	targets := func(health ...string) string {
		var ts []string
		for _, h := range health {
			ts = append(ts, `{"labels":{"job":"trellis-proxy"},"health":"`+h+`"}`)
		}
		ts = append(ts, `{"labels":{"job":"trellis-controller"},"health":"up"}`)
		return `{"status":"success","data":{"activeTargets":[` + strings.Join(ts, ",") + `]}}`
	}
	for _, c := range []struct {
		name    string
		objs    []runtime.Object
		answer  string
		scrapeE error
		want    Status
		substr  string
	}{
		{name: "not installed", objs: []runtime.Object{meshed("a")}, want: OK, substr: "not installed"},
		{name: "every proxy scraped", objs: []runtime.Object{deploy, prom, meshed("a"), meshed("b")}, answer: targets("up", "up"), want: OK, substr: "scraping 2 proxies for 2"},
		{name: "one down", objs: []runtime.Object{deploy, prom, meshed("a"), meshed("b")}, answer: targets("up", "down"), want: Warn, substr: "1 proxies scraped (up), 1 down, for 2"},
		{name: "no ready pod", objs: []runtime.Object{deploy, meshed("a")}, want: Fail, substr: "no ready Prometheus pod"},
		{name: "targets unreadable", objs: []runtime.Object{deploy, prom}, scrapeE: errors.New("503"), want: Fail, substr: "503"},
		{name: "not an API answer", objs: []runtime.Object{deploy, prom}, answer: "<html>", want: Fail, substr: "not a Prometheus API answer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := &Env{Kube: fake.NewClientset(c.objs...), Scrape: func(_ context.Context, ns, pod string, port int, path string) ([]byte, error) {
				if ns != vizk8s.Namespace || pod != "prometheus-1" || port != vizk8s.ServicePort || path != "api/v1/targets" {
					t.Errorf("scrape %s/%s:%d/%s", ns, pod, port, path)
				}
				return []byte(c.answer), c.scrapeE
			}}
			out := VizCheck.Run(context.Background(), e)
			if out.Status != c.want || !strings.Contains(out.Message, c.substr) || (out.Status != OK && out.Hint == "") {
				t.Errorf("got %s %q (hint %q), want %s containing %q", out.Status, out.Message, out.Hint, c.want, c.substr)
			}
		})
	}
}
