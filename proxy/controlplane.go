package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/certifier"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/origdst"
	"github.com/trellis-mesh/trellis/proxy/outbound"
	"github.com/trellis-mesh/trellis/proxy/routes"
)

// newWatchers starts the policy watches of the configured app ports and
// the routes client. They are watched for real even while the data path
// does not enforce them yet (docs/proxy.md, "What the proxy watches").
func newWatchers(conn, policyConn *grpc.ClientConn, cfg Config, local identity.ID, reg prometheus.Registerer, log *slog.Logger) (*inboundpolicy.Watcher, *routes.Watcher, error) {
	policies, err := inboundpolicy.New(apiv1.NewPolicyClient(policyConn), inboundpolicy.Options{
		Workload: local.String(), Pod: cfg.PodName, DefaultPolicy: cfg.DefaultInboundPolicy, Ports: configuredAppPorts(cfg),
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

// dialPolicy makes the connection of the policy watches. The controller
// answers a policy watch only to the workload's own mTLS identity, and a
// connection's identity is fixed at its handshake: the shared connection
// shakes hands before the first certificate (Certify runs on it), so this
// one dials only once the store holds a certificate.
func dialPolicy(addr string, store *meshtls.Store, ctrlID identity.ID, m *metrics.Metrics) (*grpc.ClientConn, error) {
	dial := func(ctx context.Context, target string) (net.Conn, error) {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for !store.Ready() {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("no certificate yet: %w", ctx.Err())
			case <-t.C:
			}
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", target)
	}
	conn, err := grpc.NewClient(addr, append(controlPlaneOptions(store, ctrlID, m), grpc.WithContextDialer(dial))...)
	if err != nil {
		return nil, fmt.Errorf("controller %s: %w", addr, err)
	}
	return conn, nil
}

// externalWorkload is the certifier's configuration of --external-workload
// (nil without it): renewals dial the controller per call with the options
// of every control-plane connection, so each presents the current
// certificate and verifies the controller the same way.
func externalWorkload(cfg Config, store *meshtls.Store, ctrlID identity.ID, m *metrics.Metrics) *certifier.ExternalWorkload {
	if cfg.ExternalWorkload == "" {
		return nil
	}
	ns, name, err := ewtoken.ParseRef(cfg.ExternalWorkload)
	if err != nil {
		return nil // refused by Config.validate already
	}
	return &certifier.ExternalWorkload{
		Namespace: ns, Name: name,
		Renew: certifier.PerCallClient{Target: cfg.ControllerAddr, Options: controlPlaneOptions(store, ctrlID, m)},
	}
}

// controlPlaneOptions are the options of every connection to the
// controller.
func controlPlaneOptions(store *meshtls.Store, ctrlID identity.ID, m *metrics.Metrics) []grpc.DialOption {
	return []grpc.DialOption{
		// groupCounting: the negotiated key exchange of each handshake, counted.
		grpc.WithTransportCredentials(groupCounting{credentials.NewTLS(store.ControlPlaneConfig(ctrlID)), m}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// gRPC's default backoff grows to 120 s: after a long controller
		// outage a proxy could wait past its certificate's expiry before
		// trying again. Cap it so renewal resumes within seconds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 500 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
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
