// Package proxy wires the data plane: identity (certifier + meshtls),
// discovery, the outbound and inbound listeners, metrics and the admin
// server, with a graceful drain on shutdown.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/admin"
	"github.com/trellis-mesh/trellis/proxy/certifier"
	"github.com/trellis-mesh/trellis/proxy/discovery"
	"github.com/trellis-mesh/trellis/proxy/inbound"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/outbound"
	"github.com/trellis-mesh/trellis/proxy/policy"
	"github.com/trellis-mesh/trellis/proxy/ratelimit"
	"github.com/trellis-mesh/trellis/proxy/route"
	"github.com/trellis-mesh/trellis/proxy/selfconn"
	"github.com/trellis-mesh/trellis/proxy/trace"
)

// Config is the proxy's configuration (see docs/proxy.md for each field's flag).
type Config struct {
	OutboundAddr string
	InboundAddr  string
	AdminAddr    string
	// TapAddr is the Tap.Observe listener (--tap-addr; "" disables it):
	// mesh mTLS, only the controller's identity may call it.
	TapAddr            string
	Mode               string // explicit | transparent
	AppAddr            string
	ControllerAddr     string
	ControllerIdentity string // default: the controller identity of Identity's trust domain
	TrustAnchors       string // PEM file
	Identity           string // SPIFFE ID
	TokenFile          string
	Workload           string
	DetectTimeout      time.Duration
	RequestTimeout     time.Duration
	HeaderTimeout      time.Duration // HTTP/1 request head read timeout (408)
	OpaquePorts        []uint16
	ShutdownGrace      time.Duration
	// AcceptTrustDomains are the trust domains besides the local one whose
	// peers the inbound side accepts (meshtls.Store.AcceptTrustDomains):
	// other clusters under the same trust anchor.
	AcceptTrustDomains []string
	// TrustAnchorsCache, when set, is the file where the bundle learned
	// from the control plane is kept; at start it is used instead of
	// TrustAnchors when it holds a usable bundle (certifier.BootstrapAnchors).
	TrustAnchorsCache string
	// ExternalWorkload is NAMESPACE/NAME of the ExternalWorkload this
	// proxy runs for (--external-workload; "" is a pod's or local mode's
	// proxy): TokenFile then holds a single-use bootstrap token, and
	// renewals present the current certificate (certifier.ExternalWorkload).
	ExternalWorkload string
	// PodName is the pod's name (Kubernetes), sent with policy watches so
	// the controller answers for exactly this pod's Servers.
	PodName string
	// CaptureStdLog routes the standard log package (where net/http's
	// HTTP/2 client, the inbound's h2c towards the app, prints a peer's
	// protocol errors) through Logger at debug
	// and trellis_protocol_errors_total{direction="process"}. It is
	// process-wide: only a main that runs one proxy sets it.
	CaptureStdLog bool
	// AppIP is the address the inbound side dials in transparent mode
	// (the pod IP, --app-ip); default 127.0.0.1.
	AppIP string
	// Zone is this workload's topology zone, whose endpoints the outbound
	// balancers prefer (--zone). Empty: learnt from the Destination
	// service's answer for the proxy's own address (zoneSelf, learnZone).
	Zone string
	// TCPProbePorts are the app ports the admin's /tcp-probe/PORT checks
	// (--tcp-probe-ports), at AppIP.
	TCPProbePorts []uint16
	// AppPorts are further ports of --app-addr's host that mesh peers may
	// name in explicit mode (--app-ports).
	AppPorts []uint16
	// DefaultInboundPolicy is the access of a port no Server selects
	// (--default-inbound-policy): one of authz.Values, default
	// all-unauthenticated.
	DefaultInboundPolicy string
	// TraceCollector is the OTLP/gRPC collector spans go to
	// (--trace-collector; "" is tracing off), TraceCollectorCA its CA
	// bundle (TLS; "" is plain text), TraceSampleRatio the fraction of new
	// traces sampled (see proxy/trace).
	TraceCollector   string
	TraceCollectorCA string
	TraceSampleRatio float64
	Logger           *slog.Logger
	// GatewayAddr, when set, makes this proxy a multicluster gateway
	// (--gateway-addr): it passes mesh TLS from other clusters, by routing
	// name, to exported services' meshed endpoints (proxy/gateway), and
	// its resolver sees exported services only. A gateway fronts no app.
	GatewayAddr string
	// ClusterDomain is this cluster's DNS domain (--cluster-domain; default
	// cluster.local): routing names end in .svc.<ClusterDomain>.
	ClusterDomain string

	// Ready, when set, receives the bound listener addresses once serving
	// (useful with ":0" addresses in tests).
	Ready func(Addrs)
}

