package outbound_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/policy"
)

// policyServer is a real Policy service: it answers every port with its
// current ServerPolicy and pushes each new one to the open streams.
type policyServer struct {
	apiv1.UnimplementedPolicyServer
	mu      sync.Mutex
	current map[uint32]*apiv1.ServerPolicy
	streams *grpctest.Streams[uint32, *apiv1.ServerPolicy]
}

func newPolicyServer() *policyServer {
	return &policyServer{current: map[uint32]*apiv1.ServerPolicy{}, streams: grpctest.NewStreams[uint32, *apiv1.ServerPolicy]()}
}

func (s *policyServer) WatchInbound(req *apiv1.InboundPolicyRequest, st grpc.ServerStreamingServer[apiv1.ServerPolicy]) error {
	s.mu.Lock()
	var first []*apiv1.ServerPolicy
	if p := s.current[req.GetPort()]; p != nil {
		first = append(first, p)
	}
	s.mu.Unlock()
	return s.streams.Serve(st.Context(), req.GetPort(), first, st.Send)
}

func (s *policyServer) set(port uint16, p *apiv1.ServerPolicy) {
	s.mu.Lock()
	s.current[uint32(port)] = p
	s.mu.Unlock()
	s.streams.Push(uint32(port), p)
}

// authzRig is a mesh pair whose inbound enforces the policies a real
// Policy server on loopback sends, in front of an app that counts what
// reaches it.
type authzRig struct {
	*pair
	policies *policyServer
	stopCtl  func()
	reg      *prometheus.Registry
	appPort  uint16
	requests atomic.Int64  // HTTP requests the app served
	accepted atomic.Int64  // connections the app accepted
	hold     chan struct{} // when set, /hold waits for it to close
	held     atomic.Int64
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func newAuthzRig(t *testing.T, def string, initial *apiv1.ServerPolicy) *authzRig {
	t.Helper()
	return newAuthzRigApp(t, def, initial, nil)
}

// newAuthzRigApp is newAuthzRig with the app's handler wrapped (nil: as is).
func newAuthzRigApp(t *testing.T, def string, initial *apiv1.ServerPolicy, wrap func(http.Handler) http.Handler) *authzRig {
	t.Helper()
	r := &authzRig{policies: newPolicyServer(), reg: prometheus.NewRegistry(), hold: make(chan struct{})}
	ln := listen(t)
	r.appPort = ln.Addr().(*net.TCPAddr).AddrPort().Port()
	if initial != nil {
		r.policies.set(r.appPort, initial)
	}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		if req.URL.Path == "/hold" {
			r.held.Add(1)
			<-r.hold
		}
		_, _ = io.WriteString(w, "app:"+req.URL.Path)
	})
	if wrap != nil {
		h = wrap(h)
	}
	app := &http.Server{Handler: h}
	go func() { _ = app.Serve(countingListener{ln, &r.accepted}) }()
	t.Cleanup(func() { _ = app.Close() })

	addr, stop := grpctest.Serve(t, "127.0.0.1:0", func(gs *grpc.Server) { apiv1.RegisterPolicyServer(gs, r.policies) })
	r.stopCtl = stop
	w, err := inboundpolicy.New(apiv1.NewPolicyClient(grpctest.Dial(t, addr)), inboundpolicy.Options{
		Workload: serverID.String(), DefaultPolicy: def, Ports: []uint16{r.appPort}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	am, err := metrics.NewAuthz(r.reg)
	if err != nil {
		t.Fatal(err)
	}
	enf, err := policy.NewEnforcer(policy.EnforcerConfig{Source: w, Default: def, TrustDomain: serverID.TrustDomain, Metrics: am})
	if err != nil {
		t.Fatal(err)
	}
	r.pair = newPair(t, pairOpts{appListener: ln, plainToApp: true, authorizer: enf})
	return r
}

func (r *authzRig) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := r.client.Get(url(path))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, readAll(t, resp.Body)
}

// plainGet sends a request without mesh TLS straight to the inbound.
func (r *authzRig) plainGet(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.inAddr + path)
	if err != nil {
		t.Fatalf("plain GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, readAll(t, resp.Body)
}

func (r *authzRig) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	return counter(t, r.reg, name, labels)
}

var webOnly = &apiv1.ServerPolicy{Name: "server/books", Access: apiv1.AccessPolicy_DENY, Source: "server",
	Authorizations: []*apiv1.Authorization{{Name: "web", Identities: []string{clientID.String()}}},
	Routes: []*apiv1.InboundRoute{{Name: "demo/health", Matches: []*apiv1.RouteMatch{{PathExact: "/healthz", Method: "GET"}},
		Authorizations: []*apiv1.Authorization{{Name: "open", Unauthenticated: true}}}}}

