package main

import (
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/controller/ca"
	"github.com/trellis-mesh/trellis/controller/k8s/serve"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/identity"
)

func newKubernetesCmd() *cobra.Command {
	var cfg serve.Config
	var issuerDir, level string
	cmd := &cobra.Command{
		Use:   "kubernetes",
		Short: "Serve the mesh of a Kubernetes cluster from its Services, EndpointSlices, Pods and Nodes",
		Long: `Serve the Destination API from the Kubernetes API (shared informers over
Services, EndpointSlices, Pods and Nodes), over mTLS with a certificate from
the issuer mounted at --issuer-dir (a kubernetes.io/tls Secret: tls.crt,
tls.key, ca.crt). The gRPC server starts once the informer caches are synced.
See docs/controller-kubernetes.md.`,
		Example: `  # in a pod (in-cluster config), issuer Secret mounted at /var/run/trellis/issuer
  trellis-controller kubernetes --issuer-dir /var/run/trellis/issuer

  # from a workstation
  trellis-controller kubernetes --kubeconfig ~/.kube/config --issuer-dir ./issuer \
    --listen 127.0.0.1:8086 --admin-addr 127.0.0.1:9996`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(level)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
			cfg.Logger = log
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()

			m := metrics.New()
			cfg.Metrics = m
			authority, err := ca.OpenIssuerDir(issuerDir, time.Now(), ca.Options{Logger: log.With("component", "ca")})
			if err != nil {
				return err
			}
			serving, err := ca.NewServingCert(authority, identity.Controller(cfg.TrustDomain), ca.ServingLifetime, log.With("component", "ca"),
				func(t time.Time) { m.ServingCertExpiry.Set(float64(t.Unix())) })
			if err != nil {
				return err
			}
			go authority.Run(ctx)
			go serving.Run(ctx)
			cfg.TLS = authority.ServerTLSConfig(serving, cfg.TrustDomain)
			// Identity.Certify is registered through cfg.Register once
			// identity.Service takes an Authenticator
			// (controller/k8s/tokenreview); see docs/controller-kubernetes.md.
			c, err := serve.Start(ctx, cfg)
			if err != nil {
				return err
			}
			return c.Wait()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the pod's in-cluster configuration")
	f.StringVar(&issuerDir, "issuer-dir", "", "directory of the mounted issuer Secret (tls.crt, tls.key, ca.crt) (required)")
	f.StringVar(&cfg.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain of workload identities")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "DNS suffix of services (name.ns.svc.<cluster-domain>)")
	f.StringVar(&cfg.Listen, "listen", serve.DefaultListen, "address of the gRPC (mTLS) server proxies connect to")
	f.StringVar(&cfg.AdminAddr, "admin-addr", serve.DefaultAdminAddr, "address of the admin HTTP server (/metrics, /ready, /live)")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", serve.DefaultShutdownGrace, "how long a stop waits for calls in flight")
	f.DurationVar(&cfg.SyncTimeout, "sync-timeout", serve.DefaultSyncTimeout, "how long to wait for the first lists from the API server")
	f.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	_ = cmd.MarkFlagRequired("issuer-dir")
	return cmd
}
