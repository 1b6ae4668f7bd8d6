// Package serve runs the controller in Kubernetes mode: one shared informer
// cache feeding the Destination service, on a gRPC server whose TLS and
// extra services (Identity) the caller supplies, plus the admin server.
package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/admin"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/controller/k8s/endpoints"
	"github.com/trellis-mesh/trellis/controller/k8s/informers"
	"github.com/trellis-mesh/trellis/controller/metrics"
)

// Defaults of Config.
const (
	DefaultListen        = "0.0.0.0:8086"
	DefaultAdminAddr     = "0.0.0.0:9996"
	DefaultShutdownGrace = 5 * time.Second
	DefaultSyncTimeout   = 2 * time.Minute
	// keepaliveMinTime matches local mode: proxies ping every 10 s.
	keepaliveMinTime = 5 * time.Second
)

// Config is what the Kubernetes mode needs.
type Config struct {
	// Kubeconfig is a kubeconfig file; empty means in-cluster config.
	Kubeconfig string
	// Client, when set, is used instead of Kubeconfig (tests).
	Client        kubernetes.Interface
	TrustDomain   string
	ClusterDomain string
	Listen        string
	AdminAddr     string
	// TLS is the gRPC server's TLS configuration (required): the
	// controller's serving certificate from its issuer.
	TLS *tls.Config
	// Register, when set, adds services to the gRPC server (Identity,
	// Policy) before it serves.
	Register func(*grpc.Server, kubernetes.Interface, *metrics.Metrics)
	// Metrics, when set, is the registry to serve; default metrics.New().
	Metrics       *metrics.Metrics
	Logger        *slog.Logger
	ShutdownGrace time.Duration
	// SyncTimeout bounds the wait for the informers' first lists.
	SyncTimeout time.Duration
}

// Controller is a running Kubernetes-mode controller.
type Controller struct {
	grpcAddr, adminAddr string
	Metrics             *metrics.Metrics
	Source              *endpoints.Source
	done                chan struct{}
	err                 error
}

// ClientFromKubeconfig makes a clientset from a kubeconfig file, or from
// the pod's service account when path is empty.
func ClientFromKubeconfig(path string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if path == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cfg.UserAgent = "trellis-controller"
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// Start connects to the API server, waits until the informer caches are
// synced (a proxy must never get an answer from a half-filled cache: it
// would drop good endpoints), then serves until ctx is done.
func Start(ctx context.Context, cfg Config) (*Controller, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.TLS == nil {
		return nil, errors.New("serve: a TLS configuration is required")
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
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = DefaultSyncTimeout
	}
	m := cfg.Metrics
	if m == nil {
		m = metrics.New()
	}
	client := cfg.Client
	if client == nil {
		var err error
		if client, err = ClientFromKubeconfig(cfg.Kubeconfig); err != nil {
			return nil, err
		}
	}
	ic, err := informers.New(client, 0)
	if err != nil {
		return nil, err
	}
	src, err := endpoints.New(ic, endpoints.Options{
		TrustDomain: cfg.TrustDomain, ClusterDomain: cfg.ClusterDomain,
		Log: log.With("component", "endpoints"), Registerer: m.Registry,
	})
	if err != nil {
		return nil, err
	}

	// The admin server comes up first so that /live answers while the
	// caches fill; /ready stays 503 until everything serves.
	var lc net.ListenConfig
	adminLn, err := lc.Listen(ctx, "tcp", cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	adm := admin.New(m.Registry)
	httpSrv := &http.Server{Handler: adm, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = httpSrv.Serve(adminLn) }()
	closeAdmin := func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = httpSrv.Shutdown(sctx)
		cancel()
	}

	bg, cancelBG := context.WithCancel(context.WithoutCancel(ctx))
	ic.Start(bg)
	stopInformers := func() { cancelBG(); ic.Shutdown() }
	sctx, cancel := context.WithTimeout(ctx, cfg.SyncTimeout)
	err = ic.WaitForSync(sctx)
	if err == nil && !cache.WaitForCacheSync(sctx.Done(), src.HasSynced) {
		err = fmt.Errorf("event handlers did not sync: %w", context.Cause(sctx))
	}
	cancel()
	if err != nil {
		stopInformers()
		closeAdmin()
		return nil, fmt.Errorf("kubernetes API: %w", err)
	}

	grpcLn, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		stopInformers()
		closeAdmin()
		return nil, fmt.Errorf("gRPC listener: %w", err)
	}
	streamsDone := make(chan struct{})
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(cfg.TLS)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	apiv1.RegisterDestinationServer(srv, &destination.Service{Source: src, Metrics: m, Log: log.With("component", "destination"), Done: streamsDone})
	if cfg.Register != nil {
		cfg.Register(srv, client, m)
	}

	c := &Controller{grpcAddr: grpcLn.Addr().String(), adminAddr: adminLn.Addr().String(), Metrics: m, Source: src, done: make(chan struct{})}
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(grpcLn); err != nil {
			errc <- fmt.Errorf("gRPC server: %w", err)
		}
	})
	adm.SetReady(true)
	log.Info("controller serving (kubernetes mode)", "grpc", c.grpcAddr, "admin", c.adminAddr)

	go func() {
		defer close(c.done)
		var runErr error
		select {
		case <-ctx.Done():
			log.Info("shutting down")
		case runErr = <-errc:
			log.Error("server failed; shutting down", "err", runErr)
		}
		adm.SetReady(false)
		close(streamsDone)
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		t := time.NewTimer(cfg.ShutdownGrace)
		select {
		case <-stopped:
		case <-t.C:
			log.Warn("graceful stop timed out; closing connections", "grace", cfg.ShutdownGrace)
			srv.Stop()
			<-stopped
		}
		t.Stop()
		wg.Wait()
		closeAdmin()
		stopInformers()
		c.err = runErr
	}()
	return c, nil
}

// GRPCAddr is the bound gRPC address.
func (c *Controller) GRPCAddr() string { return c.grpcAddr }

// AdminAddr is the bound admin address.
func (c *Controller) AdminAddr() string { return c.adminAddr }

// Wait blocks until the controller has stopped.
func (c *Controller) Wait() error {
	<-c.done
	return c.err
}
