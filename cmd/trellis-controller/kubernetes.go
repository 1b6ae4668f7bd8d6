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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/ca"
	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/controller/injector"
	"github.com/trellis-mesh/trellis/controller/k8s/saevents"
	"github.com/trellis-mesh/trellis/controller/k8s/serve"
	"github.com/trellis-mesh/trellis/controller/k8s/tokenreview"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/status"
	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Defaults of the webhook flags: the chart mounts the trellis-webhook-tls
// Secret there.
const (
	defaultWebhookAddr   = ":8443"
	defaultWebhookTLSDir = "/var/run/trellis/webhook"
	// minCertificateLifetime keeps renewals (at 70 %) from turning into a
	// Certify storm; tests use about a minute.
	minCertificateLifetime = 30 * time.Second
)

func newKubernetesCmd() *cobra.Command {
	var cfg serve.Config
	var issuerDir, anchorsFile, level string
	var certLifetime time.Duration
	var ha bool
	cmd := &cobra.Command{
		Use:   "kubernetes",
		Short: "Serve the mesh of a Kubernetes cluster from its Services, EndpointSlices, Pods and Nodes",
		Long: `Serve the Identity, Destination and Policy APIs from the Kubernetes API
(shared informers over Services, EndpointSlices, Pods, Nodes and Namespaces),
over mTLS with a certificate from the issuer mounted at --issuer-dir (a
kubernetes.io/tls Secret: tls.crt, tls.key, ca.crt). With --trust-anchors-file
(the chart mounts the trellis-trust-anchors ConfigMap) the trust bundle served
to proxies is that file rather than ca.crt, so an external CA such as
cert-manager, which writes only the issuer's own CA into ca.crt, can rotate
anchors; the issuer must chain to one of its anchors. Both are reloaded when
they change. Proxies prove their
identity with their pod's ServiceAccount token (audience identity.trellis.io),
checked with a TokenReview. The proxy injector's admission webhook is served
on --webhook-addr (empty: off) with the key pair of --webhook-tls-dir; the
images it injects come from TRELLIS_PROXY_IMAGE, TRELLIS_INIT_IMAGE and
TRELLIS_PROXY_IMAGE_PULL_POLICY, the proxies' default resources and log
level from TRELLIS_PROXY_{CPU,MEMORY}_{REQUEST,LIMIT} and
TRELLIS_PROXY_LOG_LEVEL, and the default redirection (init or cni) from
TRELLIS_PROXY_REDIRECT. The servers start once the informer caches
are synced. See docs/controller-kubernetes.md.`,
		Example: `  # in a pod (in-cluster config), issuer Secret mounted at /var/run/trellis/issuer
  trellis-controller kubernetes --issuer-dir /var/run/trellis/issuer

  # trust bundle from a mounted ConfigMap (an external issuer, e.g. cert-manager)
  trellis-controller kubernetes --issuer-dir /var/run/trellis/issuer \
    --trust-anchors-file /var/run/trellis/anchors/ca-bundle.crt

  # from a workstation
  trellis-controller kubernetes --kubeconfig ~/.kube/config --issuer-dir ./issuer \
    --listen 127.0.0.1:8086 --admin-addr 127.0.0.1:9996 --webhook-addr ""`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(level)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
			}
			if certLifetime < minCertificateLifetime {
				return fmt.Errorf("--certificate-lifetime %s: want at least %s (proxies renew at 70 %% of it)", certLifetime, minCertificateLifetime)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
			cfg.Logger = log
			routeGRPCLog(log)
			if ha {
				cfg.Elector = statusElector(log)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()

			m := metrics.New()
			cfg.Metrics = m
			reloads := registerIssuerMetrics(m)
			authority, err := ca.OpenIssuerDir(issuerDir, time.Now(), ca.Options{
				Logger: log.With("component", "ca"), OnReload: reloads, TrustAnchorsFile: anchorsFile,
			})
			if err != nil {
				return err
			}
			m.Registry.MustRegister(metrics.IssuerValid(authority.Check))
			// An issuer that cannot sign fails readiness (Certify refuses it,
			// the log says so once a minute): trellis check and alerts see it.
			cfg.ReadyCheck = func() error { return authority.Check(time.Now()) }
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
				// Issuances and refusals as Events on the ServiceAccounts;
				// without them (never expected) certificates still flow.
				var events identitysvc.EventSink
				if rec, err := saevents.Start(ctx, env.Client); err != nil {
					log.Warn("no Kubernetes events for certificates", "err", err)
				} else {
					events = rec
				}
				apiv1.RegisterIdentityServer(srv, &identitysvc.Service{
					Auth: auth, CA: authority, Metrics: env.Metrics, Log: log.With("component", "identity"), Lifetime: certLifetime,
					Events: events,
				})
				apiv1.RegisterPolicyServer(srv, env.Policy)
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
	f.StringVar(&anchorsFile, "trust-anchors-file", "", "file of the trust bundle (PEM anchors) served to proxies and injected pods, e.g. the mounted trellis-trust-anchors ConfigMap; reloaded when it changes; empty: ca.crt of --issuer-dir")
	f.StringVar(&cfg.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain of workload identities")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "DNS suffix of services (name.ns.svc.<cluster-domain>)")
	f.StringVar(&cfg.Listen, "listen", serve.DefaultListen, "address of the gRPC (mTLS) server proxies connect to")
	f.StringVar(&cfg.AdminAddr, "admin-addr", serve.DefaultAdminAddr, "address of the admin HTTP server (/metrics, /ready, /live)")
	f.StringVar(&cfg.WebhookAddr, "webhook-addr", defaultWebhookAddr, "address of the proxy injector's admission webhook (HTTPS, path /inject); empty disables it")
	f.StringVar(&cfg.WebhookTLSDir, "webhook-tls-dir", defaultWebhookTLSDir, "directory of the webhook's mounted kubernetes.io/tls Secret (tls.crt, tls.key; reloaded when it changes)")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", serve.DefaultShutdownGrace, "how long a stop waits for calls in flight")
	f.DurationVar(&cfg.SyncTimeout, "sync-timeout", serve.DefaultSyncTimeout, "how long to wait for the first lists from the API server")
	f.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&ha, "ha", false, "several replicas: elect one (a Lease in the pod's namespace) to write the policy objects' status; every replica serves")
	f.DurationVar(&certLifetime, "certificate-lifetime", store.DefaultCertificateLifetime, "lifetime of the workload certificates it signs (proxies renew at 70 % of it)")
	_ = cmd.MarkFlagRequired("issuer-dir")
	return cmd
}

// registerIssuerMetrics adds the reload counter local mode has too
// (docs/controller.md) and returns what feeds it: a changed issuer Secret
// shows there once the kubelet has refreshed the mounted volume.
func registerIssuerMetrics(m *metrics.Metrics) func(error) {
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_controller_issuer_reload_total",
		Help: "Reloads of changed issuer or trust bundle files, by result (ok, error); error is a refused change, the previous issuer keeps serving.",
	}, []string{"result"})
	for _, r := range []string{"ok", "error"} {
		reloads.WithLabelValues(r)
	}
	m.Registry.MustRegister(reloads)
	return func(err error) {
		if err != nil {
			reloads.WithLabelValues("error").Inc()
			return
		}
		reloads.WithLabelValues("ok").Inc()
	}
}

