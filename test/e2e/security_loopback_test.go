package e2e

// Security regression suite for issue 9, finding 1: a mesh peer with a
// genuine certificate must not reach any port of the server's host other
// than its application, whatever target port it names. The peer here is a
// real client proxy: it sends trellis-target-port (HTTP) and the opaque
// transport header's port from the endpoint's targetPort in the store, which
// is exactly what a hostile workload can put in its own requests.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
)

// secretListener is a loopback server of the "pod" that is not the app: it
// counts every connection it accepts, and answers HTTP (or a banner).
type secretListener struct {
	Addr     string
	accepted atomic.Int64
}

func startSecret(t *testing.T) *secretListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &secretListener{Addr: ln.Addr().String()}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "secret\n")
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.accepted.Add(1)
			}
		},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// loopbackMesh is a server workload ("pod") whose proxy's admin and
// outbound ports are known before the store is written, a secret loopback
// listener beside its app, and a client workload whose store says the
// server's service "X" lives at each of those ports.
type loopbackMesh struct {
	mesh           *harness.Mesh
	app            *app
	secret         *secretListener
	client, server *harness.Proxy
	// targets maps a service name to the port the client will name.
	targets map[string]int
}

// Services of the loopback mesh: each names one port of the server's host.
const (
	svcApp         = "app"        // the application: must work
	svcAdmin       = "admin"      // the server proxy's admin port
	svcOutbound    = "outbound"   // the server proxy's outbound listener
	svcInbound     = "inbound"    // the server proxy's own inbound listener
	svcSecret      = "secret"     // another loopback server of the pod
	svcCtrlAdmin   = "ctrl-admin" // the controller's admin port (same host in local mode)
	svcAdminTCP    = "admin-tcp"  // the admin port, as an opaque stream
	svcSecretTCP   = "secret-tcp" // the secret server, as an opaque stream
	svcOutboundTCP = "outbound-tcp"
	svcTap         = "tap" // the server proxy's tap listener
)

// lmOptions change the server proxy of a loopback mesh.
type lmOptions struct {
	args []string
	// appPorts lists these services' ports in --app-ports.
	appPorts []string
}

func newLoopbackMesh(t *testing.T, o lmOptions) *loopbackMesh {
	t.Helper()
	requireBinaries(t)
	lm := &loopbackMesh{app: startApp(t, "server"), secret: startSecret(t)}
	serverIn, serverAdmin, serverOut, serverTap := ports.Addr(t), ports.Addr(t), ports.Addr(t), ports.Addr(t)
	store := harness.Store{Workloads: []harness.Workload{
		{Name: "client", Namespace: ns, ServiceAccount: "client"},
		{Name: "server", Namespace: ns, ServiceAccount: "server", ProxyAddr: serverIn},
	}}
	lm.mesh = harness.NewMesh(t, bins, &ports, store)
	lm.targets = map[string]int{
		svcApp: port(t, lm.app.Addr), svcAdmin: port(t, serverAdmin), svcOutbound: port(t, serverOut),
		svcInbound: port(t, serverIn), svcSecret: port(t, lm.secret.Addr), svcCtrlAdmin: port(t, lm.mesh.ControllerAdminAddr),
		svcAdminTCP: port(t, serverAdmin), svcSecretTCP: port(t, lm.secret.Addr), svcOutboundTCP: port(t, serverOut),
		svcTap: port(t, serverTap),
	}
	store = lm.mesh.Store()
	for name, p := range lm.targets {
		sp := harness.ServicePort{Port: 80}
		if strings.HasSuffix(name, "-tcp") {
			sp = harness.ServicePort{Port: 7000, Protocol: "opaque"}
		}
		store.Services = append(store.Services, harness.Service{Name: name, Namespace: ns, Ports: []harness.ServicePort{sp}})
		store.Workloads[1].Endpoints = append(store.Workloads[1].Endpoints, harness.Endpoint{Service: name, Port: sp.Port, TargetPort: p})
	}
	lm.mesh.WriteStore(store)
	lm.mesh.StartController()
	args := append([]string{"--admin-addr", serverAdmin, "--outbound-addr", serverOut, "--tap-addr", serverTap}, o.args...)
	if len(o.appPorts) > 0 {
		var ps []string
		for _, svc := range o.appPorts {
			ps = append(ps, strconv.Itoa(lm.targets[svc]))
		}
		args = append(args, "--app-ports", strings.Join(ps, ","))
	}
	lm.server = lm.mesh.StartProxy(harness.ProxySpec{Workload: "server", AppAddr: lm.app.Addr, Args: args})
	lm.server.AdminAddr, lm.server.OutboundAddr, lm.server.TapAddr = serverAdmin, serverOut, serverTap
	lm.client = lm.mesh.StartProxy(harness.ProxySpec{Workload: "client"})
	waitReady(t, lm.server, lm.client)
	return lm
}

