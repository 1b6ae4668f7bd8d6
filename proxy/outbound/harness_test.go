package outbound_test

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/inbound"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/outbound"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/policy"
)

var (
	clientID = identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "web"}
	serverID = identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "books"}
)

const service = "books.demo:80"

type ca struct {
	root   *x509.Certificate
	issuer *pki.Issuer
}

func newCA(t testing.TB) *ca {
	t.Helper()
	now := time.Now()
	root, key, err := pki.NewRoot("test root", time.Hour, now.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.NewIssuer(root, key, "test issuer", time.Hour, now.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return &ca{root: root, issuer: is}
}

func (c *ca) store(t testing.TB, id identity.ID) *meshtls.Store {
	t.Helper()
	s, err := meshtls.NewStore(id, []*x509.Certificate{c.root})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := c.issuer.Sign(key.Public(), id, time.Hour, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetCertificate(c.issuer.ChainDER(leaf), key); err != nil {
		t.Fatal(err)
	}
	return s
}

// pair is an outbound proxy (client side) and an inbound proxy (server side)
// in front of an app, over real loopback TCP and mesh TLS.
type pair struct {
	t          testing.TB
	ca         *ca
	outReg     *prometheus.Registry
	inReg      *prometheus.Registry
	out        *outbound.Proxy
	in         *inbound.Proxy
	outAddr    string
	inAddr     string
	appAddr    string
	bal        *balance.Balancer
	client     *http.Client
	outMetrics *metrics.Metrics
}

type pairOpts struct {
	app            http.Handler // served as HTTP/1.1 (and h2c when h2c is true)
	appListener    net.Listener // instead of app
	expectID       identity.ID  // identity the outbound expects; default serverID
	requestTimeout time.Duration
	extraEndpoints []balance.Endpoint // tried too (e.g. refused)
	appPorts       []uint16           // further ports the inbound may forward to
	plainToApp     bool               // the inbound's --app-addr is the app (plain callers reach it)
	authorizer     policy.Authorizer  // the inbound's authz stage (default: all-unauthenticated)
	inTrace        pipeline.Layer     // the tracing stages (default: none)
	outTrace       pipeline.Layer
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func newPair(t testing.TB, o pairOpts) *pair {
	t.Helper()
	c := newCA(t)
	p := &pair{t: t, ca: c, outReg: prometheus.NewRegistry(), inReg: prometheus.NewRegistry()}

	appLn := o.appListener
	if appLn == nil {
		appLn = listen(t)
		srv := &http.Server{Handler: o.app}
		go func() { _ = srv.Serve(appLn) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	p.appAddr = appLn.Addr().String()
	_, appPort, _ := net.SplitHostPort(p.appAddr)
	port, _ := strconv.Atoi(appPort)

	inM, err := metrics.New(p.inReg)
	if err != nil {
		t.Fatal(err)
	}
	// pprof labels tell the two proxies' goroutines apart in benchmark
	// profiles (go tool pprof -tagfocus proxy=inbound).
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("proxy", "inbound")))
	inApp := "127.0.0.1:1"
	if o.plainToApp {
		inApp = p.appAddr
	}
	p.in, err = inbound.New(inbound.Config{Store: c.store(t, serverID), Metrics: inM, AppAddr: inApp,
		// The app is a further port of the (unused) app address's host,
		// named by the endpoint's target port.
		AppPorts: append([]uint16{uint16(port)}, o.appPorts...), DetectTimeout: time.Second,
		Authorizer: o.authorizer, Trace: o.inTrace})
	if err != nil {
		t.Fatal(err)
	}
	inLn := listen(t)
	p.inAddr = inLn.Addr().String()
	go func() { _ = p.in.Serve(inLn) }()
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("proxy", "outbound")))

	p.outMetrics, err = metrics.New(p.outReg)
	if err != nil {
		t.Fatal(err)
	}
	want := o.expectID
	if want.IsZero() {
		want = serverID
	}
	p.bal = balance.New()
	eps := append([]balance.Endpoint{}, o.extraEndpoints...)
	eps = append(eps, balance.Endpoint{Addr: p.inAddr, Weight: 1, Identity: want, TargetPort: uint32(port)})
	p.bal.Update(eps)
	p.out, err = outbound.New(outbound.Config{
		Mode:  outbound.ModeExplicit,
		Store: c.store(t, clientID),
		Resolve: func(ctx context.Context, authority string) (outbound.Destination, error) {
			if authority == service {
				return outbound.Destination{Exists: true, Balancer: p.bal}, nil
			}
			return outbound.Destination{}, nil
		},
		Metrics:        p.outMetrics,
		DetectTimeout:  time.Second,
		RequestTimeout: o.requestTimeout,
		Trace:          o.outTrace,
	})
	if err != nil {
		t.Fatal(err)
	}
	outLn := listen(t)
	p.outAddr = outLn.Addr().String()
	go func() { _ = p.out.Serve(outLn) }()
	pprof.SetGoroutineLabels(context.Background())

	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", p.outAddr)
		},
		MaxIdleConnsPerHost: 64,
		DisableCompression:  true,
	}
	p.client = &http.Client{Transport: tr}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.out.Shutdown(ctx)
		_ = p.in.Shutdown(ctx)
	})
	return p
}

// counter returns the value of a counter with the given labels (a subset).
func counter(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				switch {
				case m.Counter != nil:
					sum += m.Counter.GetValue()
				case m.Gauge != nil:
					sum += m.Gauge.GetValue()
				case m.Histogram != nil:
					sum += float64(m.Histogram.GetSampleCount())
				}
			}
		}
	}
	return sum
}

func matches(m *dto.Metric, labels map[string]string) bool {
	for k, v := range labels {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == k && lp.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// eventually polls cond (metrics are recorded after the response is sent).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readAll(t testing.TB, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func url(path string) string { return "http://" + strings.TrimSuffix(service, ":80") + path }
