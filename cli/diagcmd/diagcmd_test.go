package diagcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/cli/check"
	"github.com/trellis-mesh/trellis/cli/checkcmd"
	"github.com/trellis-mesh/trellis/controller/admin"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/destination"
)

func TestAuthority(t *testing.T) {
	for _, tc := range []struct{ arg, want, err string }{
		{"books", "books.demo.svc.cluster.local:80", ""},
		{"books:8080", "books.demo.svc.cluster.local:8080", ""},
		{"books.other.svc.cluster.local:9", "books.other.svc.cluster.local:9", ""},
		{"books.other:9", "books.other:9", ""},
		{"", "", "want SERVICE[:PORT]"},
		{"a/b:80", "", "want SERVICE[:PORT]"},
	} {
		got, err := Authority(tc.arg, "demo", "cluster.local")
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Authority(%q) = %q, %v; want %q, %q", tc.arg, got, err, tc.want, tc.err)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trellis_requests_total", Help: "requests"}, []string{"direction"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "trellis_response_latency_seconds", Help: "latency", Buckets: []float64{0.1, 1}})
	reg.MustRegister(c, h)
	c.WithLabelValues("inbound").Add(7)
	h.Observe(0.5)
	raw := gatherText(t, reg)
	fams, err := parseMetrics(raw)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range fams {
		for _, s := range f.Samples {
			got[s.Name+fmt.Sprint(s.Labels)] = s.Value
		}
	}
	for k, v := range map[string]string{
		"trellis_requests_total" + fmt.Sprint(map[string]string{"direction": "inbound"}):        "7",
		"trellis_response_latency_seconds_bucket" + fmt.Sprint(map[string]string{"le": "0.1"}):  "0",
		"trellis_response_latency_seconds_bucket" + fmt.Sprint(map[string]string{"le": "+Inf"}): "1",
		"trellis_response_latency_seconds_sum" + fmt.Sprint(map[string]string{}):                "0.5",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if _, err := parseMetrics([]byte("not metrics {{{\n")); err == nil {
		t.Error("garbage parsed")
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add([]byte("# TYPE a counter\na{b=\"c\"} 1\n"))
	f.Add([]byte("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum NaN\nh_count 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fams, err := parseMetrics(b)
		if err == nil {
			if _, err := json.Marshal(fams); err != nil {
				t.Fatalf("parsed metrics do not marshal: %v", err)
			}
		}
	})
}

func gatherText(t *testing.T, reg *prometheus.Registry) []byte {
	t.Helper()
	srv := httptest.NewServer(admin.New(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// books answers books.demo.svc.cluster.local:8080 with one meshed endpoint.
type books struct{}

func (books) Resolve(a authority.Authority, _ string) (destination.Resolution, <-chan struct{}, func()) {
	if a.String() != "books.demo.svc.cluster.local:8080" {
		return destination.Resolution{}, make(chan struct{}), func() {}
	}
	return destination.Resolution{Endpoints: destination.Endpoints{Exists: true, Addrs: map[string]*apiv1.WeightedAddr{
		"10.1.0.5:4143": {Addr: &apiv1.TcpAddress{Ip: "10.1.0.5", Port: 4143}, Zone: "zone-a", TargetPort: 8080,
			TlsIdentity: &apiv1.TlsIdentity{SpiffeId: "spiffe://cluster.local/ns/demo/sa/books"}},
	}}}, make(chan struct{}), func() {}
}

// cluster is a controller Deployment with two replicas whose admin ports
// are real controller admin handlers (the pod proxy replaced by a direct
// GET); the second replica's is down when down is set.
func cluster(t *testing.T, down bool) checkcmd.EnvFunc {
	reg := prometheus.NewRegistry()
	streams := prometheus.NewGauge(prometheus.GaugeOpts{Name: "trellis_controller_destination_streams", Help: "open streams"})
	reg.MustRegister(streams)
	streams.Set(3)
	h := admin.New(reg)
	if err := h.ServeDestination(reg, books{}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	labels := map[string]string{"app": "trellis-controller"}
	objs := []runtime.Object{&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: check.ControllerName, Namespace: "trellis-system"},
		Spec:       appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}},
	}}
	for _, n := range []string{"trellis-controller-a", "trellis-controller-b"} {
		objs = append(objs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: "trellis-system", Labels: labels},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}})
	}
	return func(string, string) (*check.Env, error) {
		return &check.Env{Kube: fake.NewClientset(objs...), Scrape: func(ctx context.Context, ns, pod string, port int, path string) ([]byte, error) {
			if port != check.ControllerAdminPort || ns != "trellis-system" {
				return nil, fmt.Errorf("scraped %s/%s:%d", ns, pod, port)
			}
			if down && pod == "trellis-controller-b" {
				return nil, errors.New("connection refused")
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/"+path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				return nil, fmt.Errorf("%s: %s", resp.Status, b)
			}
			return b, nil
		}}, nil
	}
}

func run(t *testing.T, build checkcmd.EnvFunc, args ...string) (string, error) {
	t.Helper()
	cmd := newCommand(build)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestEndpointsEveryReplica(t *testing.T) {
	out, err := run(t, cluster(t, false), "endpoints", "books:8080", "-n", "demo")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"controller trellis-system/trellis-controller-a: books.demo.svc.cluster.local:8080 (1 endpoints)",
		"controller trellis-system/trellis-controller-b:", "10.1.0.5:4143", "spiffe://cluster.local/ns/demo/sa/books", "zone-a", "8080"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = run(t, cluster(t, true), "endpoints", "nothing:1", "-n", "demo", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var reps []ReplicaEndpoints
	if err := json.Unmarshal([]byte(out), &reps); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(reps) != 2 || reps[0].Answer == nil || reps[0].Answer.Exists || reps[1].Error == "" {
		t.Fatalf("want replica a saying nothing exists and b unreadable, got %s", out)
	}
}

func TestControllerMetrics(t *testing.T) {
	out, err := run(t, cluster(t, true), "controller-metrics", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ms []Metrics
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || len(ms[0].Families) == 0 || !strings.Contains(ms[1].Error, "connection refused") {
		t.Fatalf("want a's families and b's error, got %s", out)
	}
	var streams *Family
	for i, f := range ms[0].Families {
		if f.Name == "trellis_controller_destination_streams" {
			streams = &ms[0].Families[i]
		}
	}
	if streams == nil || streams.Type != "gauge" || streams.Samples[0].Value != "3" {
		t.Errorf("trellis_controller_destination_streams: %+v, want a gauge at 3", streams)
	}
	if _, err := run(t, cluster(t, false), "controller-metrics", "--controller-admin", "127.0.0.1:1", "--context", "x"); !errors.Is(err, errLocalAndCluster) {
		t.Errorf("local and cluster flags together: %v", err)
	}
}

func FuzzAuthority(f *testing.F) {
	f.Add("books:8080", "demo")
	f.Add("[::1]:80", "")
	f.Fuzz(func(t *testing.T, arg, ns string) {
		a, err := Authority(arg, ns, "cluster.local")
		if err != nil {
			return
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			t.Fatalf("Authority(%q) = %q: not host:port: %v", arg, a, err)
		}
	})
}
