package check

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/mclink"
)

// linkMetrics is a controller's /metrics as the mirror writes it for one
// link synced at lastSync (zero: never), with some unrelated series.
func linkMetrics(link string, lastSync time.Time, services, endpoints, watchErrors int) string {
	var b strings.Builder
	b.WriteString("# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 42\n")
	if !lastSync.IsZero() {
		fmt.Fprintf(&b, "# TYPE %s gauge\n%s{link=%q} %g\n", LinkLastSyncMetric, LinkLastSyncMetric, link, float64(lastSync.UnixNano())/1e9)
	}
	fmt.Fprintf(&b, "# TYPE %s gauge\n%s{link=%q} %d\n", MirroredServicesMetric, MirroredServicesMetric, link, services)
	fmt.Fprintf(&b, "# TYPE %s gauge\n%s{link=%q} %d\n", MirroredEndpointsMetric, MirroredEndpointsMetric, link, endpoints)
	fmt.Fprintf(&b, "# TYPE %s counter\n%s{link=%q} %d\n", LinkWatchErrorsMetric, LinkWatchErrorsMetric, link, watchErrors)
	fmt.Fprintf(&b, "# TYPE %s counter\n%s{link=%q} 0\n", LinkSyncErrorsMetric, LinkSyncErrorsMetric, link)
	fmt.Fprintf(&b, "# TYPE %s gauge\n%s{link=%q,namespace=\"shop\",service=\"books\"} 1\n%s{link=%q,namespace=\"shop\",service=\"web\"} 2\n",
		UnmeshedEndpointsMetric, UnmeshedEndpointsMetric, link, UnmeshedEndpointsMetric, link)
	b.WriteString("# TYPE trellis_multicluster_bad_link_secrets_total counter\ntrellis_multicluster_bad_link_secrets_total 0\n")
	return b.String()
}

// linkSecret is a valid link Secret for cluster, as `trellis multicluster
// link` writes it.
func linkSecret(cluster string) *corev1.Secret {
	l := mclink.Link{Cluster: cluster, TrustDomain: cluster + ".local", ClusterDomain: "cluster.local", Mode: mclink.ModeFlat, Kubeconfig: []byte("apiVersion: v1\nkind: Config\n")}
	return l.Secret(k8slabels.ControlPlaneNamespace)
}

func TestLinksCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		// links are the clusters with a link Secret; change breaks them.
		links     []string
		change    func(secrets []*corev1.Secret)
		noFlag    bool   // the controller runs without --multicluster
		metrics   string // the controller's /metrics ("" unreadable)
		want      Status // "": no result at all
		msg       string
		wantLinks []LinkHealth // Data.Links, checked field by field
	}{
		{name: "no links", metrics: linkMetrics("b", t0, 1, 1, 0)},
		{
			name: "healthy link", links: []string{"b"}, metrics: linkMetrics("b", t0.Add(-3*time.Second), 2, 4, 0),
			want: OK, msg: "b: last sync 3s ago, 2 services, 4 endpoints mirrored (3 unmeshed endpoints)",
			wantLinks: []LinkHealth{{Link: "b", Status: OK, MirroredServices: 2, MirroredEndpoints: 4, UnmeshedEndpoints: 3, LastSyncAgeSeconds: 3}},
		},
		{
			name: "stale link", links: []string{"b"}, metrics: linkMetrics("b", t0.Add(-time.Hour), 2, 4, 7),
			want: Warn, msg: "b: last sync 1h0m0s ago, 2 services, 4 endpoints mirrored (3 unmeshed endpoints, 7 watch errors)",
			wantLinks: []LinkHealth{{Link: "b", Status: Warn, MirroredServices: 2, MirroredEndpoints: 4, UnmeshedEndpoints: 3, WatchErrors: 7, LastSyncAgeSeconds: 3600}},
		},
		{
			name: "an old sync with nothing to mirror is not stale", links: []string{"b"}, metrics: linkMetrics("b", t0.Add(-time.Hour), 0, 0, 0),
			want: OK, msg: "b: last sync 1h0m0s ago, 0 services, 0 endpoints mirrored",
		},
		{
			name: "never synced", links: []string{"b", "c"}, metrics: linkMetrics("b", t0.Add(-time.Second), 1, 1, 0),
			want: Warn, msg: "1 link never synced, or not in 15m0s: b: last sync 1s ago, 1 service, 1 endpoint mirrored (3 unmeshed endpoints); c: never synced, 0 services, 0 endpoints mirrored",
			wantLinks: []LinkHealth{{Link: "b", Status: OK, MirroredServices: 1, MirroredEndpoints: 1, UnmeshedEndpoints: 3, LastSyncAgeSeconds: 1}, {Link: "c", Status: Warn}},
		},
		{
			name: "bad Secret", links: []string{"b"}, metrics: linkMetrics("b", t0, 1, 1, 0),
			change: func(s []*corev1.Secret) { s[0].Data[mclink.KeyMode] = []byte("tunnel") },
			want:   Fail, msg: `mode "tunnel": want "flat" or "gateway"`,
		},
		{
			name: "gateway mode without the gateway's address", links: []string{"b"}, metrics: linkMetrics("b", t0, 1, 1, 0),
			change: func(s []*corev1.Secret) { s[0].Data[mclink.KeyMode] = []byte("gateway") },
			want:   Fail, msg: `want the peer gateway's ip:port`,
		},
		{
			name: "Secret named for another cluster", links: []string{"b"}, metrics: linkMetrics("b", t0, 1, 1, 0),
			change: func(s []*corev1.Secret) { s[0].Name = mclink.SecretName("c") },
			want:   Fail, msg: `names cluster "b"`,
		},
		{
			name: "links without --multicluster", links: []string{"b"}, noFlag: true, metrics: linkMetrics("b", t0, 1, 1, 0),
			want: Fail, msg: "1 link, but the controller runs without --multicluster",
		},
		{
			name: "controller metrics unreadable", links: []string{"b"},
			want: Warn, msg: "1 link, but their health cannot be read: no controller replica's /metrics could be read",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInstalled(newPKI(t, 365*24*time.Hour, 90*24*time.Hour))
			if !tc.noFlag {
				c := &in.deploy.Spec.Template.Spec.Containers[0]
				c.Args = append(c.Args, "--multicluster")
			}
			var secrets []*corev1.Secret
			for _, l := range tc.links {
				secrets = append(secrets, linkSecret(l))
			}
			if tc.change != nil {
				tc.change(secrets)
			}
			for _, s := range secrets {
				in.extra = append(in.extra, s)
			}
			e := healthyCluster().env(t, in.objects()...)
			e.Scrape = func(_ context.Context, ns, pod string, port int, path string) ([]byte, error) {
				if ns != in.ctrlPod.Namespace || pod != in.ctrlPod.Name || port != ControllerAdminPort || path != "metrics" {
					return nil, fmt.Errorf("unexpected scrape of %s/%s:%d/%s", ns, pod, port, path)
				}
				if tc.metrics == "" {
					return nil, fmt.Errorf("pods %q is forbidden", pod)
				}
				return []byte(tc.metrics), nil
			}
			r := judgeOne(t, e, LinksCheck, tc.want, tc.msg)
			if r == nil || tc.wantLinks == nil {
				return
			}
			data, isData := r.Data.(LinksData)
			if !isData {
				t.Fatalf("data %T, want LinksData", r.Data)
			}
			if len(data.Links) != len(tc.wantLinks) {
				t.Fatalf("links %+v, want %+v", data.Links, tc.wantLinks)
			}
			for i, got := range data.Links {
				want := tc.wantLinks[i]
				if got.LastSync == nil != (want.LastSyncAgeSeconds == 0) {
					t.Errorf("%s: last sync %v with age %v", got.Link, got.LastSync, want.LastSyncAgeSeconds)
				}
				got.LastSync = nil
				got.LastSyncAgeSeconds = float64(int(got.LastSyncAgeSeconds + 0.5)) // the text's float
				if got != want {
					t.Errorf("link %d: %+v, want %+v", i, got, want)
				}
			}
		})
	}
}

