package e2e

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestIdentities checks that each proxy records the other side's identity
// as proven by mTLS.
func TestIdentities(t *testing.T) {
	b := newBasicMesh(t)
	c := meshClient(b.client.OutboundAddr, 10*time.Second)
	defer c.CloseIdleConnections()
	resp, _, err := get(t.Context(), c, "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /: %v %v", resp, err)
	}
	clientID, serverID := identityOf("client"), identityOf("echo")
	if b.client.Identity != clientID || b.server.Identity != serverID {
		t.Fatalf("harness identities %s %s", b.client.Identity, b.server.Identity)
	}
	metricAtLeast(t, b.server, "trellis_requests_total", map[string]string{
		"direction": "inbound", "peer_identity": clientID, "tls": "true",
	}, 1, 5*time.Second)
	metricAtLeast(t, b.client, "trellis_requests_total", map[string]string{
		"direction": "outbound", "peer_identity": serverID, "tls": "true", "dst_service": echoAuthority,
	}, 1, 5*time.Second)
	// The TCP level agrees, for an opaque stream.
	conn, br := connectTCP(t, b.client.OutboundAddr, tcpAuthority)
	if _, err := io.WriteString(conn, "x"); err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(br); err != nil || string(got) != "x" {
		t.Fatalf("opaque echo: %q %v", got, err)
	}
	conn.Close()
	metricAtLeast(t, b.server, "trellis_tcp_open_total", map[string]string{
		"direction": "inbound", "peer_identity": clientID, "tls": "true",
	}, 1, 5*time.Second)
	metricAtLeast(t, b.client, "trellis_tcp_open_total", map[string]string{
		"direction": "outbound", "peer_identity": serverID, "tls": "true", "dst_service": tcpAuthority,
	}, 1, 5*time.Second)
}
