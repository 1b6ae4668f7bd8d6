// Package discovery is the proxy's Destination.Get client. One stream per
// authority is shared by every caller; its updates drive the destination's
// Balancer. Across control-plane outages the last known endpoints stay in
// use until a new stream's first message (a snapshot) replaces them.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
)

// ErrUnavailable is wrapped by Resolve's error when the control plane could
// not be reached (or did not answer in time) and nothing is cached.
var ErrUnavailable = errors.New("destination service unavailable")

// ErrClosed is returned by Resolve after Close.
var ErrClosed = errors.New("resolver closed")

// ErrTooManyServices: the resolver already watches Options.MaxServices
// destinations; a new one is refused until idle ones are swept.
var ErrTooManyServices = errors.New("too many destinations watched")

// DefaultIdleTimeout is how long a destination nobody resolves keeps its stream.
const DefaultIdleTimeout = 10 * time.Minute

const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
	jitter     = 0.25
	// idleTicks: the idle sweeper runs IdleTimeout/idleTicks apart, and a
	// service unused for idleTicks sweeps is closed.
	idleTicks = 4
)

// Options configures a Resolver. Zero values are fine.
type Options struct {
	Registerer     prometheus.Registerer
	Logger         *slog.Logger
	CallerIdentity string        // SPIFFE ID sent in GetDestination.caller_identity
	IdleTimeout    time.Duration // default DefaultIdleTimeout
	// Backoff bounds for reconnecting a broken stream; defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// Zone is the client's topology zone, preferred by every balancer
	// ("": none, or learnt later with SetZone).
	Zone string
	// Self is this pod's IP and inbound listener port (transparent mode;
	// invalid: none). A meshed endpoint at this IP is the proxy's own app:
	// the proxy's own connections are never redirected, so dialled as it
	// is it would reach the app in plain text, past the inbound side. It
	// is dialled at the inbound listener instead, naming the app's port
	// (ToSelf).
	Self netip.AddrPort
	// ExportedOnly asks the Destination service for exported services'
	// meshed endpoints only (GetDestination.exported_only): a multicluster
	// gateway's resolver.
	ExportedOnly bool
	// MaxServices bounds the destinations watched at once (0: no bound).
	// A gateway resolves names strangers send: without a bound, each new
	// name would hold a stream on the controller until swept.
	MaxServices int
}

// Resolver is safe for concurrent use.
type Resolver struct {
	client apiv1.DestinationClient
	opts   Options
	log    *slog.Logger
	m      *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.RWMutex
	services map[string]*Service
	closed   bool
	zone     string       // under mu
	epoch    atomic.Int64 // advanced by the idle sweeper; Resolve stamps services with it
}

