// Package inboundpolicy is the proxy's Policy.WatchInbound client: for each
// inbound port the proxy serves, the current apiv1.ServerPolicy (who may
// call it, its protocol, limits). One stream per port is shared by every
// caller; the last good answer is kept while the controller is
// unreachable; before the first answer a port has the default that
// --default-inbound-policy names. Ports come from the configuration
// (watched for the proxy's lifetime) and from traffic (watched while used,
// at most MaxLearnedPorts at once).
package inboundpolicy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/watchcache"
)

// Some values of --default-inbound-policy (authz.Values lists them all).
const (
	AllUnauthenticated = authz.AllUnauthenticated
	AllAuthenticated   = authz.AllAuthenticated
)

// DefaultName names the default policy, as the controller names its own.
const DefaultName = "default"

// DefaultMaxLearnedPorts bounds the ports watched because traffic named
// them: in transparent mode a stranger picks the destination port.
const DefaultMaxLearnedPorts = 64

// Default returns the policy a port has before the controller answered:
// the default's answer (source "default"), whose access is the
// --default-inbound-policy value ("" is all-unauthenticated).
func Default(policy string) (*apiv1.ServerPolicy, error) {
	acc, err := authz.ParseAccess(policy)
	if err != nil {
		return nil, err
	}
	return &apiv1.ServerPolicy{Name: DefaultName, Source: authz.SourceDefault, Access: acc}, nil
}

// Options configures a Watcher. Workload is required.
type Options struct {
	Workload      string   // this workload's SPIFFE ID, sent in every request
	Pod           string   // this pod's name, sent in every request ("": none)
	DefaultPolicy string   // a --default-inbound-policy value ("": all-unauthenticated)
	Ports         []uint16 // watched from the start, never swept
	// MaxLearnedPorts bounds the other ports watched at once (default
	// DefaultMaxLearnedPorts); beyond it a new port has the default.
	MaxLearnedPorts int
	IdleTimeout     time.Duration // default watchcache.DefaultIdleTimeout
	// Backoff bounds between reconnection attempts (watchcache defaults).
	MinBackoff, MaxBackoff time.Duration
	Registerer             prometheus.Registerer
	Logger                 *slog.Logger
}

// Watcher is safe for concurrent use.
type Watcher struct {
	c   *watchcache.Cache[uint16, *apiv1.ServerPolicy]
	def *apiv1.ServerPolicy
}

// Snapshot is the policy of one port now.
type Snapshot struct {
	Port uint16
	// Policy is never nil. It is shared: do not modify it.
	Policy *apiv1.ServerPolicy
	// FromController is false while Policy is the default: no answer yet,
	// the controller unreachable since the port's watch started, or the
	// port not watched (port 0, over MaxLearnedPorts, after Close).
	FromController bool
	// Unwatched: the port has no watch (port 0, over MaxLearnedPorts,
	// after Close), so no answer will come.
	Unwatched bool
}

// New starts the watches of opts.Ports. Call Close to stop them.
func New(client apiv1.PolicyClient, opts Options) (*Watcher, error) {
	def, err := Default(opts.DefaultPolicy)
	if err != nil {
		return nil, err
	}
	if _, err := identity.Parse(opts.Workload); err != nil {
		return nil, fmt.Errorf("inbound policy: workload: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := metrics.NewControlPlane(opts.Registerer, "policy")
	if err != nil {
		log.Error("policy metrics not registered", "err", err)
	}
	if opts.MaxLearnedPorts <= 0 {
		opts.MaxLearnedPorts = DefaultMaxLearnedPorts
	}
	var pinned []uint16
	for _, p := range opts.Ports {
		if p != 0 {
			pinned = append(pinned, p)
		}
	}
	c := watchcache.New(watchcache.Config[uint16, *apiv1.ServerPolicy]{
		Service: "policy",
		Open: func(ctx context.Context, port uint16) (watchcache.Recv[*apiv1.ServerPolicy], error) {
			st, err := client.WatchInbound(ctx, &apiv1.InboundPolicyRequest{Workload: opts.Workload, Port: uint32(port), Pod: opts.Pod})
			if err != nil {
				return nil, err
			}
			return st.Recv, nil
		},
		Check:       func(_ uint16, p *apiv1.ServerPolicy) error { return Check(p) },
		Describe:    describe,
		Pinned:      pinned,
		MaxWatches:  opts.MaxLearnedPorts,
		IdleTimeout: opts.IdleTimeout,
		MinBackoff:  opts.MinBackoff, MaxBackoff: opts.MaxBackoff,
		Metrics: m, Logger: log, KeyAttr: "port",
	})
	return &Watcher{c: c, def: def}, nil
}

// Get returns the policy of port, starting its watch on first use and
// waiting, bounded by ctx, for the controller's first answer; the default
// when there is none (see Snapshot.FromController). A port with an answer
// is served at once, also while the controller is unreachable.
func (w *Watcher) Get(ctx context.Context, port uint16) Snapshot {
	if port != 0 {
		if p, ok := w.c.Get(ctx, port); ok {
			return Snapshot{Port: port, Policy: p, FromController: true}
		}
	}
	return Snapshot{Port: port, Policy: w.def, Unwatched: port == 0 || !w.c.Watched(port)}
}

// Observe starts watching port (if it is not watched) without waiting, and
// keeps it from the idle sweep: for the accept path.
func (w *Watcher) Observe(port uint16) {
	if port != 0 {
		w.c.Observe(port)
	}
}

// Close stops every watch.
func (w *Watcher) Close() { w.c.Close() }

// Check refuses a policy the proxy could not enforce as written: an
// unknown protocol, an authorization naming nothing valid. The controller
// is trusted, but a refused answer keeps the last good one instead of
// half-applying a broken one.
func Check(p *apiv1.ServerPolicy) error {
	if _, ok := apiv1.ProtocolHint_Protocol_name[int32(p.GetProtocol())]; !ok {
		return fmt.Errorf("policy %q: unknown protocol %d", p.GetName(), p.GetProtocol())
	}
	var errs []error
	for _, a := range p.GetAuthorizations() {
		for _, id := range a.GetIdentities() {
			if id == "*" {
				continue
			}
			if _, err := identity.Parse(id); err != nil {
				errs = append(errs, fmt.Errorf("authorization %q: identity: %w", a.GetName(), err))
			}
		}
		for _, ns := range a.GetNamespaces() {
			if ns == "" {
				errs = append(errs, fmt.Errorf("authorization %q: empty namespace", a.GetName()))
			}
		}
		for _, n := range a.GetNetworks() {
			if _, err := netip.ParsePrefix(n); err != nil {
				errs = append(errs, fmt.Errorf("authorization %q: network: %w", a.GetName(), err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("policy %q: %w", p.GetName(), err)
	}
	// What the authz stage compiles (networks with exceptions, routes).
	if _, err := authz.Compile(p, authz.Defaults{}); err != nil {
		return err
	}
	return nil
}

func describe(p *apiv1.ServerPolicy) []any {
	names := make([]string, 0, len(p.GetAuthorizations()))
	for _, a := range p.GetAuthorizations() {
		names = append(names, a.GetName())
	}
	return []any{"policy", p.GetName(), "protocol", p.GetProtocol().String(),
		"authorizations", names, "routes", len(p.GetRoutes()), "access", p.GetAccess().String(),
		"source", p.GetSource(), "audit", p.GetAudit()}
}