// Addrs are the addresses the proxy listens on.
type Addrs struct{ Outbound, Inbound, Admin, Tap, Gateway string }

// DefaultOpaquePorts are never protocol-detected (server-speaks-first protocols).
var DefaultOpaquePorts = []uint16{25, 587, 3306, 4222, 5432, 6379, 11211, 27017}

// ParsePorts parses a comma-separated port list ("25,3306").
func ParsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("invalid port %q", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

func (c *Config) validate() error {
	var errs []error
	need := func(v, name string) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	need(c.ControllerAddr, "--controller-addr")
	need(c.TrustAnchors, "--trust-anchors")
	need(c.Identity, "--identity")
	need(c.TokenFile, "--token-file")
	need(c.OutboundAddr, "--outbound-addr")
	need(c.InboundAddr, "--inbound-addr")
	need(c.AdminAddr, "--admin-addr")
	if c.Mode != outbound.ModeExplicit && c.Mode != outbound.ModeTransparent {
		errs = append(errs, fmt.Errorf("--mode must be explicit or transparent, got %q", c.Mode))
	}
	if _, err := authz.ParseAccess(c.DefaultInboundPolicy); err != nil {
		errs = append(errs, fmt.Errorf("--default-inbound-policy: %w", err))
	}
	if c.AppIP != "" && net.ParseIP(c.AppIP) == nil {
		errs = append(errs, fmt.Errorf("--app-ip: %q is not an IP address", c.AppIP))
	}
	if err := c.traceConfig(nil, nil).Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Mode == outbound.ModeExplicit && c.AppAddr == "" {
		errs = append(errs, errors.New("--app-addr is required in explicit mode"))
	}
	if c.ExternalWorkload != "" {
		ns, _, err := ewtoken.ParseRef(c.ExternalWorkload)
		if err != nil {
			errs = append(errs, fmt.Errorf("--external-workload: want NAMESPACE/NAME: %w", err))
		} else if id, err := identity.Parse(c.Identity); err == nil && id.Namespace != ns {
			errs = append(errs, fmt.Errorf("--external-workload %s: --identity %s is of another namespace", c.ExternalWorkload, id))
		}
	}
	return errors.Join(errs...)
}

// Run serves until ctx is cancelled or POST /shutdown, then drains for up to
// ShutdownGrace and returns nil. It returns an error if it cannot start.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Workload != "" {
		log = log.With("workload", cfg.Workload)
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	local, err := identity.Parse(cfg.Identity)
	if err != nil {
		return fmt.Errorf("--identity: %w", err)
	}
	ctrlID := identity.Controller(local.TrustDomain)
	if cfg.ControllerIdentity != "" {
		if ctrlID, err = identity.Parse(cfg.ControllerIdentity); err != nil {
			return fmt.Errorf("--controller-identity: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.New(reg)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if cfg.CaptureStdLog {
		defer captureStdLog(log, m)()
	}
	tracer, err := trace.New(ctx, cfg.traceConfig(reg, log.With("component", "trace")))
	if err != nil {
		return err
	}
	defer shutdownTracer(tracer, log)

	var cache *certifier.AnchorsCache
	if cfg.TrustAnchorsCache != "" {
		if cache, err = certifier.NewAnchorsCache(cfg.TrustAnchorsCache, reg); err != nil {
			return fmt.Errorf("--trust-anchors-cache: %w", err)
		}
	}
	anchors, anchorsFile, err := certifier.BootstrapAnchors(cfg.TrustAnchors, cache, log.With("component", "certifier"))
	if err != nil {
		return err
	}
	store, err := meshtls.NewStore(local, anchors)
	if err != nil {
		return fmt.Errorf("trust anchors %s: %w", anchorsFile, err)
	}
	if err := store.AcceptTrustDomains(cfg.AcceptTrustDomains); err != nil {
		return fmt.Errorf("--accept-trust-domains: %w", err)
	}

	conn, err := grpc.NewClient(cfg.ControllerAddr, controlPlaneOptions(store, ctrlID, m)...)
	if err != nil {
		return fmt.Errorf("controller %s: %w", cfg.ControllerAddr, err)
	}
	defer conn.Close()

	// Heard from the control plane: the gRPC connection was ready once.
	var heard atomic.Bool
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	var bg sync.WaitGroup
	bg.Add(2)
	go func() {
		defer bg.Done()
		for {
			st := conn.GetState()
			if st == connectivity.Ready {
				heard.Store(true)
				return
			}
			if !conn.WaitForStateChange(runCtx, st) {
				return
			}
		}
	}()
	go func() {
		defer bg.Done()
		err := certifier.Run(runCtx, certifier.Config{
			Identity: local, TokenFile: cfg.TokenFile, Client: apiv1.NewIdentityClient(conn),
			Store: store, Registerer: reg, Logger: log.With("component", "certifier"),
			AnchorsCache: cache, ExternalWorkload: externalWorkload(cfg, store, ctrlID, m),
		})
		if err != nil {
			log.Error("certifier stopped", "err", err)
		}
	}()
	resolver := discovery.NewResolver(apiv1.NewDestinationClient(conn), discovery.Options{
		Registerer: reg, Logger: log.With("component", "discovery"), CallerIdentity: local.String(),
		Zone: cfg.Zone, Self: selfAddr(cfg), ExportedOnly: cfg.GatewayAddr != "", MaxServices: maxServices(cfg),
	})
	defer resolver.Close()
	if self := zoneSelf(cfg); cfg.Zone == "" && self != "" {
		go learnZone(ctx, resolver, self, log)
	}
	policyConn, err := dialPolicy(cfg.ControllerAddr, store, ctrlID, m)
	if err != nil {
		return err
	}
	defer policyConn.Close()
	policies, routeTable, err := newWatchers(conn, policyConn, cfg, local, reg, log)
	if err != nil {
		return err
	}
	defer policies.Close()
	defer routeTable.Close()
	authzMetrics, err := metrics.NewAuthz(reg)
	if err != nil {
		return err
	}
	enforcer, err := policy.NewEnforcer(policy.EnforcerConfig{
		Source: policies, Default: cfg.DefaultInboundPolicy, TrustDomain: local.TrustDomain,
		Metrics: authzMetrics, Logger: log.With("component", "authz"),
	})
	if err != nil {
		return err
	}

	routeMetrics, err := metrics.NewRoutes(reg)
	if err != nil {
		return err
	}
	limitMetrics, err := metrics.NewRateLimit(reg)
	if err != nil {
		return err
	}
	limiter, err := ratelimit.New(ratelimit.Config{Source: policies, Metrics: limitMetrics})
	if err != nil {
		return err
	}

	tapHub, err := newTapHub(local, reg)
	if err != nil {
		return err
	}
	opaque := make(map[uint16]bool, len(cfg.OpaquePorts))
	for _, p := range cfg.OpaquePorts {
		opaque[p] = true
	}
	out, err := outbound.New(outbound.Config{
		Mode:  cfg.Mode,
		Store: store,
		Resolve: func(ctx context.Context, authority string) (outbound.Destination, error) {
			s, err := resolver.Resolve(ctx, authority)
			if err != nil {
				return outbound.Destination{}, err
			}
			if s.Exists() {
				routeTable.Observe(authority)
			}
			return outbound.Destination{Exists: s.Exists(), Balancer: s.Balancer()}, nil
		},
		Metrics: m, Logger: log.With("component", "outbound"),
		DetectTimeout: cfg.DetectTimeout, RequestTimeout: cfg.RequestTimeout, OpaquePorts: opaque,
		HeaderTimeout: cfg.HeaderTimeout,
		Routes:        route.NewWatched(routeTable, 0, log.With("component", "routes")),
		RouteMetrics:  routeMetrics,
		Limit:         ratelimit.NewOutbound(limitMetrics, nil),
		Tap:           tapHub.Layer(metrics.Outbound),
		Trace:         tracer.Outbound(),
	})
	if err != nil {
		return err
	}
	// Our listeners' ports, set once they are bound (before any Serve):
	// the inbound side never forwards to them.
	var ownPorts []uint16
	self := &selfconn.Set{}
	in, err := inbound.New(inbound.Config{
		Store: store, Metrics: m, Logger: log.With("component", "inbound"),
		AppAddr: cfg.AppAddr, Transparent: cfg.Mode == outbound.ModeTransparent,
		DetectTimeout: cfg.DetectTimeout, OpaquePorts: opaque,
		AppIP: cfg.AppIP, AppPorts: cfg.AppPorts, DefaultPolicy: cfg.DefaultInboundPolicy,
		OwnPorts: func() []uint16 { return ownPorts }, SelfConns: self, HeaderTimeout: cfg.HeaderTimeout,
		OrigDst:       observingOrigDst(policies, func() []uint16 { return ownPorts }),
		Authorizer:    enforcer,
		RateLimit:     limiter.Layer,
		Tap:           tapHub.Layer(metrics.Inbound),
		Trace:         tracer.Inbound(),
		ClusterDomain: cfg.clusterDomain(),
	})
	if err != nil {
		return err
	}

	lc := net.ListenConfig{}
	// The app's connections come from its own pod: TCP keepalive cannot
	// find a dead peer there, and would cost four setsockopt calls per
	// connection. The inbound side keeps net's default (remote peers).
	outLn, err := (&net.ListenConfig{KeepAlive: -1}).Listen(ctx, "tcp", cfg.OutboundAddr)
	if err != nil {
		return fmt.Errorf("--outbound-addr: %w", err)
	}
	inLn, err := lc.Listen(ctx, "tcp", cfg.InboundAddr)
	if err != nil {
		_ = outLn.Close()
		return fmt.Errorf("--inbound-addr: %w", err)
	}
	adminLn, err := lc.Listen(ctx, "tcp", cfg.AdminAddr)
	if err != nil {
		_ = outLn.Close()
		_ = inLn.Close()
		return fmt.Errorf("--admin-addr: %w", err)
	}
	tapLn, err := listenTap(ctx, cfg.TapAddr)
	if err != nil {
		_ = outLn.Close()
		_ = inLn.Close()
		_ = adminLn.Close()
		return err
	}
	gwLn, err := listenGateway(ctx, cfg.GatewayAddr)
	if err != nil {
		_ = outLn.Close()
		_ = inLn.Close()
		_ = adminLn.Close()
		if tapLn != nil {
			_ = tapLn.Close()
		}
		return err
	}
	ownPorts = listenerPorts(outLn, inLn, adminLn)
	for _, ln := range []net.Listener{tapLn, gwLn} {
		if ln != nil {
			ownPorts = append(ownPorts, listenerPorts(ln)...)
		}
	}

	var draining atomic.Bool
	shutdown := make(chan struct{})
	var shutdownOnce sync.Once
	adminSrv := &http.Server{
		Handler: admin.Handler(admin.Options{
			Gatherer:   reg,
			ProbePorts: probePorts(cfg.TCPProbePorts),
			ProbeTCP:   probeTCP(cfg.AppIP),
			Ready: func() (bool, string) {
				switch {
				case draining.Load():
					return false, "draining"
				case !heard.Load():
					return false, "not connected to the control plane yet"
				case !store.Ready():
					if exp := store.Expiry(); !exp.IsZero() && time.Now().After(exp) {
						return false, "workload certificate expired at " + exp.UTC().Format(time.RFC3339) + "; renewal is failing"
					}
					return false, "no valid workload certificate yet"
				}
				return true, ""
			},
			Shutdown:     func() { shutdownOnce.Do(func() { close(shutdown) }) },
			ThroughProxy: self.Contains,
			Logger:       log.With("component", "admin"),
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = adminSrv.Serve(adminLn) }()
	go func() { _ = out.Serve(outLn) }()
	go func() { _ = in.Serve(inLn) }()
	stopTap := serveTap(tapLn, tapHub, store, ctrlID, log)
	defer stopTap()
	stopGateway, err := serveGateway(gwLn, cfg, resolver, reg, log)
	if err != nil {
		return err
	}
	defer stopGateway()
	log.Info("trellis-proxy serving", "identity", local.String(), "mode", cfg.Mode,
		"outbound", outLn.Addr().String(), "inbound", inLn.Addr().String(), "admin", adminLn.Addr().String())
	if cfg.Ready != nil {
		cfg.Ready(Addrs{Outbound: outLn.Addr().String(), Inbound: inLn.Addr().String(), Admin: adminLn.Addr().String(), Tap: addrOf(tapLn), Gateway: addrOf(gwLn)})
	}

	select {
	case <-ctx.Done():
	case <-shutdown:
	}
	log.Info("draining", "grace", cfg.ShutdownGrace.String())
	draining.Store(true)
	dctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = out.Shutdown(dctx) }()
	go func() { defer wg.Done(); _ = in.Shutdown(dctx) }()
	wg.Wait()
	_ = adminSrv.Close()
	stopRun()
	bg.Wait()
	log.Info("stopped")
	return nil
}

func probePorts(ports []uint16) map[int]bool {
	m := make(map[int]bool, len(ports))
	for _, p := range ports {
		m[int(p)] = true
	}
	return m
}

// probeTCP connects to the app's port where the inbound side reaches the
// app (the pod IP, else loopback), as the kubelet's tcpSocket probe would
// if the proxy did not stand in front of the port.
func probeTCP(appIP string) func(ctx context.Context, port int) error {
	host := appIP
	if host == "" {
		host = "127.0.0.1"
	}
	return func(ctx context.Context, port int) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return c.Close()
	}
}
