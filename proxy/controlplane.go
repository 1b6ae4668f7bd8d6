package proxy

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/origdst"
	"github.com/trellis-mesh/trellis/proxy/outbound"
	"github.com/trellis-mesh/trellis/proxy/routes"
)

// newWatchers starts the policy watches of the configured app ports and
// the routes client. They are watched for real even while the data path
// does not enforce them yet (docs/proxy.md, "What the proxy watches").
func newWatchers(conn *grpc.ClientConn, cfg Config, local identity.ID, reg prometheus.Registerer, log *slog.Logger) (*inboundpolicy.Watcher, *routes.Watcher, error) {
	policies, err := inboundpolicy.New(apiv1.NewPolicyClient(conn), inboundpolicy.Options{
		Workload: local.String(), DefaultPolicy: cfg.DefaultInboundPolicy, Ports: configuredAppPorts(cfg),
		Registerer: reg, Logger: log.With("component", "policy"),
	})
	if err != nil {
		return nil, nil, err
	}
	rt := routes.New(apiv1.NewDestinationClient(conn), routes.Options{
		CallerIdentity: local.String(), Registerer: reg, Logger: log.With("component", "routes"),
	})
	return policies, rt, nil
}

// configuredAppPorts are the inbound ports the configuration names, whose
// policy is watched for the proxy's lifetime: --app-addr's port in explicit
// mode (in transparent mode it is only a fallback), and --app-ports.
func configuredAppPorts(cfg Config) []uint16 {
	var out []uint16
	if cfg.Mode == outbound.ModeExplicit && cfg.AppAddr != "" {
		if _, p, err := net.SplitHostPort(cfg.AppAddr); err == nil {
			if n, err := strconv.ParseUint(p, 10, 16); err == nil && n != 0 {
				out = append(out, uint16(n))
			}
		}
	}
	for _, p := range cfg.AppPorts {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// observingOrigDst is origdst.Get that also starts the policy watch of the
// connection's original port (transparent mode: the app port the caller
// dialled), without waiting for it. The proxy's own ports are refused by
// the inbound side and get no watch.
func observingOrigDst(w *inboundpolicy.Watcher, own func() []uint16) func(net.Conn) (netip.AddrPort, error) {
	return func(c net.Conn) (netip.AddrPort, error) {
		orig, err := origdst.Get(c)
		if err == nil && !slices.Contains(own(), orig.Port()) {
			w.Observe(orig.Port())
		}
		return orig, err
	}
}
