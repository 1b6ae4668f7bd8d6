package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/echo"
	"github.com/trellis-mesh/trellis/demoapp/httpserve"
	"github.com/trellis-mesh/trellis/test/harness"
)

// termApp is an echo app that can be terminated the way its container is on
// SIGTERM: the listener closes at once, requests in flight finish, idle
// keep-alive connections close, then the server is gone.
type termApp struct {
	*app
	term func() // graceful shutdown; returns when the server has stopped
}

func startTermApp(t *testing.T, name string) *termApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &app{Name: name, Addr: ln.Addr().String(), slowStarted: make(chan struct{}, 1000), cancelled: make(chan struct{}, 1000)}
	log := slog.New(slog.DiscardHandler)
	h := echo.NewHandler(echo.Config{Name: name, Log: log})
	srv := httpserve.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.served.Add(1)
		h.ServeHTTP(w, r)
	}), true, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = httpserve.Serve(ctx, srv, ln, h.Stop)
	}()
	var once sync.Once
	term := func() { once.Do(func() { cancel(); <-done }) }
	a.stop = func() { cancel(); _ = srv.Close(); <-done }
	t.Cleanup(a.stop)
	return &termApp{app: a, term: term}
}

// mixedLoad sends, at a fixed rate until stopped, a mix of requests through
// the client proxy: GET /slow (so that requests are in flight at every
// moment) and POST /echo with a small body (not idempotent: it may be
// retried only when the server side proves the app never saw it). Every
// request is counted; a failure is any error, non-200 status or wrong body.
type mixedLoad struct {
	res  *loadResult
	stop chan struct{}
	done chan struct{}
}

func startMixedLoad(c *http.Client, rps int, slowMS int) *mixedLoad {
	l := &mixedLoad{res: &loadResult{servedBy: map[string]int{}}, stop: make(chan struct{}), done: make(chan struct{})}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 48 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				l.res.sent.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				err := mixedRequest(ctx, c, n, slowMS, l.res)
				cancel()
				if err != nil {
					l.res.fail(fmt.Sprintf("%s: request %d: %v", time.Now().Format("15:04:05.000"), n, err))
					continue
				}
				l.res.ok.Add(1)
			}
		}()
	}
	go func() {
		defer close(l.done)
		defer wg.Wait()
		defer close(jobs)
		tick := time.NewTicker(time.Second / time.Duration(rps))
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
				select {
				case jobs <- n:
				case <-l.stop:
					return
				}
			}
		}
	}()
	return l
}

func mixedRequest(ctx context.Context, c *http.Client, n, slowMS int, res *loadResult) error {
	var req *http.Request
	var body []byte
	var err error
	if n%2 == 0 {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/slow?ms=%d", echoAuthority, slowMS), nil)
	} else {
		body = bytes.Repeat([]byte(fmt.Sprintf("request %08d;", n)), 64) // ~1.1 KiB
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, "http://"+echoAuthority+"/echo", bytes.NewReader(body))
	}
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: reading body: %w", req.Method, req.URL.Path, err)
	}
	by := resp.Header.Get("Echo-Served-By")
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s, served by %q, trellis-error %q, body %q", req.Method, req.URL.Path, resp.Status, by, resp.Header.Get("Trellis-Error"), truncate(got, 200))
	}
	if body != nil && !bytes.Equal(got, body) {
		return fmt.Errorf("POST /echo: body of %d bytes came back as %d bytes, served by %q", len(body), len(got), by)
	}
	res.mu.Lock()
	res.servedBy[by]++
	res.mu.Unlock()
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// terminationOrder is one way an endpoint goes away. In Kubernetes with
// the proxy as a native sidecar the app gets SIGTERM first and the proxy
// only after the app exited, while the endpoint's removal reaches client
// proxies asynchronously, at any point of that sequence.
type terminationOrder struct {
	name string
	run  func(t *testing.T, e *termEndpoint, remove func())
}

type termEndpoint struct {
	app   *termApp
	proxy *harness.Proxy
}

func (e *termEndpoint) stopProxy(t *testing.T) {
	t.Helper()
	if err := e.proxy.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if exited, _ := e.proxy.Process.Wait(15 * time.Second); !exited {
		t.Errorf("%s's proxy did not exit within 15s of SIGTERM", e.proxy.Name)
	}
}