// TestEnforcement: the policy of a real Policy server decides: the
// allowed identity reaches the app, an unauthenticated caller gets 403
// with the reason and the app sees nothing, a route opens one path to
// everyone; each decision is counted with its labels.
func TestEnforcement(t *testing.T) {
	r := newAuthzRig(t, policy.AllUnauthenticated, webOnly)
	if code, body := r.get(t, "/books"); code != 200 || body != "app:/books" {
		t.Fatalf("web: %d %q, want 200 from the app", code, body)
	}
	before := r.requests.Load()
	code, body := r.plainGet(t, "/books")
	if code != http.StatusForbidden || !strings.Contains(body, "server/books") || !strings.Contains(body, "no authorization allows") {
		t.Fatalf("plain caller: %d %q, want 403 naming the server and reason", code, body)
	}
	if n := r.requests.Load() - before; n != 0 {
		t.Fatalf("the app saw %d denied requests", n)
	}
	if code, body := r.plainGet(t, "/healthz"); code != 200 || body != "app:/healthz" {
		t.Fatalf("plain caller, open route: %d %q", code, body)
	}
	allow := r.metric(t, "trellis_inbound_authz_allow_total", map[string]string{"server": "server/books", "authz": "web", "client_id": clientID.String(), "tls": "true"})
	deny := r.metric(t, "trellis_inbound_authz_deny_total", map[string]string{"server": "server/books", "route": "", "client_id": "", "reason": "unauthorized"})
	route := r.metric(t, "trellis_inbound_authz_allow_total", map[string]string{"route": "demo/health", "authz": "open"})
	if allow != 1 || deny != 1 || route != 1 {
		t.Fatalf("allow %v, deny %v, route allow %v; want 1 each", allow, deny, route)
	}
}

