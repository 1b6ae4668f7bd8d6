package k8se2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/cli/kubeconfig"
	"github.com/trellis-mesh/trellis/cli/vizcmd"
	"github.com/trellis-mesh/trellis/install/vizk8s"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/viz/grafana"
	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/prom"
)

// TestViz: `trellis viz install` on the shared install, the demo
// application (`trellis demo --kubernetes`), then `trellis stat deploy -o
// json` agrees within 10 % with what the demo's load generator counted
// itself, `trellis edges` (now from Prometheus) lists every demo edge with
// both identities over mTLS, `trellis routes` has the default route, and
// every PromQL expression of viz/prom runs on the real Prometheus. A GAMMA
// HTTPRoute on books makes web's calls outbound route rows. Logs
// Prometheus's memory with the demo running. (make e2e SUITE=viz)
func TestViz(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-viz"
	c.policyInstall(t) // the shared install and the route CRDs
	c.vizInstall(t)
	c.namespace(t, ns)
	c.waitInjector(t)
	manifest := c.mustTrellis(t, nil, "demo", "--kubernetes", "-n", ns, "--image", c.image("demo-app"), "--rps", "10")
	c.mustRun(t, []byte(manifest), "apply", "--server-side", "-f", "-")
	c.mustRun(t, []byte(fmt.Sprintf(vizBooksRoute, ns)), "apply", "--server-side", "-f", "-")
	c.rollout(t, ns, "authors", "books", "web", "loadgen")
	for _, p := range c.pods(t, ns, "") {
		if p.DeletionTimestamp == nil && p.Labels[k8slabels.LabelServiceAccount] != p.Spec.ServiceAccountName {
			t.Errorf("pod %s: label %s=%q, want its service account %q", p.Name, k8slabels.LabelServiceAccount,
				p.Labels[k8slabels.LabelServiceAccount], p.Spec.ServiceAccountName)
		}
	}

	c.vizStatAgreesWithLoadgen(t, ns)
	c.vizEdges(t, ns)
	c.vizRoutes(t, ns)

	url := c.vizPrometheus(t)
	pc, err := prom.NewClient(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkPromQL(t, pc, vizExpressions(ns))
	checkGrafana(t, url)
	logPrometheusMemory(t)
}

// vizInstall applies `trellis viz install` and waits for Prometheus; the
// test's end removes it with `trellis viz uninstall --apply`.
func (c *cluster) vizInstall(t *testing.T) {
	t.Helper()
	needExtraImages(t)
	start := time.Now()
	c.mustTrellis(t, nil, "viz", "install", "--apply")
	t.Cleanup(func() {
		ctx := context.WithoutCancel(t.Context())
		if out, err := c.trellis(ctx, nil, "viz", "uninstall", "--apply"); err != nil {
			t.Errorf("trellis viz uninstall --apply: %v\n%s", err, out)
		}
		if _, err := c.run(ctx, nil, "wait", "--for=delete", "namespace/"+vizk8s.Namespace, "--timeout=3m"); err != nil {
			t.Errorf("namespace %s still there after viz uninstall: %v", vizk8s.Namespace, err)
		}
	})
	c.mustRun(t, nil, "-n", vizk8s.Namespace, "rollout", "status", "deployment/prometheus", "--timeout=3m")
	t.Logf("viz Prometheus ready %s after trellis viz install --apply", time.Since(start).Round(100*time.Millisecond))
}

// vizPrometheus port-forwards to the suite's Prometheus (as the CLI does)
// and returns its URL, for any check that queries it (the Grafana
// dashboards' validation too: grafana.Check against this URL).
func (c *cluster) vizPrometheus(t *testing.T) string {
	t.Helper()
	cfg, err := kubeconfig.Load("", "")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	url, stop, err := vizcmd.ForwardPrometheus(t.Context(), cfg, cs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return url
}

// checkPromQL runs every expression on the real Prometheus: a parse or
// execution error fails the test, naming the expression.
func checkPromQL(t *testing.T, c *prom.Client, exprs map[string]string) {
	t.Helper()
	for name, e := range exprs {
		if _, err := c.Query(t.Context(), e); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	t.Logf("%d PromQL expressions ran on the real Prometheus", len(exprs))
}

// checkGrafana runs every panel's PromQL of the shipped Grafana
// dashboards (viz/grafana) on the suite's Prometheus: none may fail, and
// with the demo running the mesh dashboard has data.
func checkGrafana(t *testing.T, url string) {
	t.Helper()
	res, err := grafana.Check(t.Context(), http.DefaultClient, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	withData := map[string]int{}
	for _, r := range res {
		if r.Err != nil {
			t.Errorf("dashboard %s, panel %q (%s): %s: %v", r.Dashboard, r.Panel, r.RefID, r.Expr, r.Err)
		}
		if r.Series > 0 {
			withData[r.Dashboard]++
		}
	}
	t.Logf("%d Grafana panel queries ran on the real Prometheus; with data, per dashboard: %v", len(res), withData)
	if len(res) == 0 {
		t.Error("no Grafana query to check")
	}
	for _, d := range []string{"trellis-mesh", "trellis-workload"} {
		if withData[d] == 0 {
			t.Errorf("dashboard %s: no panel has data with the demo running", d)
		}
	}
}

// vizExpressions are viz/prom's columns as the views fill them.
func vizExpressions(ns string) map[string]string {
	sel := []string{`job="` + prom.ProxyJob + `"`, `namespace="` + ns + `"`, `direction="inbound"`}
	out := map[string]string{}
	for _, by := range [][]string{{prom.LabelNamespace, prom.LabelWorkloadKind, prom.LabelWorkload}, {prom.LabelNamespace, prom.LabelPod}, {prom.LabelNamespace, "dst_service", "route"}} {
		for _, col := range append(prom.GoldenColumns, prom.ColMeshedPods, prom.ColIdentities) {
			out[col.Name+" by "+strings.Join(by, ",")] = col.Fill(sel, by, time.Minute)
		}
	}
	// The outbound route rows' columns (trellis routes deploy/web).
	routeSel := []string{`job="` + prom.ProxyJob + `"`, `namespace="` + ns + `"`, `direction="outbound"`}
	routeBy := append([]string{prom.LabelNamespace, prom.LabelWorkloadKind, prom.LabelWorkload}, prom.RouteLabels...)
	for _, col := range prom.RouteColumns {
		out["route "+col.Name] = col.Fill(routeSel, routeBy, time.Minute)
	}
	return out
}

// loadgenCount is what the load generator logged over about the last
// minute: requests sent per second and the share that succeeded.
type loadgenCount struct {
	rps, success, seconds float64
}

// loadgenCounted reads the load generator's periodic "load" log lines
// (cumulative sent/ok/failed) and returns the rates between the last line
// and the one about a minute before it.
func (c *cluster) loadgenCounted(t *testing.T, ns string) (loadgenCount, error) {
	out, err := c.run(t.Context(), nil, "-n", ns, "logs", "deployment/loadgen", "-c", "app")
	if err != nil {
		return loadgenCount{}, err
	}
	type line struct {
		at            time.Time
		sent, ok, bad float64
	}
	var lines []line
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := logfmt(sc.Text())
		if f["msg"] != "load" {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, f["time"])
		if err != nil {
			continue
		}
		sent, _ := strconv.ParseFloat(f["sent"], 64)
		ok, _ := strconv.ParseFloat(f["ok"], 64)
		bad, _ := strconv.ParseFloat(f["failed"], 64)
		lines = append(lines, line{at, sent, ok, bad})
	}
	if len(lines) < 2 {
		return loadgenCount{}, fmt.Errorf("the load generator logged %d load lines yet", len(lines))
	}
	last := lines[len(lines)-1]
	first := lines[0]
	for _, l := range lines {
		if last.at.Sub(l.at) >= 55*time.Second {
			first = l
		}
	}
	secs := last.at.Sub(first.at).Seconds()
	if secs < 55 {
		return loadgenCount{}, fmt.Errorf("the load generator's log spans %.0f s, want a minute", secs)
	}
	done := (last.ok - first.ok) + (last.bad - first.bad)
	return loadgenCount{rps: (last.sent - first.sent) / secs, success: (last.ok - first.ok) / done, seconds: secs}, nil
}

// logfmt splits a slog text line into its keys (values unquoted).
func logfmt(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Fields(s) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = strings.Trim(v, `"`)
		}
	}
	return out
}

func within10(got, want float64) bool { return math.Abs(got-want) <= 0.1*want }

func (c *cluster) vizStatAgreesWithLoadgen(t *testing.T, ns string) {
	t.Helper()
	start := time.Now()
	var last string
	eventually(t, 5*time.Minute, "trellis stat agrees with the load generator within 10 %", func() error {
		lg, err := c.loadgenCounted(t, ns)
		if err != nil {
			return err
		}
		out, err := c.trellis(t.Context(), nil, "stat", "deploy", "-n", ns, "-o", "json")
		last = out
		if err != nil {
			return err
		}
		var doc vizcmd.StatDoc
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			return fmt.Errorf("trellis stat -o json: %w", err)
		}
		rows := map[string]model.WorkloadStat{}
		for _, r := range doc.Stats {
			rows[r.Resource.Name] = r
		}
		for _, d := range []string{"loadgen", "web", "books", "authors"} {
			r, ok := rows[d]
			if !ok {
				return fmt.Errorf("no row for deploy/%s", d)
			}
			if r.MeshedPods < 1 || r.MeshedPods != r.TotalPods {
				return fmt.Errorf("deploy/%s: %d of %d pods meshed", d, r.MeshedPods, r.TotalPods)
			}
			if d == "loadgen" {
				continue // serves nothing: below, what it sent
			}
			if r.SuccessRate == nil || !within10(r.RPS, lg.rps) || !within10(*r.SuccessRate, lg.success) {
				return fmt.Errorf("deploy/%s: rps %.2f success %v; the load generator counted %.2f rps, %.3f success over %.0f s",
					d, r.RPS, deref(r.SuccessRate), lg.rps, lg.success, lg.seconds)
			}
		}
		out, err = c.trellis(t.Context(), nil, "stat", "deploy/loadgen", "-n", ns, "--to", "deploy/web", "-o", "json")
		if err != nil {
			return err
		}
		var sent vizcmd.StatDoc
		if err := json.Unmarshal([]byte(out), &sent); err != nil {
			return err
		}
		if len(sent.Stats) != 1 || !within10(sent.Stats[0].RPS, lg.rps) {
			return fmt.Errorf("stat deploy/loadgen --to deploy/web: %s; the load generator counted %.2f rps", out, lg.rps)
		}
		t.Logf("load generator: %.2f rps, %.3f success over %.0f s", lg.rps, lg.success, lg.seconds)
		return nil
	})
	t.Logf("trellis stat agreed with the load generator %s after the rollout:\n%s", time.Since(start).Round(time.Second), last)
	t.Logf("trellis stat deploy -n %s:\n%s", ns, c.mustTrellis(t, nil, "stat", "deploy", "-n", ns))
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// vizEdges: with viz installed, `trellis edges` reads Prometheus; every
// demo edge is there, from its client's identity to the server's, mTLS.
func (c *cluster) vizEdges(t *testing.T, ns string) {
	t.Helper()
	want := map[string]string{"loadgen": "web", "web": "books", "books": "authors"}
	id := func(sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }
	out := c.mustTrellis(t, nil, "edges", "-n", ns, "-o", "json")
	var res struct {
		Edges []struct {
			Pod, ServiceAccount, Destination, PeerIdentity string
			MTLS                                           bool
			Requests                                       float64
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("trellis edges -o json: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for _, e := range res.Edges {
		dst, ok := want[e.ServiceAccount]
		if !ok {
			t.Errorf("edge from an unexpected client: %+v", e)
			continue
		}
		if e.Destination == "deploy/"+dst && e.PeerIdentity == id(dst) && e.MTLS && e.Requests > 0 {
			seen[e.ServiceAccount] = true
		}
	}
	for client, dst := range want {
		if !seen[client] {
			t.Errorf("no edge %s (%s) -> deploy/%s (%s) over mTLS in:\n%s", client, id(client), dst, id(dst), out)
		}
	}
	// The model's view: source identities come from Prometheus's relabelling.
	url := c.vizPrometheus(t)
	pc, err := prom.NewClient(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	edges, err := (&prom.Source{C: pc}).Edges(t.Context(), model.Query{Resource: model.Resource{Namespace: ns}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range edges {
		if !e.MTLS && e.DstIdentity == "" && (e.SuccessRate == nil || *e.SuccessRate == 0) {
			// Requests its own proxy answered (no endpoint yet at the start).
			t.Logf("%s -> %s: %g requests answered by its own proxy", e.Src.Name, e.Dst.Name, e.Requests)
			continue
		}
		if dst, ok := want[e.Src.Name]; !ok || e.SrcIdentity != id(e.Src.Name) || e.DstIdentity != id(dst) || !e.MTLS {
			t.Errorf("edge %+v: want %s -> %s with identities %s -> %s over mTLS", e, e.Src.Name, dst, id(e.Src.Name), id(dst))
		}
	}
	t.Logf("trellis edges -n %s (from Prometheus):\n%s", ns, c.mustTrellis(t, nil, "edges", "-n", ns))
}

// vizBooksRoute is a GAMMA HTTPRoute on the demo's books Service (%s: the
// namespace) whose one rule sends everything to books itself: web's calls
// to books become that route's rule 0.
const vizBooksRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books-route, namespace: %[1]s}
spec:
  parentRefs:
  - {group: "", kind: Service, name: books, port: 80}
  rules:
  - backendRefs:
    - {name: books, port: 80}
`

// vizRoutes: books' inbound rows (always [default]: routes are the
// client's), web's outbound route rows for books-route, and the books
// Service's routes, from the real proxies' route metrics.
func (c *cluster) vizRoutes(t *testing.T, ns string) {
	t.Helper()
	routes := func(args ...string) []model.RouteStat {
		out := c.mustTrellis(t, nil, append(append([]string{"routes"}, args...), "-n", ns, "-o", "json")...)
		var doc vizcmd.RoutesDoc
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatal(err)
		}
		t.Logf("trellis routes %s -n %s:\n%s", strings.Join(args, " "), ns, c.mustTrellis(t, nil, append(append([]string{"routes"}, args...), "-n", ns)...))
		return doc.Routes
	}
	var rps float64
	for _, r := range routes("deploy/books") {
		if r.Direction == model.DirectionInbound && r.Route != prom.DefaultRoute {
			t.Errorf("books inbound route %q: routes are applied by the client's proxy", r.Route)
		}
		if r.Direction == model.DirectionInbound {
			rps += r.RPS
		}
	}
	if rps <= 0 {
		t.Error("trellis routes deploy/books: no inbound traffic")
	}
	route := ns + "/books-route"
	books := "books." + ns + ".svc.cluster.local:80"
	isBooksRoute := func(r model.RouteStat) bool {
		return r.Direction == model.DirectionOutbound && r.Route == route && r.Rule == "0" && r.Backend == books && r.RPS > 0 && r.SuccessRate != nil
	}
	found := false
	for _, r := range routes("deploy/web", "--to", "svc/books") {
		found = found || isBooksRoute(r)
	}
	if !found {
		t.Errorf("trellis routes deploy/web --to svc/books: no outbound row of %s rule 0 -> %s", route, books)
	}
	svc := routes("svc/books")
	if len(svc) != 1 || !isBooksRoute(svc[0]) || svc[0].Resource.Name != "books" {
		t.Errorf("trellis routes svc/books: %+v, want one row of %s rule 0 -> %s", svc, route, books)
	}
}

// logPrometheusMemory logs the resident memory of the Prometheus process
// and its container's cgroup (the single node is this machine).
func logPrometheusMemory(t *testing.T) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.HasPrefix(string(b), "/bin/prometheus\x00--config.file=/etc/prometheus/prometheus.yml") {
			continue
		}
		dir := filepath.Dir(p)
		status, _ := os.ReadFile(filepath.Join(dir, "status"))
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "VmRSS:") || strings.HasPrefix(l, "VmHWM:") || strings.HasPrefix(l, "RssAnon:") || strings.HasPrefix(l, "RssFile:") {
				t.Logf("prometheus (pid %s) %s", filepath.Base(dir), strings.Join(strings.Fields(l), " "))
			}
		}
		logCgroupMemory(t, filepath.Join(dir, "cgroup"))
		return
	}
	t.Log("prometheus process not found in /proc: memory not measured")
}

// logCgroupMemory logs the memory of the process's cgroup: cgroup v2
// (memory.current, memory.peak) or v1 (the memory controller's
// usage_in_bytes, max_usage_in_bytes).
func logCgroupMemory(t *testing.T, cgroupFile string) {
	b, _ := os.ReadFile(cgroupFile)
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var dir string
		var files []string
		switch {
		case parts[1] == "":
			dir, files = filepath.Join("/sys/fs/cgroup", parts[2]), []string{"memory.current", "memory.peak"}
		case strings.Contains(","+parts[1]+",", ",memory,"):
			dir, files = filepath.Join("/sys/fs/cgroup/memory", parts[2]), []string{"memory.usage_in_bytes", "memory.max_usage_in_bytes"}
		default:
			continue
		}
		for _, f := range files {
			if v, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
				t.Logf("prometheus container cgroup %s: %s bytes", f, strings.TrimSpace(string(v)))
			}
		}
	}
}