// authority of a service of the loopback mesh.
func lmAuthority(svc string) string {
	if strings.HasSuffix(svc, "-tcp") {
		return svc + "." + ns + ":7000"
	}
	return svc + "." + ns + ":80"
}

// do sends method path to svc through the client proxy.
func (lm *loopbackMesh) do(t *testing.T, method, svc, path string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+lmAuthority(svc)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := meshClient(lm.client.OutboundAddr, 20*time.Second).Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, svc, path, err)
	}
	defer resp.Body.Close()
	// Enough to see what answered, not a whole /metrics page.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	return resp, string(b)
}

// requireAlive fails unless the server proxy still runs and is ready, and
// its app is still reachable through the mesh.
func (lm *loopbackMesh) requireAlive(t *testing.T) {
	t.Helper()
	if lm.server.Process.Exited() {
		t.Fatalf("the server proxy exited\n%s", lm.server.Process.LogTail(20))
	}
	if err := lm.server.WaitReady(5 * time.Second); err != nil {
		t.Fatalf("server proxy not ready: %v\n%s", err, lm.server.Process.LogTail(20))
	}
	resp, body := lm.do(t, http.MethodGet, svcApp, "/echo")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the app through the mesh: %s %q", resp.Status, body)
	}
}

// requireRefusalLogged waits for the server's log to name the client's
// identity and the refused port.
func (lm *loopbackMesh) requireRefusalLogged(t *testing.T, port int) {
	t.Helper()
	want := fmt.Sprintf("target port %d refused", port)
	err := eventually(10*time.Second, func() error {
		for _, line := range strings.Split(lm.server.Process.LogTail(400), "\n") {
			if strings.Contains(line, "inbound: refused") && strings.Contains(line, identityOf("client")) && strings.Contains(line, want) {
				return nil
			}
		}
		return fmt.Errorf("no refusal line naming %s and %q", identityOf("client"), want)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, lm.server.Process.LogTail(30))
	}
}

// requireOneLogLine fails unless the refusals of the client over protocol
// produced exactly one log line: a peer cannot flood the log.
func (lm *loopbackMesh) requireOneLogLine(t *testing.T, protocol string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(lm.server.Process.LogTail(1000), "\n") {
		if strings.Contains(line, "inbound: refused") && strings.Contains(line, identityOf("client")) && strings.Contains(line, "protocol="+protocol+" ") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d refusal lines for the client over %s within a minute, want 1 (rate-limited)\n%s", n, protocol, lm.server.Process.LogTail(30))
	}
}

// refusedCount is the server's trellis_inbound_refused_total for the client.
func (lm *loopbackMesh) refusedCount(t *testing.T, protocol, reason string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := lm.server.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ms.Value("trellis_inbound_refused_total", map[string]string{
		"peer_identity": identityOf("client"), "protocol": protocol, "reason": reason})
}

// TestSecurityLoopbackHTTP: a mesh peer naming, with trellis-target-port,
// any port of the server's host but the app's gets 403 with trellis-error
// naming the port; nothing reaches that port; the server proxy keeps
// running (POST /shutdown through the mesh does nothing); each refusal is
// counted and logged with the caller's identity; the app is still served.
func TestSecurityLoopbackHTTP(t *testing.T) {
	lm := newLoopbackMesh(t, lmOptions{})
	lm.requireAlive(t)
	cases := []struct {
		svc, method, path string
	}{
		{svcAdmin, http.MethodGet, "/metrics"},
		{svcAdmin, http.MethodPost, "/shutdown"},
		{svcOutbound, http.MethodGet, "/echo"},
		{svcInbound, http.MethodGet, "/echo"},
		{svcSecret, http.MethodGet, "/"},
		{svcCtrlAdmin, http.MethodGet, "/metrics"},
		{svcTap, http.MethodPost, "/trellis.api.v1.Tap/Observe"},
	}
	for i, tc := range cases {
		t.Run(tc.svc+tc.path, func(t *testing.T) {
			p := lm.targets[tc.svc]
			resp, body := lm.do(t, tc.method, tc.svc, tc.path)
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("%s %s (port %d): got %s %q, want 403", tc.method, tc.svc, p, resp.Status, body)
			}
			if te := resp.Header.Get("Trellis-Error"); !strings.Contains(te, fmt.Sprintf("target port %d refused", p)) {
				t.Errorf("trellis-error %q does not name port %d", te, p)
			}
			if i == 0 {
				// Later refusals of the same caller and reason are
				// counted but not logged within the minute.
				lm.requireRefusalLogged(t, p)
			}
			if got := lm.refusedCount(t, "http", "forbidden_port"); got < float64(i+1) {
				t.Errorf("trellis_inbound_refused_total{protocol=http,reason=forbidden_port} = %v after %d refusals", got, i+1)
			}
			lm.requireAlive(t)
		})
	}
	if n := lm.secret.accepted.Load(); n != 0 {
		t.Errorf("the secret loopback server accepted %d connections from the mesh", n)
	}
	lm.requireOneLogLine(t, "http")
}