// TestEnforcementGRPCAndTCP: a denied gRPC call gets PERMISSION_DENIED
// with the reason; a denied TCP connection is closed at once; the app
// sees neither.
func TestEnforcementGRPCAndTCP(t *testing.T) {
	r := newAuthzRig(t, policy.AllUnauthenticated, webOnly)
	cc, err := grpc.NewClient(r.inAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = grpc_health_v1.NewHealthClient(cc).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "server/books") {
		t.Fatalf("gRPC: %v, want PermissionDenied naming the server", err)
	}

	conn, err := net.Dial("tcp", r.inAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Not HTTP, not TLS: opaque once detection gives up (1 s).
	if _, err := io.WriteString(conn, "\x00\x01binary protocol\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(make([]byte, 1))
	if n != 0 || !(errors.Is(err, io.EOF) || isReset(err)) {
		t.Fatalf("TCP: read %d bytes, %v; want the connection closed", n, err)
	}
	if a, q := r.accepted.Load(), r.requests.Load(); a != 0 || q != 0 {
		t.Fatalf("the app accepted %d connections and served %d requests, want none", a, q)
	}
	deny := r.metric(t, "trellis_inbound_authz_deny_total", map[string]string{"server": "server/books", "reason": "unauthorized"})
	if deny != 2 {
		t.Fatalf("denials counted %v, want 2", deny)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
}

// TestEnforcementAudit: under audit, a caller no authorization allows
// reaches the app, and the would-be denial is counted.
func TestEnforcementAudit(t *testing.T) {
	audit := &apiv1.ServerPolicy{Name: "server/books", Access: apiv1.AccessPolicy_AUDIT, Source: "server",
		Authorizations: []*apiv1.Authorization{{Name: "other", Identities: []string{serverID.String()}}}}
	r := newAuthzRig(t, policy.AllUnauthenticated, audit)
	if code, _ := r.get(t, "/a"); code != 200 {
		t.Fatalf("web under audit: %d", code)
	}
	if code, _ := r.plainGet(t, "/a"); code != 200 {
		t.Fatalf("plain under audit: %d", code)
	}
	if n := r.requests.Load(); n != 2 {
		t.Fatalf("the app served %d, want 2", n)
	}
	if v := r.metric(t, "trellis_inbound_authz_audit_total", map[string]string{"server": "server/books"}); v != 2 {
		t.Fatalf("audited %v, want 2", v)
	}
	if v := r.metric(t, "trellis_inbound_authz_deny_total", nil); v != 0 {
		t.Fatalf("denied %v under audit", v)
	}
}

// TestEnforcementLiveChange: a change pushed while requests are in flight
// applies to the next requests; the ones in flight complete. Then the
// controller goes away and decisions stay those of the last policy.
func TestEnforcementLiveChange(t *testing.T) {
	r := newAuthzRig(t, policy.AllUnauthenticated, webOnly)
	const inflight = 8
	results := make(chan int, inflight)
	for range inflight {
		go func() {
			resp, err := r.client.Get(url("/hold"))
			if err != nil {
				results <- -1
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			results <- resp.StatusCode
		}()
	}
	eventually(t, "requests held in the app", func() bool { return r.held.Load() == inflight })

	revoked := &apiv1.ServerPolicy{Name: "server/books", Access: apiv1.AccessPolicy_DENY, Source: "server",
		Authorizations: []*apiv1.Authorization{{Name: "only-books", Identities: []string{serverID.String()}}}}
	start := time.Now()
	r.policies.set(r.appPort, revoked)
	eventually(t, "the revocation", func() bool { code, _ := r.get(t, "/x"); return code == http.StatusForbidden })
	t.Logf("revocation took effect in %v", time.Since(start))
	close(r.hold)
	for range inflight {
		if code := <-results; code != 200 {
			t.Fatalf("an in-flight request ended with %d, want 200", code)
		}
	}

	r.stopCtl()
	for i := range 20 {
		if code, body := r.get(t, fmt.Sprintf("/after/%d", i)); code != http.StatusForbidden {
			t.Fatalf("controller gone: %d %q, want the last policy's 403", code, body)
		}
	}
	if code, _ := r.plainGet(t, "/x"); code != http.StatusForbidden {
		t.Fatalf("controller gone, plain caller: %d", code)
	}
}

// TestEnforcementNeverAnswered: a port the controller never answered for
// has the configured default (deny), never "allow all".
func TestEnforcementNeverAnswered(t *testing.T) {
	r := newAuthzRig(t, policy.Deny, nil)
	r.stopCtl()
	if code, body := r.get(t, "/x"); code != http.StatusForbidden || !strings.Contains(body, "default:deny") {
		t.Fatalf("mesh caller: %d %q, want the default's 403", code, body)
	}
	if code, _ := r.plainGet(t, "/x"); code != http.StatusForbidden {
		t.Fatalf("plain caller: %d", code)
	}
	if n := r.requests.Load(); n != 0 {
		t.Fatalf("the app served %d", n)
	}
}

// connect opens a CONNECT tunnel to the service through the client proxy
// and sends one HTTP request in it: the status of the CONNECT, and the
// first line the app answered in the tunnel ("" if none).
func (r *authzRig) connect(t *testing.T) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", r.outAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", service, service)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT: %v", err)
	}
	if resp.StatusCode != 200 {
		return resp.StatusCode, ""
	}
	fmt.Fprintf(c, "GET /tunnel HTTP/1.1\r\nHost: app\r\n\r\n")
	line, _ := br.ReadString('\n')
	return resp.StatusCode, line
}

// TestEnforcementMeshTunnel: a mesh opaque stream (CONNECT through the
// client proxy) is decided per connection with the caller's identity:
// allowed, it reaches the app; revoked, the app accepts no connection.
func TestEnforcementMeshTunnel(t *testing.T) {
	r := newAuthzRig(t, policy.AllUnauthenticated, webOnly)
	if _, line := r.connect(t); !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("allowed tunnel: app answered %q", line)
	}
	accepted := r.accepted.Load()
	r.policies.set(r.appPort, &apiv1.ServerPolicy{Name: "server/books", Access: apiv1.AccessPolicy_DENY, Source: "server"})
	eventually(t, "the revocation", func() bool { code, _ := r.get(t, "/x"); return code == http.StatusForbidden })
	before := r.accepted.Load()
	code, line := r.connect(t)
	if line != "" {
		t.Fatalf("denied tunnel: CONNECT %d, the app answered %q", code, line)
	}
	if n := r.accepted.Load() - before; n != 0 {
		t.Fatalf("the app accepted %d connections of a denied tunnel", n)
	}
	if v := r.metric(t, "trellis_inbound_authz_deny_total", map[string]string{"client_id": clientID.String(), "route": ""}); v < 2 {
		t.Fatalf("denials %v, want the request and the tunnel", v)
	}
	t.Logf("allowed tunnel: app accepted %d; denied tunnel: CONNECT status %d", accepted, code)
}