// TestLinksCheckJSON: -o json carries the figures under data.
func TestLinksCheckJSON(t *testing.T) {
	in := newInstalled(newPKI(t, 365*24*time.Hour, 90*24*time.Hour))
	c := &in.deploy.Spec.Template.Spec.Containers[0]
	c.Args = append(c.Args, "--multicluster=true")
	in.extra = append(in.extra, linkSecret("b"))
	e := healthyCluster().env(t, in.objects()...)
	e.Scrape = func(context.Context, string, string, int, string) ([]byte, error) {
		return []byte(linkMetrics("b", t0.Add(-3*time.Second), 2, 4, 0)), nil
	}
	var buf bytes.Buffer
	if err := WriteJSON(&buf, Run(t.Context(), e, []Check{LinksCheck})); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Checks []struct {
			ID   string `json:"id"`
			Data struct {
				Links []map[string]any `json:"links"`
			} `json:"data"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Checks) != 1 || len(rep.Checks[0].Data.Links) != 1 {
		t.Fatalf("report %s", buf.String())
	}
	l := rep.Checks[0].Data.Links[0]
	for k, want := range map[string]any{"link": "b", "status": "ok", "mirroredServices": 2.0, "mirroredEndpoints": 4.0, "lastSync": "2026-03-01T11:59:57Z", "watchErrors": 0.0} {
		if l[k] != want {
			t.Errorf("%s = %v, want %v", k, l[k], want)
		}
	}
}

func TestBoolFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--multicluster"}, true},
		{[]string{"--multicluster=true"}, true},
		{[]string{"--multicluster=false"}, false},
		{[]string{"--multicluster", "--multicluster=false"}, false},
		{[]string{"--multicluster-x"}, false},
		{[]string{"--trust-domain", "--multicluster"}, true},
	} {
		if got := boolFlag(tc.args, "--multicluster"); got != tc.want {
			t.Errorf("boolFlag(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestLinksCheckReplicas: only the replica that writes status mirrors;
// the gauges come from it, the counters are summed, and an unreadable
// replica warns without hiding the others' figures.
func TestLinksCheckReplicas(t *testing.T) {
	in := newInstalled(newPKI(t, 365*24*time.Hour, 90*24*time.Hour))
	c := &in.deploy.Spec.Template.Spec.Containers[0]
	c.Args = append(c.Args, "--multicluster")
	standby := readyPod(k8slabels.ControlPlaneNamespace, "trellis-controller-7d9f-fghij", in.ctrlPod.Labels)
	down := readyPod(k8slabels.ControlPlaneNamespace, "trellis-controller-7d9f-klmno", in.ctrlPod.Labels)
	in.extra = append(in.extra, linkSecret("b"), standby, down)
	bodies := map[string]string{
		in.ctrlPod.Name: linkMetrics("b", t0.Add(-3*time.Second), 2, 4, 1),
		// A former leader: counters kept, no link gauges.
		standby.Name: fmt.Sprintf("# TYPE %s counter\n%s{link=\"b\"} 2\n", LinkWatchErrorsMetric, LinkWatchErrorsMetric),
	}
	e := healthyCluster().env(t, in.objects()...)
	e.Scrape = func(_ context.Context, _, pod string, _ int, _ string) ([]byte, error) {
		if b, found := bodies[pod]; found {
			return []byte(b), nil
		}
		return nil, fmt.Errorf("connection refused")
	}
	r := runOneCheck(t, e, LinksCheck)
	const msg = "b: last sync 3s ago, 2 services, 4 endpoints mirrored (3 unmeshed endpoints, 3 watch errors); controller replicas unreadable: trellis-controller-7d9f-klmno"
	if r.Status != Warn || r.Message != msg {
		t.Errorf("%s %q, want warn %q", r.Status, r.Message, msg)
	}
	data := r.Data.(LinksData)
	if got := data.UnreadableReplicas[down.Name]; got != "connection refused" {
		t.Errorf("unreadable replicas %v", data.UnreadableReplicas)
	}
}

// judgeOne runs one check and judges its result: none when want is "",
// else one of status want whose message contains msg, with a hint unless
// it is ok. It returns the result (nil for none).
func judgeOne(t *testing.T, e *Env, c Check, want Status, msg string) *Result {
	t.Helper()
	rs := Run(t.Context(), e, []Check{c})
	if want == "" {
		if len(rs) != 0 {
			t.Fatalf("results %+v, want none", rs)
		}
		return nil
	}
	if len(rs) != 1 {
		t.Fatalf("%d results, want 1", len(rs))
	}
	r := rs[0]
	if r.Status != want || !strings.Contains(r.Message, msg) {
		t.Errorf("%s %q, want %s containing %q", r.Status, r.Message, want, msg)
	}
	if r.Status != OK && r.Hint == "" {
		t.Errorf("%s without a hint", r.Status)
	}
	return &r
}