var terminationOrders = []terminationOrder{
	{
		// The rollout case: the app exits while its proxy runs on and
		// client proxies still send to it; the endpoint is removed a while
		// later, then the proxy is stopped.
		name: "app-exits-before-removal",
		run: func(t *testing.T, e *termEndpoint, remove func()) {
			e.app.term()
			time.Sleep(1500 * time.Millisecond)
			remove()
			e.stopProxy(t)
		},
	},
	{
		// The proxy drains (GOAWAY, listener closed) while client proxies
		// still have the endpoint; its removal comes after the proxy exited.
		name: "proxy-drains-before-removal",
		run: func(t *testing.T, e *termEndpoint, remove func()) {
			e.app.term()
			e.stopProxy(t)
			time.Sleep(time.Second)
			remove()
		},
	},
	{
		// The proxy drains first, with requests in flight to a live app:
		// they must finish, and new streams racing the GOAWAY must land
		// elsewhere.
		name: "proxy-drains-in-flight",
		run: func(t *testing.T, e *termEndpoint, remove func()) {
			e.stopProxy(t)
			time.Sleep(500 * time.Millisecond)
			e.app.term()
			remove()
		},
	},
}

// TestEndpointTerminatedUnderLoad terminates one of three endpoints under a
// steady mixed load, in each of the orders Kubernetes may produce: no request may fail, and none may be served twice (the
// POST bodies are checked end to end).
func TestEndpointTerminatedUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	requireBinaries(t)
	for _, order := range terminationOrders {
		t.Run(order.name, func(t *testing.T) { testEndpointTerminated(t, order) })
	}
}

func testEndpointTerminated(t *testing.T, order terminationOrder) {
	names := []string{"echo-1", "echo-2", "echo-3"}
	apps := make([]*termApp, len(names))
	store := harness.Store{
		Services:  []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{{Name: "client", Namespace: ns, ServiceAccount: "client"}},
	}
	for i, name := range names {
		apps[i] = startTermApp(t, name)
		store.Workloads = append(store.Workloads, harness.Workload{Name: name, Namespace: ns, ServiceAccount: "echo",
			Endpoints: []harness.Endpoint{{Service: "echo", Port: 80, TargetPort: port(t, apps[i].Addr)}}})
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	servers := make([]*harness.Proxy, len(names))
	for i, name := range names {
		servers[i] = m.StartProxy(harness.ProxySpec{Workload: name, AppAddr: apps[i].Addr})
	}
	client := m.StartProxy(harness.ProxySpec{Workload: "client"})
	waitReady(t, append(servers, client)...)
	c := meshClient(client.OutboundAddr, 20*time.Second)
	defer c.CloseIdleConnections()
	if resp, _, err := get(t.Context(), c, "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	endpointsOf := map[string]string{"dst_service": echoAuthority}
	waitGauge(t, client, "trellis_endpoints", endpointsOf, 3, 10*time.Second)

	l := startMixedLoad(c, 150, 50)
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			close(l.stop)
			<-l.done
		}
	}
	t.Cleanup(stopLoad)

	victim := &termEndpoint{app: apps[0], proxy: servers[0]}
	time.Sleep(1500 * time.Millisecond)
	before := victim.app.served.Load()
	remove := func() {
		st := m.Store()
		st.Workload(names[0]).Endpoints = nil
		m.WriteStore(st)
		waitGauge(t, client, "trellis_endpoints", endpointsOf, 2, 10*time.Second)
	}
	t.Logf("terminating %s (%s)", names[0], order.name)
	order.run(t, victim, remove)
	time.Sleep(time.Second)
	stopLoad()

	r := l.res
	r.check(t)
	if before == 0 {
		t.Errorf("%s served nothing before its termination: the test did not exercise a live endpoint", names[0])
	}
	for _, a := range apps[1:] {
		if a.served.Load() == 0 {
			t.Errorf("%s served nothing", a.Name)
		}
	}
	if ms, err := client.Metrics(context.Background()); err == nil {
		t.Logf("client proxy:\n%s\n%s", ms.Series("trellis_retries_total"), ms.Series("trellis_request_errors_total"))
	}
	if t.Failed() {
		for _, px := range append(servers, client) {
			t.Logf("%s log tail:\n%s", px.Name, px.Process.LogTail(15))
		}
		if ms, err := client.Metrics(context.Background()); err == nil {
			t.Logf("client responses:\n%s", strings.TrimSpace(ms.Series("trellis_responses_total")))
		}
	}
}
