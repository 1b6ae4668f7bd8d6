package ratelimit_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	policyanswer "github.com/trellis-mesh/trellis/internal/policymodel/answer"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/inbound"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/ratelimit"
)

// answer is a Source with one answer for every port, swapped by the test.
type answer struct {
	p atomic.Pointer[apiv1.ServerPolicy]
}

func (a *answer) Get(_ context.Context, port uint16) inboundpolicy.Snapshot {
	return inboundpolicy.Snapshot{Port: port, Policy: a.p.Load(), FromController: true}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

var serverID = identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "books"}

// mesh is a CA issuing the stores of the inbound proxy and its callers.
type mesh struct {
	root   *x509.Certificate
	issuer *pki.Issuer
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	now := time.Now().Add(-time.Minute)
	root, key, err := pki.NewRoot("test root", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.NewIssuer(root, key, "test issuer", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	return &mesh{root: root, issuer: is}
}

func (m *mesh) store(t *testing.T, id identity.ID) *meshtls.Store {
	t.Helper()
	s, err := meshtls.NewStore(id, []*x509.Certificate{m.root})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := m.issuer.Sign(key.Public(), id, time.Hour, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetCertificate(m.issuer.ChainDER(leaf), key); err != nil {
		t.Fatal(err)
	}
	return s
}

// client is an HTTP/2 client over mesh TLS proving id, as a peer proxy.
func (m *mesh) client(t *testing.T, id identity.ID, inAddr string) *http.Client {
	t.Helper()
	conf := m.store(t, id).ClientConfig(serverID, []string{"h2"})
	var h2 http.Protocols
	h2.SetHTTP2(true)
	tr := &http.Transport{Protocols: &h2, ForceAttemptHTTP2: true, DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		d := tls.Dialer{Config: conf}
		return d.DialContext(ctx, "tcp", inAddr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: h1Caller{tr}, Timeout: 20 * time.Second}
}

// h1Caller says what a peer proxy says of an HTTP/1.1 caller, so that the
// inbound proxy speaks HTTP/1.1 to the app.
type h1Caller struct{ rt http.RoundTripper }

func (c h1Caller) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(forward.HeaderOrigProto, "HTTP/1.1")
	return c.rt.RoundTrip(r)
}

// inboundWithLimit starts an app that counts the requests it gets and an
// inbound proxy in front of it with src's limits, over loopback TCP.
func inboundWithLimit(t *testing.T, m *mesh, src ratelimit.Source) (inAddr string, atApp *atomic.Int64) {
	t.Helper()
	atApp = &atomic.Int64{}
	return inboundWithApp(t, m, src, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		atApp.Add(1)
		_, _ = io.WriteString(w, "ok")
	})), atApp
}

// inboundWithApp starts app and an inbound proxy in front of it with
// src's limits, over loopback TCP.
func inboundWithApp(t *testing.T, m *mesh, src ratelimit.Source, handler http.Handler) string {
	t.Helper()
	appLn := listen(t)
	app := &http.Server{Handler: handler}
	go func() { _ = app.Serve(appLn) }()
	t.Cleanup(func() { _ = app.Close() })
	pm, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	lim, err := ratelimit.New(ratelimit.Config{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	in, err := inbound.New(inbound.Config{Store: m.store(t, serverID), Metrics: pm, AppAddr: appLn.Addr().String(),
		// Longer than the test: a connection the client dialled but left
		// idle past it would be spliced to the app as opaque TCP, unlimited
		// (docs/traffic.md).
		DetectTimeout: time.Minute, RateLimit: lim.Layer})
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	go func() { _ = in.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = in.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// TestInboundRateLimitTCP: a client sending 300 requests a second meets
// an inbound limit of 100 a second (burst 10): the app, counting what it
// gets, sees no more than the bucket allows (burst + rate x time) and
// about the rate; every other request is a 429 with Retry-After and
// trellis-proxy-error rate_limited. Then a gRPC client over the limit gets
// RESOURCE_EXHAUSTED, not a bare 429.
func TestInboundRateLimitTCP(t *testing.T) {
	src := &answer{}
	src.p.Store(&apiv1.ServerPolicy{Name: "server/books", Limits: &apiv1.Limits{RequestsPerSecond: 100, Burst: 10}})
	inAddr, atApp := inboundWithLimit(t, newMesh(t), src)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()

	const rps, seconds = 300, 3
	var ok, limited, other atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	start := time.Now()
	for i := range rps * seconds {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / rps)))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			switch code, retry, reason := get(client, "http://"+inAddr+"/"); {
			case code == 200:
				ok.Add(1)
			case code == 429 && retry >= 1 && reason == "rate_limited":
				limited.Add(1)
			default:
				other.Add(1)
				t.Errorf("status %d, Retry-After %d, reason %q", code, retry, reason)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	got := atApp.Load()
	t.Logf("%d requests in %.2fs (%.0f/s sent): %d reached the app (%.0f/s), %d refused with 429",
		rps*seconds, elapsed, rps*seconds/elapsed, got, float64(got)/elapsed, limited.Load())
	if got != ok.Load() {
		t.Errorf("the app counted %d requests, the client %d answers 200", got, ok.Load())
	}
	if limit := 10 + 100*elapsed; float64(got) > limit+1 {
		t.Errorf("the app got %d requests in %.2fs: more than the bucket allows (%.0f)", got, elapsed, limit)
	}
	if got < 100*seconds/2 {
		t.Errorf("the app got only %d requests in %.2fs under a limit of 100/s", got, elapsed)
	}

	// A fresh bucket of one token: one HTTP request takes it, the gRPC
	// call after it is refused.
	src.p.Store(&apiv1.ServerPolicy{Name: "server/books", Limits: &apiv1.Limits{RequestsPerSecond: 1}})
	if code, _, _ := get(client, "http://"+inAddr+"/"); code != 200 {
		t.Fatalf("the first request under the new limit: %d", code)
	}
	cc, err := grpc.NewClient("passthrough:///"+inAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = cc.Invoke(ctx, "/demo.Echo/Unary", &emptypb.Empty{}, &emptypb.Empty{})
	if s, _ := status.FromError(err); s.Code() != codes.ResourceExhausted {
		t.Fatalf("gRPC over the limit: %v, want RESOURCE_EXHAUSTED", err)
	}
}

// get returns the status, Retry-After (seconds, 0 if none) and the reason
// of trellis-proxy-error.
func get(c *http.Client, url string) (int, int, string) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, 0, err.Error()
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	reason, _, _ := strings.Cut(resp.Header.Get("Trellis-Proxy-Error"), ";")
	return resp.StatusCode, retry, reason
}

// TestInboundPerClientTCP: over mesh TLS, each caller's proven identity has
// its own bucket: alice using hers up is refused (429, Retry-After) while
// bob and the callers without mesh TLS (one shared bucket) still get
// through; an override gives batch a bucket of its own size.
func TestInboundPerClientTCP(t *testing.T) {
	m := newMesh(t)
	id := func(sa string) identity.ID {
		return identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: sa}
	}
	src := &answer{}
	src.p.Store(&apiv1.ServerPolicy{Name: "server/books", Limits: &apiv1.Limits{RequestsPerSecond: 1000,
		ClientRequestsPerSecond: 1, ClientBurst: 5,
		Overrides: []*apiv1.ClientLimit{{Identities: []string{id("batch").String()}, RequestsPerSecond: 1, Burst: 8}}}})
	inAddr, atApp := inboundWithLimit(t, m, src)
	plain := &http.Client{Timeout: 20 * time.Second}
	start := time.Now()
	count := func(name string, c *http.Client) int {
		ok := 0
		for range 12 {
			switch code, retry, reason := get(c, "https://books.demo/"); {
			case code == 200:
				ok++
			case code != 429 || retry < 1 || reason != "rate_limited":
				t.Errorf("%s: status %d, Retry-After %d, reason %q", name, code, retry, reason)
			}
		}
		return ok
	}
	got := map[string]int{}
	for _, name := range []string{"alice", "bob", "batch"} {
		got[name] = count(name, m.client(t, id(name), inAddr))
	}
	plainOK := 0
	for range 12 {
		if code, _, _ := get(plain, "http://"+inAddr+"/"); code == 200 {
			plainOK++
		}
	}
	got["plain"] = plainOK
	// One token a second refills each bucket: a slow run may add some.
	extra := int(time.Since(start).Seconds()) + 1
	for name, burst := range map[string]int{"alice": 5, "bob": 5, "batch": 8, "plain": 5} {
		if got[name] < burst || got[name] > burst+extra {
			t.Errorf("%s: %d of 12 requests admitted, want its burst %d (+%d refilled at most)", name, got[name], burst, extra)
		}
	}
	if sum := got["alice"] + got["bob"] + got["batch"] + got["plain"]; int64(sum) != atApp.Load() {
		t.Errorf("the app counted %d requests, the clients %d answers 200", atApp.Load(), sum)
	}
}

// TestInboundConcurrencyTCP: 40 callers at once against a slow app behind
// a concurrency limit of 5: the app, counting what it has in flight, never
// has more than 5; the others are refused at once with 503 overloaded,
// and every request is one or the other.
func TestInboundConcurrencyTCP(t *testing.T) {
	src := &answer{}
	src.p.Store(&apiv1.ServerPolicy{Name: "server/books", Limits: &apiv1.Limits{MaxConcurrency: 5}})
	var inFlight, most, served atomic.Int64
	release := make(chan struct{})
	inAddr := inboundWithApp(t, newMesh(t), src, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		inFlight.Add(-1)
		served.Add(1)
	}))
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 100}, Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	var overloaded, other atomic.Int64
	const callers = 40
	for range callers {
		wg.Go(func() {
			switch code, _, reason := get(client, "http://"+inAddr+"/"); {
			case code == 200:
			case code == 503 && reason == "overloaded":
				overloaded.Add(1)
			default:
				other.Add(1)
				t.Errorf("status %d reason %q", code, reason)
			}
		})
	}
	// The app holds what it got until the others were answered.
	deadline := time.Now().Add(15 * time.Second)
	for overloaded.Load()+other.Load()+inFlight.Load() < callers && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	t.Logf("%d served, at most %d in flight at the app, %d refused overloaded", served.Load(), most.Load(), overloaded.Load())
	if most.Load() > 5 || most.Load() == 0 {
		t.Errorf("the app had %d requests in flight at once, limit 5", most.Load())
	}
	if served.Load()+overloaded.Load() != callers {
		t.Errorf("%d served + %d overloaded, want %d", served.Load(), overloaded.Load(), callers)
	}
}

