// Package local runs the controller in local mode: the mesh comes from a
// store file, the CA from a state directory or a mounted issuer Secret
// (reloaded on change), and every API is served on one gRPC server
// (docs/controller.md).
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/admin"
	"github.com/trellis-mesh/trellis/controller/ca"
	"github.com/trellis-mesh/trellis/controller/destination"
	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/policy"
	"github.com/trellis-mesh/trellis/controller/shutdown"
	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// Defaults of Config.
const (
	DefaultListen        = "127.0.0.1:8086"
	DefaultAdminAddr     = "127.0.0.1:9996"
	DefaultShutdownGrace = 5 * time.Second
	// KeepaliveMinTime is the shortest client ping interval the server
	// tolerates before it closes the connection (GOAWAY too_many_pings).
	// Proxies ping every 10s; half that leaves room for timer jitter.
	KeepaliveMinTime = 5 * time.Second
)

// Config is what `trellis-controller local` needs.
type Config struct {
	ConfigPath string
	// StateDir holds the CA as files (anchor.crt/key, issuer.crt/key,
	// optional bundle.crt), generated on first run. Exactly one of StateDir
	// and IssuerDir is set.
	StateDir string
	// IssuerDir is a mounted kubernetes.io/tls Secret: tls.crt, tls.key,
	// ca.crt. Nothing is generated or written there.
	IssuerDir string
	// AutoRenewIssuer replaces, at start, an issuer of StateDir that expired
	// or expires within 7 days with one signed by anchor.key (when present).
	// Not allowed with IssuerDir.
	AutoRenewIssuer bool
	Listen          string
	AdminAddr       string
	Logger          *slog.Logger
	// ShutdownGrace bounds how long a graceful stop waits for calls in flight.
	ShutdownGrace time.Duration
	// TapAPIAddr (loopback) serves the local tap API to holders of the
	// token in TapTokenFile (tapapi.go); empty: off.
	TapAPIAddr, TapTokenFile string
}

// Controller is a running local-mode controller.
type Controller struct {
	grpcAddr, adminAddr string
	CA                  *ca.CA
	Store               *store.Store
	Metrics             *metrics.Metrics

	done chan struct{}
	err  error
}

// Run starts the controller and serves until ctx is done, then stops
// gracefully.
func Run(ctx context.Context, cfg Config) error {
	c, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	return c.Wait()
}

