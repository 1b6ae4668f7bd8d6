package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"github.com/trellis-mesh/trellis/test/harness"
)

// Enforcement with the real controller (local mode) and proxies: the
// controller's answer for the app port is its default, so the server
// proxy's --default-inbound-policy decides (docs/policy.md, "How the proxy
// decides"). Each test counts what reached the app.

// plainHTTP sends a request without mesh TLS straight to the server proxy.
func (lm *loopbackMesh) plainHTTP(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + lm.server.InboundAddr + path)
	if err != nil {
		t.Fatalf("plain GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
	return resp, string(b)
}

// meshGRPC calls the app's Echo.Unary through the client proxy.
func (lm *loopbackMesh) meshGRPC(t *testing.T) error {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+lm.client.OutboundAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(lmAuthority(svcApp)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = demopb.NewEchoClient(cc).Unary(ctx, &demopb.EchoRequest{Payload: []byte("ping")})
	return err
}

// rawTCPClosed sends bytes that are neither HTTP nor TLS to the server
// proxy and reports whether the connection was closed unanswered.
func (lm *loopbackMesh) rawTCPClosed(t *testing.T) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", lm.server.InboundAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	_, _ = io.WriteString(c, "\x00\x01hello raw tcp\r\n\r\n")
	got, _ := io.ReadAll(c)
	return len(got) == 0
}

func (lm *loopbackMesh) metrics(t *testing.T) harness.Metrics {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := lm.server.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// TestAuthzDefaultDeny: under deny, a mesh caller (HTTP and gRPC), a plain
// caller and raw TCP are all refused (403 naming the reason,
// PERMISSION_DENIED, closed) and the app sees none of them.
func TestAuthzDefaultDeny(t *testing.T) {
	lm := newLoopbackMesh(t, lmOptions{args: []string{"--default-inbound-policy", "deny"}})
	const n = 20
	for range n {
		resp, body := lm.do(t, http.MethodGet, svcApp, "/echo")
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "default:deny") || !strings.Contains(body, identityOf("client")) {
			t.Fatalf("mesh caller: %s %q, want 403 naming the default and the caller", resp.Status, body)
		}
	}
	if resp, body := lm.plainHTTP(t, "/echo"); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "default:deny") {
		t.Fatalf("plain caller: %s %q", resp.Status, body)
	}
	err := lm.meshGRPC(t)
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "default:deny") {
		t.Fatalf("gRPC: %v, want PermissionDenied naming the default", err)
	}
	if !lm.rawTCPClosed(t) {
		t.Fatal("raw TCP was answered")
	}
	if got := lm.app.served.Load(); got != 0 {
		t.Fatalf("the app served %d requests, want 0", got)
	}
	ms := lm.metrics(t)
	mesh := ms.Value("trellis_inbound_authz_deny_total", map[string]string{"server": "default:deny", "client_id": identityOf("client"), "tls": "true", "reason": "unauthorized"})
	plain := ms.Value("trellis_inbound_authz_deny_total", map[string]string{"server": "default:deny", "client_id": "", "tls": "false"})
	if mesh != n+1 || plain != 2 {
		t.Fatalf("denials: mesh %v (want %d), plain %v (want 2)\n%s", mesh, n+1, plain, ms.Series("trellis_inbound_authz_deny_total"))
	}
	t.Logf("sent %d mesh HTTP + 1 gRPC + 1 plain HTTP + 1 TCP; denied %v; reached the app 0", n, mesh+plain)
}

// TestAuthzDefaultAudit: under audit, nobody is refused and every call is
// counted as a would-be denial.
func TestAuthzDefaultAudit(t *testing.T) {
	lm := newLoopbackMesh(t, lmOptions{args: []string{"--default-inbound-policy", "audit"}})
	const n = 20
	for range n {
		if resp, body := lm.do(t, http.MethodGet, svcApp, "/echo"); resp.StatusCode != http.StatusOK {
			t.Fatalf("mesh caller under audit: %s %q", resp.Status, body)
		}
	}
	if resp, body := lm.plainHTTP(t, "/echo"); resp.StatusCode != http.StatusOK {
		t.Fatalf("plain caller under audit: %s %q", resp.Status, body)
	}
	if got := lm.app.served.Load(); got != n+1 {
		t.Fatalf("the app served %d, want %d", got, n+1)
	}
	ms := lm.metrics(t)
	audited := ms.Value("trellis_inbound_authz_audit_total", map[string]string{"server": "default:audit"})
	denied := ms.Value("trellis_inbound_authz_deny_total", nil)
	if audited != n+1 || denied != 0 {
		t.Fatalf("audited %v (want %d), denied %v (want 0)\n%s", audited, n+1, denied, ms.Series("trellis_inbound_authz_audit_total"))
	}
}

// TestAuthzDefaultClusterAuthenticated: a mesh peer of the trust domain
// is let in by the access policy, a plain caller is refused.
func TestAuthzDefaultClusterAuthenticated(t *testing.T) {
	lm := newLoopbackMesh(t, lmOptions{args: []string{"--default-inbound-policy", "cluster-authenticated"}})
	lm.requireAlive(t)
	if err := lm.meshGRPC(t); err != nil {
		t.Fatalf("gRPC from a mesh peer: %v", err)
	}
	served := lm.app.served.Load()
	if resp, body := lm.plainHTTP(t, "/echo"); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "mesh mTLS required") {
		t.Fatalf("plain caller: %s %q", resp.Status, body)
	}
	if got := lm.app.served.Load(); got != served {
		t.Fatalf("the refused caller reached the app")
	}
	ms := lm.metrics(t)
	allowed := ms.Value("trellis_inbound_authz_allow_total", map[string]string{"server": "default:cluster-authenticated", "authz": "access:cluster-authenticated", "client_id": identityOf("client")})
	denied := ms.Value("trellis_inbound_authz_deny_total", map[string]string{"reason": "unauthenticated", "client_id": ""})
	if allowed != 2 || denied != 1 {
		t.Fatalf("allowed %v (want 2), denied %v (want 1)\n%s\n%s", allowed, denied, ms.Series("trellis_inbound_authz_allow_total"), ms.Series("trellis_inbound_authz_deny_total"))
	}
}