// TestInboundProbeExemptTCP: a meshed caller saturates a limited port,
// on the probe path itself, while plaintext GETs of the probe path (what
// the kubelet sends) keep getting 200: the app answers every probe, and
// the meshed caller is held to the bucket (429s, and the app counts no
// more of its requests than the bucket allows). A plaintext flood of the
// probe path is limited past the probes' allowance.
func TestInboundProbeExemptTCP(t *testing.T) {
	m := newMesh(t)
	src := &answer{}
	src.p.Store(&apiv1.ServerPolicy{Name: "server/books", Limits: &apiv1.Limits{RequestsPerSecond: 20, Burst: 5,
		Probes: policyanswer.Probes([]string{"/healthz"})}})
	var meshedAtApp, probesAtApp atomic.Int64
	inAddr := inboundWithApp(t, m, src, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test-Caller") == "kubelet" {
			probesAtApp.Add(1)
		} else {
			meshedAtApp.Add(1)
		}
		_, _ = io.WriteString(w, "ok")
	}))
	meshed := m.client(t, identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "alice"}, inAddr)
	var limited, stop atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			for stop.Load() == 0 {
				switch code, _, reason := get(meshed, "https://books.demo/healthz"); {
				case code == 429 && reason == "rate_limited":
					limited.Add(1)
				case code != 200:
					t.Errorf("meshed caller: status %d, reason %q", code, reason)
					return
				}
			}
		})
	}
	kubelet := &http.Client{Timeout: 20 * time.Second}
	probe := func() int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+inAddr+"/healthz", nil)
		req.Header.Set("X-Test-Caller", "kubelet")
		resp, err := kubelet.Do(req)
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	const probes = 8
	for i := range probes {
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 400 * time.Millisecond)))
		if code := probe(); code != 200 {
			t.Errorf("probe %d under load: status %d, want 200", i, code)
		}
	}
	stop.Store(1)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	t.Logf("%.2fs: %d probes answered by the app; the meshed caller got %d requests to the app (%.0f/s), %d refused with 429",
		elapsed, probesAtApp.Load(), meshedAtApp.Load(), float64(meshedAtApp.Load())/elapsed, limited.Load())
	if probesAtApp.Load() != probes {
		t.Errorf("the app answered %d probes, want %d", probesAtApp.Load(), probes)
	}
	if limited.Load() == 0 {
		t.Error("the meshed caller was never limited: the port was not saturated, or the probe path let it through")
	}
	if bound := 5 + 20*elapsed; float64(meshedAtApp.Load()) > bound+1 {
		t.Errorf("the meshed caller got %d requests to the app in %.2fs, more than the bucket allows (%.0f)", meshedAtApp.Load(), elapsed, bound)
	}

	// A plaintext flood of the probe path: past the allowance (burst 6)
	// and the port's bucket, refused.
	refused := 0
	for range 40 {
		if probe() == 429 {
			refused++
		}
	}
	if refused == 0 {
		t.Error("40 plaintext GETs of the probe path at once: none refused")
	}
}
