package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/echo"
	"github.com/trellis-mesh/trellis/demoapp/httpserve"
	"github.com/trellis-mesh/trellis/test/harness"
)

// Set once by TestMain, read-only afterwards.
var (
	bins     harness.Binaries
	buildErr error
	ports    harness.Ports
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "trellis-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	bins, buildErr = harness.Build(ctx, dir, raceEnabled)
	cancel()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireBinaries(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("building the mesh binaries: %v", buildErr)
	}
}

const ns = "e2e"

func identityOf(sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }

// app is an echo server in the test process, with counters the tests use to
// see what really reached the application.
type app struct {
	Name string
	Addr string

	served      atomic.Int64
	slowStarted chan struct{} // one value per /slow request that began
	cancelled   chan struct{} // one value per /slow request whose context ended early
	stop        func()        // stops the server (also at the end of the test)
}

// startApp serves the echo handler (HTTP/1.1, h2c, gRPC) on a fresh
// loopback port until the test ends.
func startApp(t *testing.T, name string) *app {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &app{
		Name:        name,
		Addr:        ln.Addr().String(),
		slowStarted: make(chan struct{}, 1000),
		cancelled:   make(chan struct{}, 1000),
	}
	log := slog.New(slog.DiscardHandler)
	h := echo.NewHandler(echo.Config{Name: name, Log: log})
	wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.served.Add(1)
		if r.URL.Path == "/slow" {
			notify(a.slowStarted)
			h.ServeHTTP(w, r)
			if r.Context().Err() != nil {
				notify(a.cancelled)
			}
			return
		}
		h.ServeHTTP(w, r)
	})
	srv := httpserve.NewServer(wrapped, true, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = httpserve.Serve(ctx, srv, ln, h.Stop)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			_ = srv.Close()
			<-done
		})
	}
	a.stop = stop
	t.Cleanup(stop)
	return a
}

// startTCPEcho runs a raw TCP echo server: it copies every byte back and
// half-closes its side when the client half-closes.
func startTCPEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.Copy(c, c); err != nil {
					return
				}
				_ = c.(*net.TCPConn).CloseWrite()
				// Wait for the client to close, so the close is not a reset.
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// basicMesh is the usual topology: a client workload, one echo server
// workload behind service echo.e2e:80 and tcpecho.e2e:7000 (opaque), both
// proxies ready.
type basicMesh struct {
	mesh    *harness.Mesh
	app     *app
	tcpAddr string
	client  *harness.Proxy
	server  *harness.Proxy
}

const (
	echoAuthority = "echo.e2e:80"
	tcpAuthority  = "tcpecho.e2e:7000"
)

func newBasicMesh(t *testing.T, proxyArgs ...string) *basicMesh {
	t.Helper()
	requireBinaries(t)
	a := startApp(t, "echo-1")
	tcpAddr := startTCPEcho(t)
	store := harness.Store{
		Services: []harness.Service{
			{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}},
			{Name: "tcpecho", Namespace: ns, Ports: []harness.ServicePort{{Port: 7000, Protocol: "opaque"}}},
		},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client"},
			{Name: "echo-1", Namespace: ns, ServiceAccount: "echo", Endpoints: []harness.Endpoint{
				{Service: "echo", Port: 80, TargetPort: port(t, a.Addr)},
				{Service: "tcpecho", Port: 7000, TargetPort: port(t, tcpAddr)},
			}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	b := &basicMesh{mesh: m, app: a, tcpAddr: tcpAddr}
	// tcpecho is a second port of the app's host: explicit mode forwards
	// only to --app-addr and --app-ports.
	serverArgs := append([]string{"--app-ports", strconv.Itoa(port(t, tcpAddr))}, proxyArgs...)
	b.server = m.StartProxy(harness.ProxySpec{Workload: "echo-1", AppAddr: a.Addr, Args: serverArgs})
	b.client = m.StartProxy(harness.ProxySpec{Workload: "client", Args: proxyArgs})
	waitReady(t, b.server, b.client)
	return b
}

// serveHTTP serves h over HTTP/1.1 on a fresh loopback port until the
// test ends, and returns the address.
func serveHTTP(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// waitReady waits for each proxy to be ready, failing the test with the
// log of the first that is not.
func waitReady(t *testing.T, pxs ...*harness.Proxy) {
	t.Helper()
	for _, px := range pxs {
		if err := px.WaitReady(harness.ReadyTimeout); err != nil {
			t.Fatalf("%v\n%s", err, px.Process.LogTail(30))
		}
	}
}

func port(t *testing.T, addr string) int {
	t.Helper()
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port
}

// meshClient returns an HTTP/1.1 client whose every connection goes to the
// proxy's outbound listener (explicit mode: the destination is the Host).
func meshClient(outbound string, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", outbound)
		},
		MaxIdleConnsPerHost:   64,
		ExpectContinueTimeout: 10 * time.Second,
		DisableCompression:    true,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// h2cClient is meshClient speaking HTTP/2 with prior knowledge.
func h2cClient(outbound string, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", outbound)
		},
		Protocols:          &p,
		DisableCompression: true,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// get GETs path on the echo service through the client and returns status,
// body and headers.
func get(ctx context.Context, c *http.Client, path string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+echoAuthority+path, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// eventually polls cond every 100ms until it returns nil or d passes, and
// returns the last error.
func eventually(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metricAtLeast waits until px's metric (summed over series matching
// labels) reaches want and returns the scrape.
func metricAtLeast(t *testing.T, px *harness.Proxy, name string, labels map[string]string, want float64, d time.Duration) harness.Metrics {
	t.Helper()
	return scrapeAtLeast(t, px.Name, px.AdminAddr, name, labels, want, d)
}

// scrapeAtLeast is metricAtLeast for any admin address.
func scrapeAtLeast(t *testing.T, who, addr, name string, labels map[string]string, want float64, d time.Duration) harness.Metrics {
	t.Helper()
	return waitScrape(t, who, addr, d, func(ms harness.Metrics) error {
		if v := ms.Value(name, labels); v < want {
			return fmt.Errorf("%s%v = %g, want >= %g\nseries:\n%s", name, labels, v, want, ms.Series(name))
		}
		return nil
	})
}

func isTimeoutOrCancel(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "canceled")
}

// notify sends on c without blocking; tests read at most a few values.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
