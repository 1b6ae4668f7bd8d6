package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/ca"
	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/controller/injector"
	"github.com/trellis-mesh/trellis/controller/k8s/serve"
	"github.com/trellis-mesh/trellis/controller/k8s/tokenreview"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Defaults of the webhook flags: the chart mounts the trellis-webhook-tls
// Secret there.
const (
	defaultWebhookAddr   = ":8443"
	defaultWebhookTLSDir = "/var/run/trellis/webhook"
)

func newKubernetesCmd() *cobra.Command {
	var cfg serve.Config
	var issuerDir, level string
	cmd := &cobra.Command{
		Use:   "kubernetes",
		Short: "Serve the mesh of a Kubernetes cluster from its Services, EndpointSlices, Pods and Nodes",
		Long: `Serve the Identity, Destination and Policy APIs from the Kubernetes API
(shared informers over Services, EndpointSlices, Pods, Nodes and Namespaces),
over mTLS with a certificate from the issuer mounted at --issuer-dir (a
kubernetes.io/tls Secret: tls.crt, tls.key, ca.crt). Proxies prove their
identity with their pod's ServiceAccount token (audience identity.trellis.io),
checked with a TokenReview. The proxy injector's admission webhook is served
on --webhook-addr (empty: off) with the key pair of --webhook-tls-dir; the
images it injects come from TRELLIS_PROXY_IMAGE, TRELLIS_INIT_IMAGE and
TRELLIS_PROXY_IMAGE_PULL_POLICY. The servers start once the informer caches
are synced. See docs/controller-kubernetes.md.`,
		Example: `  # in a pod (in-cluster config), issuer Secret mounted at /var/run/trellis/issuer
  trellis-controller kubernetes --issuer-dir /var/run/trellis/issuer

  # from a workstation
  trellis-controller kubernetes --kubeconfig ~/.kube/config --issuer-dir ./issuer \
    --listen 127.0.0.1:8086 --admin-addr 127.0.0.1:9996 --webhook-addr ""`,
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
			cfg.Register = func(srv *grpc.Server, env serve.Env) {
				auth := serve.TokenReviewAuth{Authenticator: &tokenreview.Authenticator{
					Client: env.Client.AuthenticationV1(), Audience: tokenreview.Audience, TrustDomain: cfg.TrustDomain,
				}}
				apiv1.RegisterIdentityServer(srv, &identitysvc.Service{
					Auth: auth, CA: authority, Metrics: env.Metrics, Log: log.With("component", "identity"),
				})
				apiv1.RegisterPolicyServer(srv, &serve.DefaultPolicy{Metrics: env.Metrics, Done: env.Done})
			}
			if cfg.WebhookAddr != "" {
				icfg, err := injectorConfigFromEnv(os.Getenv)
				if err != nil {
					return err
				}
				icfg.TrustDomain = cfg.TrustDomain
				icfg.ControllerAddr = "trellis-controller." + injector.ControlPlaneNamespace + ".svc." + cfg.ClusterDomain + ":8086"
				icfg.Registerer = m.Registry
				icfg.Logger = log.With("component", "injector")
				cfg.Webhook = func(ns serve.NamespaceAnnotations) http.Handler {
					icfg.NamespaceAnnotations = ns
					return newAnchoredHandler(icfg, authority)
				}
			}
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
	f.StringVar(&cfg.WebhookAddr, "webhook-addr", defaultWebhookAddr, "address of the proxy injector's admission webhook (HTTPS, path /inject); empty disables it")
	f.StringVar(&cfg.WebhookTLSDir, "webhook-tls-dir", defaultWebhookTLSDir, "directory of the webhook's mounted kubernetes.io/tls Secret (tls.crt, tls.key; reloaded when it changes)")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", serve.DefaultShutdownGrace, "how long a stop waits for calls in flight")
	f.DurationVar(&cfg.SyncTimeout, "sync-timeout", serve.DefaultSyncTimeout, "how long to wait for the first lists from the API server")
	f.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	_ = cmd.MarkFlagRequired("issuer-dir")
	return cmd
}

// injectorConfigFromEnv reads what the chart tells the injector about the
// proxy it injects. Unset variables keep the injector's defaults.
// TRELLIS_PROXY_LOG_LEVEL and TRELLIS_PROXY_{CPU,MEMORY}_{REQUEST,LIMIT}
// are not read: the injector has no setting for them yet (the pod
// annotations config.trellis.io/proxy-* set resources per pod).
func injectorConfigFromEnv(getenv func(string) string) (injector.Config, error) {
	c := injector.Config{
		ProxyImage: getenv("TRELLIS_PROXY_IMAGE"),
		InitImage:  getenv("TRELLIS_INIT_IMAGE"),
	}
	switch p := corev1.PullPolicy(getenv("TRELLIS_PROXY_IMAGE_PULL_POLICY")); p {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		c.ImagePullPolicy = p
	default:
		return c, fmt.Errorf("TRELLIS_PROXY_IMAGE_PULL_POLICY %q: want Always, IfNotPresent or Never", p)
	}
	return c, nil
}

// anchoredHandler is the injector's webhook with the current trust bundle
// as the injected pods' bootstrap anchors (through the pod annotation and a
// downward-API file: pods cannot mount a ConfigMap of trellis-system). The
// handler is rebuilt when the bundle in --issuer-dir changes, so pods
// created after a rotation trust the new anchors.
type anchoredHandler struct {
	cfg       injector.Config
	authority *ca.CA

	mu          sync.Mutex
	fingerprint string
	h           http.Handler
}

func newAnchoredHandler(cfg injector.Config, authority *ca.CA) *anchoredHandler {
	a := &anchoredHandler{cfg: cfg, authority: authority}
	a.current() // build it now, so a bad configuration shows at start
	return a
}

func (a *anchoredHandler) current() http.Handler {
	st := a.authority.State()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.h == nil || st.Fingerprint != a.fingerprint {
		cfg := a.cfg
		cfg.TrustAnchorsPEM = string(pki.EncodeCertsPEM(st.Anchors...))
		// NewHandler reuses the already registered request counter.
		a.h, a.fingerprint = injector.NewHandler(cfg), st.Fingerprint
	}
	return a.h
}

func (a *anchoredHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.current().ServeHTTP(w, r)
}
