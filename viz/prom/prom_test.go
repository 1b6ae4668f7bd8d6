package prom

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-mesh/trellis/viz/model"
)

// prometheusBinary is a real Prometheus: $TRELLIS_PROMETHEUS_BIN, else the
// one the cluster harness caches (make images), else prometheus on PATH.
func prometheusBinary(t *testing.T) string {
	if p := os.Getenv("TRELLIS_PROMETHEUS_BIN"); p != "" {
		return p
	}
	if m, _ := filepath.Glob("/var/tmp/trellis-cluster/cache/prometheus-*/prometheus"); len(m) > 0 {
		return m[len(m)-1]
	}
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p
	}
	t.Skip("no Prometheus: set TRELLIS_PROMETHEUS_BIN (make images builds and caches one under /var/tmp/trellis-cluster/cache)")
	return ""
}

// linear is a proxy's series growing at a constant rate since start: n
// responses per second, ok of every 10 successes, all in the bucket
// (lo, hi]. Prometheus's rate() of it is exactly n.
type linear struct {
	start       time.Time
	labels      map[string]string // direction, dst_service, peer_identity, tls
	n, okOf10   float64
	bucketHi    float64
	respDesc    *prometheus.Desc
	latencyDesc *prometheus.Desc
}

func newLinear(labels map[string]string, n, okOf10, bucketHi float64) *linear {
	l := &linear{start: time.Now(), labels: labels, n: n, okOf10: okOf10, bucketHi: bucketHi}
	l.respDesc = prometheus.NewDesc("trellis_responses_total", "x", []string{"classification"}, labels)
	l.latencyDesc = prometheus.NewDesc("trellis_response_latency_seconds", "x", nil, labels)
	return l
}

func (l *linear) Describe(ch chan<- *prometheus.Desc) { ch <- l.respDesc; ch <- l.latencyDesc }

func (l *linear) Collect(ch chan<- prometheus.Metric) {
	total := l.n * time.Since(l.start).Seconds()
	ok := total * l.okOf10 / 10
	ch <- prometheus.MustNewConstMetric(l.respDesc, prometheus.CounterValue, ok, "success")
	ch <- prometheus.MustNewConstMetric(l.respDesc, prometheus.CounterValue, total-ok, "failure")
	// A cancelled request is neither: must not move any figure.
	ch <- prometheus.MustNewConstMetric(l.respDesc, prometheus.CounterValue, 3*total, "cancelled")
	// The proxies' bucket layout is the same everywhere; every observation
	// is in (1ms, bucketHi].
	buckets := map[float64]uint64{0.001: 0, 0.01: 0, 0.1: uint64(total), 10: uint64(total)}
	if l.bucketHi <= 0.01 {
		buckets[0.01] = uint64(total)
	}
	ch <- prometheus.MustNewConstHistogram(l.latencyDesc, uint64(total), total*l.bucketHi/2, buckets)
}

type target struct {
	labels map[string]string
	series []*linear
	// reg, when set, is scraped too (a real proxy's registry).
	reg *prometheus.Registry
}