// NewResolver returns a Resolver using client. Call Close to stop its streams.
func NewResolver(client apiv1.DestinationClient, opts Options) *Resolver {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = minBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = maxBackoff
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		// Keep working with unregistered metrics rather than fail the proxy.
		opts.Logger.Error("discovery metrics not registered", "err", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Resolver{
		client:   client,
		opts:     opts,
		log:      opts.Logger,
		m:        m,
		ctx:      ctx,
		cancel:   cancel,
		services: make(map[string]*Service),
		zone:     opts.Zone,
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(balancerCollector{r}); err != nil {
			opts.Logger.Error("balancer metrics not registered", "err", err)
		}
	}
	r.wg.Add(1)
	go r.sweepIdle()
	return r
}

// Service is the live view of one destination.
type Service struct {
	authority string
	bal       *balance.Balancer
	exists    atomic.Bool
	lastUsed  atomic.Int64 // resolver epoch of the last Resolve

	cancel context.CancelFunc

	mu      sync.Mutex
	hasData bool          // a first message was received (ever)
	lastErr error         // last stream failure while !hasData
	changed chan struct{} // closed and replaced when hasData or lastErr change
}

// Exists reports whether the destination is known: false after
// NoEndpoints{exists:false}.
func (s *Service) Exists() bool { return s.exists.Load() }

// Balancer returns the destination's balancer, kept up to date from the stream.
func (s *Service) Balancer() *balance.Balancer { return s.bal }

// Authority returns the authority the Service was resolved for.
func (s *Service) Authority() string { return s.authority }

// Resolve returns the shared, live view of a destination, opening a
// Destination.Get stream on first use and waiting (bounded by ctx) for its
// first message. Once a destination has data, Resolve returns at once,
// even while its stream is reconnecting. Callers may keep the Service, but
// should call Resolve regularly (it is cheap): a destination not resolved
// for IdleTimeout is closed and its Balancer no longer updated.
func (r *Resolver) Resolve(ctx context.Context, authority string) (*Service, error) {
	if authority == "" {
		return nil, errors.New("resolve: empty authority")
	}
	epoch := r.epoch.Load()
	r.mu.RLock()
	svc := r.services[authority]
	if svc != nil && svc.lastUsed.Load() != epoch {
		// Under the read lock, so the sweeper (write lock) cannot close a
		// service between this stamp and its return.
		svc.lastUsed.Store(epoch)
	}
	closed := r.closed
	r.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if svc == nil {
		var err error
		if svc, err = r.open(authority); err != nil {
			return nil, err
		}
	}
	for {
		svc.mu.Lock()
		hasData, lastErr, changed := svc.hasData, svc.lastErr, svc.changed
		svc.mu.Unlock()
		if hasData {
			return svc, nil
		}
		if lastErr != nil {
			return nil, fmt.Errorf("resolve %s: %w: %w", authority, ErrUnavailable, lastErr)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("resolve %s: %w: no answer: %w", authority, ErrUnavailable, ctx.Err())
		case <-r.ctx.Done():
			return nil, ErrClosed
		}
	}
}

func (r *Resolver) open(authority string) (*Service, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if svc := r.services[authority]; svc != nil {
		svc.lastUsed.Store(r.epoch.Load())
		return svc, nil
	}
	if r.opts.MaxServices > 0 && len(r.services) >= r.opts.MaxServices {
		return nil, fmt.Errorf("resolve %s: %w (%d)", authority, ErrTooManyServices, r.opts.MaxServices)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	svc := &Service{
		authority: authority,
		bal:       balance.New(balance.WithZone(r.zone)),
		cancel:    cancel,
		changed:   make(chan struct{}),
	}
	svc.exists.Store(true)
	svc.lastUsed.Store(r.epoch.Load())
	r.services[authority] = svc
	r.m.cp.Watches(len(r.services))
	r.wg.Add(1)
	go r.watch(ctx, svc)
	return svc, nil
}

// SetZone sets the client's zone of every balancer, present and future.
func (r *Resolver) SetZone(zone string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.zone = zone
	for _, svc := range r.services {
		svc.bal.SetZone(zone)
	}
}

// Close stops every stream and waits for them to end. Services already
// returned keep their last endpoints.
func (r *Resolver) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

func (r *Resolver) sweepIdle() {
	defer r.wg.Done()
	t := time.NewTicker(max(r.opts.IdleTimeout/idleTicks, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		epoch := r.epoch.Add(1)
		r.mu.Lock()
		for name, svc := range r.services {
			if epoch-svc.lastUsed.Load() > idleTicks {
				svc.cancel()
				delete(r.services, name)
				r.log.Debug("destination idle, stream closed", "dst_service", name)
			}
		}
		r.m.cp.Watches(len(r.services))
		r.mu.Unlock()
	}
}

// watch runs the stream of one Service until its context ends.
func (r *Resolver) watch(ctx context.Context, svc *Service) {
	defer r.wg.Done()
	defer r.forget(svc)
	w := &watcher{r: r, svc: svc, eps: make(map[string]balance.Endpoint)}
	backoff := r.opts.MinBackoff
	for ctx.Err() == nil {
		got, err := w.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		r.m.cp.StreamError()
		if got {
			backoff = r.opts.MinBackoff
		}
		svc.mu.Lock()
		if !svc.hasData {
			svc.lastErr = err
			close(svc.changed)
			svc.changed = make(chan struct{})
		}
		svc.mu.Unlock()
		wait := jittered(backoff)
		backoff = min(backoff*2, r.opts.MaxBackoff)
		r.log.Warn("destination stream failed; keeping last endpoints", "dst_service", svc.authority, "err", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// setEndpointsGauge and forget touch trellis_endpoints only while svc is
// the current Service of its authority, so a stream closed for idleness
// cannot clobber the gauge of its successor.
func (r *Resolver) setEndpointsGauge(svc *Service, n int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.services[svc.authority] == svc {
		r.m.endpoints.WithLabelValues(svc.authority).Set(float64(n))
	}
}

func (r *Resolver) forget(svc *Service) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if cur := r.services[svc.authority]; cur == nil || cur == svc {
		r.m.endpoints.DeleteLabelValues(svc.authority)
	}
}

func jittered(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (1 + jitter*(2*rand.Float64()-1)))
}

// watcher holds the endpoint set of one Service; only its watch goroutine
// touches it.
type watcher struct {
	r   *Resolver
	svc *Service
	eps map[string]balance.Endpoint
	cfg *apiv1.BalancerConfig // the last applied; nil: none yet
}

// stream runs one Destination.Get stream until it fails. got reports
// whether at least one message was received.
func (w *watcher) stream(ctx context.Context) (got bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := w.r.client.Get(sctx, &apiv1.GetDestination{
		Path: w.svc.authority, CallerIdentity: w.r.opts.CallerIdentity, ExportedOnly: w.r.opts.ExportedOnly,
	})
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	healthy := false
	defer func() {
		if healthy {
			w.r.m.cp.StreamDown()
		}
	}()
	for {
		upd, err := st.Recv()
		if err != nil {
			return got, fmt.Errorf("stream: %w", err)
		}
		// Count the stream healthy before applying its first message, which
		// wakes Resolve: a caller that got an answer sees connected=1.
		first := !got
		if first {
			got, healthy = true, true
			w.r.m.cp.StreamUp()
		}
		w.apply(upd, first)
	}
}

// apply applies one update. The first message of every stream is a
// snapshot: it replaces whatever the previous stream left.
func (w *watcher) apply(upd *apiv1.Update, snapshot bool) {
	svc := w.svc
	if snapshot {
		clear(w.eps)
	}
	switch u := upd.GetUpdate().(type) {
	case *apiv1.Update_Add:
		w.r.m.updates.WithLabelValues("add").Inc()
		for _, wa := range u.Add.GetAddrs() {
			ep, err := ToEndpoint(wa)
			if err != nil {
				w.r.m.invalid.Inc()
				w.r.log.Warn("skipping invalid endpoint from the control plane", "dst_service", svc.authority, "err", err)
				continue
			}
			// Keyed by the address the control plane names, which a
			// removal names too.
			key := ep.Addr
			w.eps[key] = ToSelf(ep, w.r.opts.Self)
		}
		w.configure(u.Add.GetBalancer())
		svc.exists.Store(true)
	case *apiv1.Update_Remove:
		w.r.m.updates.WithLabelValues("remove").Inc()
		for _, a := range u.Remove.GetAddrs() {
			addr, err := tcpAddr(a)
			if err != nil {
				w.r.m.invalid.Inc()
				w.r.log.Warn("skipping invalid removed address from the control plane", "dst_service", svc.authority, "err", err)
				continue
			}
			delete(w.eps, addr)
		}
	case *apiv1.Update_NoEndpoints:
		w.r.m.updates.WithLabelValues("no_endpoints").Inc()
		clear(w.eps)
		svc.exists.Store(u.NoEndpoints.GetExists())
	default:
		w.r.m.invalid.Inc()
		w.r.m.cp.Update(false, time.Now())
		w.r.log.Warn("empty or unknown destination update ignored", "dst_service", svc.authority)
		if !snapshot {
			return
		}
	}
	w.r.m.cp.Update(true, time.Now())
	eps := make([]balance.Endpoint, 0, len(w.eps))
	for _, ep := range w.eps {
		eps = append(eps, ep)
	}
	svc.bal.Update(eps)
	w.r.setEndpointsGauge(svc, len(eps))

	svc.mu.Lock()
	if !svc.hasData {
		svc.hasData = true
		svc.lastErr = nil
		close(svc.changed)
		svc.changed = make(chan struct{})
	}
	svc.mu.Unlock()
}
