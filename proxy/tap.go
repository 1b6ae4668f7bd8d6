package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/tap"
)

// tapHub is the proxy's tap hub: its stage is in both chains.
type tapHub struct {
	*tap.Hub
	m *tap.Metrics
}

func newTapHub(local identity.ID, reg prometheus.Registerer) (tapHub, error) {
	m, err := tap.NewMetrics(reg)
	if err != nil {
		return tapHub{}, err
	}
	return tapHub{Hub: tap.NewHub(local.String(), m), m: m}, nil
}

// listenTap binds the tap listener; nil when addr is "" (disabled).
func listenTap(ctx context.Context, addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--tap-addr: %w", err)
	}
	return ln, nil
}

// serveTap serves Tap.Observe on ln (when enabled) to the controller's
// identity only; the returned func stops it. Taps are not drained: a
// stopping proxy ends them at once.
func serveTap(ln net.Listener, h tapHub, store *meshtls.Store, ctrl identity.ID, log *slog.Logger) func() {
	if ln == nil {
		return func() {}
	}
	srv := tap.NewServer(tap.ServerConfig{
		Hub: h.Hub, Store: store, Controller: ctrl, Metrics: h.m, Logger: log.With("component", "tap"),
	})
	go func() { _ = srv.Serve(ln) }()
	log.Info("tap serving", "addr", ln.Addr().String(), "client", ctrl.String())
	return srv.Stop
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}
