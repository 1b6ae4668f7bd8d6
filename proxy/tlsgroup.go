package proxy

import (
	"context"
	"net"

	"github.com/trellis-mesh/trellis/proxy/metrics"
	"google.golang.org/grpc/credentials"
)

// groupCounting wraps the controller connection's TLS credentials to count
// each completed handshake by its key exchange group
// (trellis_tls_handshakes_total{direction="control_plane"}): gRPC does the
// handshake itself, so this is where its ConnectionState is visible.
type groupCounting struct {
	credentials.TransportCredentials
	m *metrics.Metrics
}

func (g groupCounting) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := g.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err == nil {
		if ti, ok := info.(credentials.TLSInfo); ok {
			g.m.Handshake(metrics.DirControlPlane, ti.State.CurveID)
		}
	}
	return conn, info, err
}

// Clone keeps the wrapper (gRPC clones credentials per address).
func (g groupCounting) Clone() credentials.TransportCredentials {
	return groupCounting{TransportCredentials: g.TransportCredentials.Clone(), m: g.m}
}
