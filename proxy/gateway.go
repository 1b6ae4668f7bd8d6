package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/proxy/discovery"
	"github.com/trellis-mesh/trellis/proxy/gateway"
)

// gatewayResolveTimeout bounds the wait for a first answer about a
// service a gateway client names (the controller down and nothing cached).
const gatewayResolveTimeout = 5 * time.Second

// gatewayMaxServices bounds the services a gateway watches: the names it
// resolves come from strangers, and each new one holds a stream on the
// controller until it has been idle 10 minutes. Past it, a new name is
// refused (no_endpoints) until idle ones are swept; names in use keep
// working.
const gatewayMaxServices = 1000

func maxServices(cfg Config) int {
	if cfg.GatewayAddr != "" {
		return gatewayMaxServices
	}
	return 0
}

func (c Config) clusterDomain() string {
	if c.ClusterDomain == "" {
		return "cluster.local"
	}
	return c.ClusterDomain
}

func listenGateway(ctx context.Context, addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--gateway-addr: %w", err)
	}
	return ln, nil
}

// serveGateway serves the multicluster gateway on ln (when enabled); the
// returned func stops accepting. Passed connections are not drained: they
// are end-to-end mesh TLS between two other proxies, which see the close.
func serveGateway(ln net.Listener, cfg Config, r *discovery.Resolver, reg prometheus.Registerer, log *slog.Logger) (func(), error) {
	if ln == nil {
		return func() {}, nil
	}
	m, err := gateway.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	g := &gateway.Gateway{
		ClusterDomain: cfg.clusterDomain(), Endpoints: gatewayEndpoints(r),
		Log: log.With("component", "gateway"), Metrics: m,
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		if err := g.Serve(ctx, ln); err != nil {
			log.Error("gateway stopped", "err", err)
		}
	}()
	log.Info("gateway serving", "addr", ln.Addr().String(), "cluster_domain", g.ClusterDomain)
	return cancel, nil
}

// gatewayEndpoints answers the gateway from the resolver, which asks the
// Destination service for exported services' meshed endpoints only; the
// identity check here is the second lock on the same door.
func gatewayEndpoints(r *discovery.Resolver) gateway.Endpoints {
	return func(ctx context.Context, authority string) ([]string, error) {
		ctx, cancel := context.WithTimeout(ctx, gatewayResolveTimeout)
		defer cancel()
		svc, err := r.Resolve(ctx, authority)
		if err != nil {
			return nil, err
		}
		var addrs []string
		for _, ep := range svc.Balancer().Endpoints() {
			if !ep.Identity.IsZero() {
				addrs = append(addrs, ep.Addr)
			}
		}
		return addrs, nil
	}
}