// Start loads the store and the CA, binds both listeners and serves in the
// background until ctx is done. The admin /ready turns 200 once everything
// is serving.
func Start(ctx context.Context, cfg Config) (*Controller, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ConfigPath == "" {
		return nil, errors.New("--config is required")
	}
	switch {
	case cfg.StateDir == "" && cfg.IssuerDir == "":
		return nil, errors.New("--state-dir or --issuer-dir is required")
	case cfg.StateDir != "" && cfg.IssuerDir != "":
		return nil, errors.New("--state-dir and --issuer-dir are alternatives: give one")
	case cfg.IssuerDir != "" && cfg.AutoRenewIssuer:
		return nil, errors.New("--auto-renew-issuer is for --state-dir only: an issuer from --issuer-dir is managed outside the controller")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = DefaultAdminAddr
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}

	m := metrics.New()
	st, err := store.Open(cfg.ConfigPath, store.Options{Logger: log.With("component", "store"), OnReload: m.ConfigReloaded})
	if err != nil {
		return nil, err
	}
	td := func() string { c, _ := st.Current(); return c.TrustDomain }()
	im := newIdentityMetrics(m)
	caOpts := ca.Options{
		Logger:          log.With("component", "ca"),
		AutoRenewIssuer: cfg.AutoRenewIssuer,
		OnReload:        im.reloaded,
		OnInstall: func(st *ca.State) {
			m.IssuerExpiry.Set(float64(st.Issuer.Cert.NotAfter.Unix()))
			m.AnchorExpiry.Set(float64(st.AnchorExpiry().Unix()))
		},
	}
	var authority *ca.CA
	if cfg.IssuerDir != "" {
		authority, err = ca.OpenIssuerDir(cfg.IssuerDir, time.Now(), caOpts)
	} else {
		authority, err = ca.LoadOrCreate(cfg.StateDir, time.Now(), caOpts)
	}
	if err != nil {
		return nil, err
	}
	im.register(authority)
	serving, err := ca.NewServingCert(authority, identity.Controller(td), ca.ServingLifetime, log.With("component", "ca"),
		func(t time.Time) { m.ServingCertExpiry.Set(float64(t.Unix())) })
	if err != nil {
		return nil, err
	}

	var lc net.ListenConfig
	adminLn, err := lc.Listen(ctx, "tcp", cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	grpcLn, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		adminLn.Close()
		return nil, fmt.Errorf("gRPC listener: %w", err)
	}

	streamsDone := make(chan struct{})
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(authority.ServerTLSConfig(serving, td))),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	apiv1.RegisterIdentityServer(srv, &identitysvc.Service{Auth: tokenAuth{st}, Lifetime: lifetime(st), CA: authority, Metrics: m, Log: log.With("component", "identity")})
	apiv1.RegisterDestinationServer(srv, &destination.Service{Source: destinationSource{st}, Routes: routesSource{st}, Limits: limitsSource{st}, Metrics: m, Log: log.With("component", "destination"), Done: streamsDone})
	apiv1.RegisterPolicyServer(srv, &policy.Service{Source: policySource{st}, Metrics: m, Log: log.With("component", "policy"), Done: streamsDone})

	if cfg.TapAPIAddr != "" {
		addr, err := startTapAPI(ctx, cfg.TapAPIAddr, cfg.TapTokenFile, st, authority, serving, log.With("component", "tapapi"))
		if err != nil {
			grpcLn.Close()
			adminLn.Close()
			return nil, err
		}
		log.Info("tap API serving", "addr", addr)
	}
	adm := admin.New(m.Registry)
	if err := adm.ServeDestination(m.Registry, destinationSource{st}); err != nil {
		adminLn.Close()
		grpcLn.Close()
		return nil, err
	}
	var up atomic.Bool
	httpSrv := &http.Server{Handler: readiness(adm, &up, authority, serving), ReadHeaderTimeout: 5 * time.Second}

	c := &Controller{
		grpcAddr: grpcLn.Addr().String(), adminAddr: adminLn.Addr().String(),
		CA: authority, Store: st, Metrics: m, done: make(chan struct{}),
	}
	bg, cancelBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(5)
	go func() {
		defer wg.Done()
		if err := srv.Serve(grpcLn); err != nil {
			errc <- fmt.Errorf("gRPC server: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := httpSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin server: %w", err)
		}
	}()
	go func() { defer wg.Done(); _ = st.Run(bg) }()
	go func() { defer wg.Done(); serving.Run(bg) }()
	go func() { defer wg.Done(); authority.Run(bg) }()

	adm.SetReady(true)
	up.Store(true)
	log.Info("controller serving", "grpc", c.grpcAddr, "admin", c.adminAddr, "trust_domain", td,
		"store", st.Path(), "ca_dir", authority.Dir(), "trust_bundle", authority.BundlePath())

	stop := shutdown.Sequence{
		Log: log, Grace: cfg.ShutdownGrace,
		Unready:    func() { adm.SetReady(false); up.Store(false) },
		Streams:    streamsDone,
		GRPC:       srv,
		Admin:      httpSrv,
		Background: cancelBG,
		Wait:       wg.Wait,
	}
	go func() {
		defer close(c.done)
		c.err = stop.Run(ctx, errc)
	}()
	return c, nil
}

// GRPCAddr is the bound gRPC address.
func (c *Controller) GRPCAddr() string { return c.grpcAddr }

// AdminAddr is the bound admin HTTP address.
func (c *Controller) AdminAddr() string { return c.adminAddr }

// Wait blocks until the controller has stopped and returns why, nil after
// a requested stop.
func (c *Controller) Wait() error {
	<-c.done
	return c.err
}