// startPrometheus runs a real Prometheus scraping each target every
// second, with the target labels `trellis viz install`'s relabelling puts
// on proxy series.
func startPrometheus(t *testing.T, targets []target) *Client {
	bin := prometheusBinary(t)
	var cfg strings.Builder
	cfg.WriteString("global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n- job_name: trellis-proxy\n  static_configs:\n")
	for _, tg := range targets {
		reg := tg.reg
		if reg == nil {
			reg = prometheus.NewRegistry()
		}
		for _, s := range tg.series {
			reg.MustRegister(s)
		}
		srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		t.Cleanup(srv.Close)
		fmt.Fprintf(&cfg, "  - targets: [%q]\n    labels: {", strings.TrimPrefix(srv.URL, "http://"))
		var ls []string
		for k, v := range tg.labels {
			ls = append(ls, fmt.Sprintf("%s: %q", k, v))
		}
		cfg.WriteString(strings.Join(ls, ", ") + "}\n")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() { cancel(); _ = cmd.Wait() })
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	})
	c, err := NewClient("http://"+addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("prometheus not ready after 60 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("prometheus ready after %s", time.Since(start).Round(time.Millisecond))
	return c
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

const (
	idWeb   = "spiffe://cluster.local/ns/demo/sa/web"
	idBooks = "spiffe://cluster.local/ns/demo/sa/books"
)

func pod(ns, p, kind, wl, id string) map[string]string {
	return map[string]string{"namespace": ns, "pod": p, "workload_kind": kind, "workload": wl, "identity": id}
}

func dir(d, dst, peer string) map[string]string {
	return map[string]string{"direction": d, "dst_service": dst, "peer_identity": peer, "tls": "true"}
}

func TestAgainstPrometheus(t *testing.T) {
	const books = "books.demo.svc.cluster.local:80"
	c := startPrometheus(t, []target{
		{labels: pod("demo", "web-1", "deployment", "web", idWeb), series: []*linear{newLinear(dir("outbound", books, idBooks), 20, 9, 0.01)}},
		{labels: pod("demo", "books-1", "deployment", "books", idBooks), series: []*linear{newLinear(dir("inbound", books, idWeb), 12, 9, 0.01)}},
		{labels: pod("demo", "books-2", "deployment", "books", idBooks), series: []*linear{newLinear(dir("inbound", books, idWeb), 8, 9, 0.1)}},
	})
	src := &Source{C: c}
	ctx := context.Background()
	// rate() under-reports a series younger than its window (it does not
	// extrapolate to before the first sample): wait for two windows.
	const win = 5 * time.Second
	q := model.Query{Resource: model.Resource{Kind: "deployments", Namespace: "demo"}, Window: win}

	// Wait for enough scrapes that rate() has two samples in the window.
	start := time.Now()
	var rows []model.WorkloadStat
	for {
		var err error
		rows, err = src.Stat(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) == 2 && rows[0].SuccessRate != nil && rows[0].RPS > 0 && time.Since(start) > 2*win+2*time.Second {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("no rates after 60 s: %+v", rows)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("rates after %s", time.Since(start).Round(time.Millisecond))
	byName := map[string]model.WorkloadStat{}
	for _, r := range rows {
		byName[r.Resource.Name] = r
	}
	b := byName["books"]
	if b.MeshedPods != 2 || !within(b.RPS, 20, 0.1) || b.SuccessRate == nil || !within(*b.SuccessRate, 0.9, 0.02) {
		t.Errorf("books: %+v", b)
	}
	// 12 rps at (1ms, 10ms] and 8 at (1ms, 100ms]: p50 in the first range.
	if b.P50Ms == nil || *b.P50Ms <= 1 || *b.P50Ms > 10 || b.P99Ms == nil || *b.P99Ms <= 10 || *b.P99Ms > 100 {
		t.Errorf("books quantiles p50 %v p99 %v", deref(b.P50Ms), deref(b.P99Ms))
	}
	// web serves nothing: a row (its proxy is scraped) without figures.
	if w := byName["web"]; w.MeshedPods != 1 || w.RPS != 0 || w.SuccessRate != nil || w.P50Ms != nil {
		t.Errorf("web: %+v", w)
	}

	// --to deploy/books: web's outbound traffic to books' identity.
	to, err := src.Stat(ctx, model.Query{Resource: model.Resource{Kind: "deployments", Namespace: "demo", Name: "web"},
		To: model.Resource{Kind: "deployments", Namespace: "demo", Name: "books"}, Window: win})
	if err != nil || len(to) != 1 || !within(to[0].RPS, 20, 0.1) {
		t.Errorf("stat web --to books: %+v %v", to, err)
	}

	edges, err := src.Edges(ctx, model.Query{Resource: model.Resource{Namespace: "demo"}, Window: win})
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 1 {
		t.Fatalf("edges %+v", edges)
	}
	e := edges[0]
	wantDst := model.Resource{Kind: "deployments", Namespace: "demo", Name: "books"}
	if e.Src.Name != "web" || e.Dst != wantDst || e.SrcIdentity != idWeb || e.DstIdentity != idBooks || !e.MTLS || !within(e.RPS, 20, 0.1) {
		t.Errorf("edge %+v", e)
	}

	routes, err := src.Routes(ctx, model.Query{Resource: model.Resource{Kind: "deployments", Namespace: "demo", Name: "books"}, Window: win})
	if err != nil || len(routes) != 1 || routes[0].Route != DefaultRoute || routes[0].Authority != books || routes[0].Direction != model.DirectionInbound {
		t.Errorf("routes %+v %v", routes, err)
	}

	svc, err := src.Stat(ctx, model.Query{Resource: model.Resource{Kind: "services", Namespace: "demo"}, Window: win})
	if err != nil || len(svc) != 1 || svc[0].Resource.Name != "books" || !within(svc[0].RPS, 20, 0.1) {
		t.Errorf("stat svc %+v %v", svc, err)
	}

	// A query Prometheus refuses is an error saying so.
	if _, err := c.Query(ctx, "sum(("); !errors.Is(err, ErrQuery) {
		t.Errorf("bad PromQL: %v", err)
	}
	// Every column's expression runs (the expressions docs/observability.md shows).
	for _, col := range append(GoldenColumns, ColMeshedPods, ColIdentities) {
		if _, err := c.Query(ctx, col.Fill([]string{eq("job", ProxyJob)}, []string{LabelNamespace}, time.Minute)); err != nil {
			t.Errorf("%s: %v", col.Name, err)
		}
	}
}

func within(got, want, frac float64) bool { return math.Abs(got-want) <= frac*want }

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