// injectorConfigFromEnv reads what the chart tells the injector about the
// proxy it injects. Unset or empty variables keep the injector's defaults;
// pods' config.trellis.io/* annotations still win over these.
//
//	TRELLIS_PROXY_IMAGE, TRELLIS_INIT_IMAGE, TRELLIS_PROXY_IMAGE_PULL_POLICY
//	TRELLIS_PROXY_{CPU,MEMORY}_{REQUEST,LIMIT}  quantities (chart proxy.resources)
//	TRELLIS_PROXY_LOG_LEVEL                     debug, info, warn, error (chart proxy.logLevel)
//	TRELLIS_PROXY_REDIRECT                      init or cni: the default redirection (chart cni.enabled)
func injectorConfigFromEnv(getenv func(string) string) (injector.Config, error) {
	c := injector.Config{
		ProxyImage:      getenv("TRELLIS_PROXY_IMAGE"),
		InitImage:       getenv("TRELLIS_INIT_IMAGE"),
		ProxyLogLevel:   getenv("TRELLIS_PROXY_LOG_LEVEL"),
		DefaultRedirect: getenv("TRELLIS_PROXY_REDIRECT"),
	}
	switch p := corev1.PullPolicy(getenv("TRELLIS_PROXY_IMAGE_PULL_POLICY")); p {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		c.ImagePullPolicy = p
	default:
		return c, fmt.Errorf("TRELLIS_PROXY_IMAGE_PULL_POLICY %q: want Always, IfNotPresent or Never", p)
	}
	for _, r := range []struct {
		env   string
		name  corev1.ResourceName
		limit bool
	}{
		{"TRELLIS_PROXY_CPU_REQUEST", corev1.ResourceCPU, false},
		{"TRELLIS_PROXY_CPU_LIMIT", corev1.ResourceCPU, true},
		{"TRELLIS_PROXY_MEMORY_REQUEST", corev1.ResourceMemory, false},
		{"TRELLIS_PROXY_MEMORY_LIMIT", corev1.ResourceMemory, true},
	} {
		v := getenv(r.env)
		if v == "" {
			continue
		}
		q, err := injector.ParseQuantity(v, r.limit)
		if err != nil {
			return c, fmt.Errorf("%s %q: %w", r.env, v, err)
		}
		list := &c.ProxyResources.Requests
		if r.limit {
			list = &c.ProxyResources.Limits
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[r.name] = q
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("injector settings from the environment (TRELLIS_PROXY_*): %w", err)
	}
	return c, nil
}

// anchoredHandler is the injector's webhook with the current trust bundle
// as the injected pods' bootstrap anchors (through the pod annotation and a
// downward-API file: pods cannot mount a ConfigMap of trellis-system). The
// handler is rebuilt when the bundle (--trust-anchors-file, or ca.crt of
// --issuer-dir) changes, so pods
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

// statusElector elects the replica that writes status with a Lease in the
// pod's namespace, named by the pod (the downward API's TRELLIS_POD_*).
func statusElector(log *slog.Logger) func(kubernetes.Interface) status.Elector {
	ns, id := os.Getenv("TRELLIS_POD_NAMESPACE"), os.Getenv("TRELLIS_POD_NAME")
	if ns == "" {
		ns = injector.ControlPlaneNamespace
	}
	if id == "" {
		id, _ = os.Hostname()
	}
	return func(c kubernetes.Interface) status.Elector {
		return &status.LeaseElector{Client: c, Namespace: ns, Name: "trellis-controller-status", Identity: id, Log: log.With("component", "leader")}
	}
}