// TestSecurityLoopbackOpaque is the same through opaque mesh streams (the
// transport header's port): the stream is closed before reaching the port,
// counted and logged; an HTTP/1 POST /shutdown written into a tunnel to the
// admin port does not stop the proxy.
func TestSecurityLoopbackOpaque(t *testing.T) {
	lm := newLoopbackMesh(t, lmOptions{})
	for i, svc := range []string{svcSecretTCP, svcAdminTCP, svcOutboundTCP} {
		t.Run(svc, func(t *testing.T) {
			p := lm.targets[svc]
			conn, br := connectTCP(t, lm.client.OutboundAddr, lmAuthority(svc))
			defer conn.Close()
			req := "POST /shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
			_, _ = io.WriteString(conn, req)
			got, err := io.ReadAll(br)
			if len(got) > 0 {
				t.Fatalf("port %d answered through the mesh: %q (err %v)", p, got, err)
			}
			if i == 0 {
				lm.requireRefusalLogged(t, p)
			}
			if got := lm.refusedCount(t, "opaque", "forbidden_port"); got < float64(i+1) {
				t.Errorf("trellis_inbound_refused_total{protocol=opaque,reason=forbidden_port} = %v after %d refusals", got, i+1)
			}
			lm.requireAlive(t)
		})
	}
	if n := lm.secret.accepted.Load(); n != 0 {
		t.Errorf("the secret loopback server accepted %d connections from the mesh", n)
	}
	lm.requireOneLogLine(t, "opaque")
}

// TestSecurityLoopbackAppPorts: in explicit mode another port of the app's
// host is reachable once listed in --app-ports; the proxy's own ports stay
// refused even when listed there.
func TestSecurityLoopbackAppPorts(t *testing.T) {
	lm := newLoopbackMesh(t, lmOptions{appPorts: []string{svcSecret, svcAdmin, svcTap}})
	if resp, body := lm.do(t, http.MethodGet, svcSecret, "/"); resp.StatusCode != http.StatusOK || body != "secret\n" {
		t.Fatalf("port listed in --app-ports: %s %q, want 200 \"secret\"", resp.Status, body)
	}
	if resp, body := lm.do(t, http.MethodGet, svcAdmin, "/metrics"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("admin port listed in --app-ports: %s %q, want 403", resp.Status, body)
	}
	lm.requireRefusalLogged(t, lm.targets[svcAdmin])
	if resp, body := lm.do(t, http.MethodPost, svcTap, "/trellis.api.v1.Tap/Observe"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("tap port listed in --app-ports: %s %q, want 403", resp.Status, body)
	}
}

// TestSecurityAllAuthenticated: with --default-inbound-policy
// all-authenticated, plain HTTP gets 403 with trellis-error, raw TCP and
// non-mesh TLS are closed unanswered, each counted; a mesh peer is served.
func TestSecurityAllAuthenticated(t *testing.T) {
	lm := newLoopbackMesh(t, lmOptions{args: []string{"--default-inbound-policy", "all-authenticated"}})
	lm.requireAlive(t)
	in := lm.server.InboundAddr

	resp, err := http.Get("http://" + in + "/echo")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(resp.Header.Get("Trellis-Error"), "mesh mTLS required") {
		t.Fatalf("plain HTTP: %s trellis-error=%q %q, want 403 naming mTLS", resp.Status, resp.Header.Get("Trellis-Error"), body)
	}

	t.Run("raw-tcp", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", in, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		// Not HTTP, not TLS: the app (an HTTP server) would answer 400.
		_, _ = io.WriteString(c, "\x00\x01hello raw tcp\r\n\r\n")
		if got, _ := io.ReadAll(c); len(got) > 0 {
			t.Fatalf("raw TCP was answered: %q", got)
		}
	})
	t.Run("non-mesh-tls", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", in, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		tc := tls.Client(c, &tls.Config{ServerName: "example.com", InsecureSkipVerify: true}) //nolint:gosec // any answer at all is the failure
		defer tc.Close()
		if err := tc.Handshake(); err == nil {
			t.Fatal("a TLS handshake for example.com completed through the inbound port")
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := lm.server.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := ms.Value("trellis_inbound_refused_total", map[string]string{"reason": "unauthenticated", "protocol": "http"}); n < 1 {
		t.Errorf("unauthenticated http refusals = %v\n%s", n, ms.Series("trellis_inbound_refused_total"))
	}
	if n := ms.Value("trellis_inbound_refused_total", map[string]string{"reason": "unauthenticated", "protocol": "opaque"}); n < 2 {
		t.Errorf("unauthenticated opaque refusals = %v, want 2\n%s", n, ms.Series("trellis_inbound_refused_total"))
	}
	lm.requireAlive(t)
}
