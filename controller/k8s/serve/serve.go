// Package serve runs the controller in Kubernetes mode: one shared informer
// cache feeding the Destination service, on a gRPC server whose TLS and
// extra services (Identity, Policy) the caller supplies, plus the admin
// server and, when configured, the proxy injector's admission webhook.
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

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	gwversioned "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/trellis-mesh/trellis/api/policy/client/clientset/versioned"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	workloadversioned "github.com/trellis-mesh/trellis/api/workload/client/clientset/versioned"
	workloadv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/admin"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/controller/k8s/endpoints"
	"github.com/trellis-mesh/trellis/controller/k8s/external"
	"github.com/trellis-mesh/trellis/controller/k8s/informers"
	k8spolicy "github.com/trellis-mesh/trellis/controller/k8s/policy"
	"github.com/trellis-mesh/trellis/controller/k8s/routes"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/policy"
	"github.com/trellis-mesh/trellis/controller/shutdown"
	"github.com/trellis-mesh/trellis/controller/status"
)

// Defaults of Config.
const (
	DefaultListen        = "0.0.0.0:8086"
	DefaultAdminAddr     = "0.0.0.0:9996"
	DefaultShutdownGrace = 5 * time.Second
	// DefaultDrainDelay covers an EndpointSlice update reaching the API
	// server and kube-proxy on a busy cluster.
	DefaultDrainDelay  = 3 * time.Second
	DefaultSyncTimeout = 2 * time.Minute
	// keepaliveMinTime matches local mode: proxies ping every 10 s.
	keepaliveMinTime = 5 * time.Second
)

// Config is what the Kubernetes mode needs.
type Config struct {
	// ReadyCheck, when set, must pass for /ready to answer 200 (the
	// issuer can sign: an expired one fails readiness, loudly).
	ReadyCheck func() error
	// Kubeconfig is a kubeconfig file; empty means in-cluster config.
	Kubeconfig string
	// Client, when set, is used instead of Kubeconfig (tests).
	Client kubernetes.Interface
	// PolicyClient reads policy.trellis.io; made from Kubeconfig when
	// Client is nil too. Nil with Client set: the default policy (tests).
	PolicyClient versioned.Interface
	// GatewayClient reads the Gateway API's HTTPRoutes and GRPCRoutes
	// (inbound routes of Servers); made like PolicyClient, nil: no routes.
	GatewayClient gwversioned.Interface
	// WorkloadClient reads workload.trellis.io (ExternalWorkloads); made
	// like PolicyClient, nil: no ExternalWorkloads.
	WorkloadClient workloadversioned.Interface
	// Elector, when set, gives the elector under which status is written
	// (HA: one replica leads); nil: this replica always writes.
	Elector       func(kubernetes.Interface) status.Elector
	TrustDomain   string
	ClusterDomain string
	Listen        string
	AdminAddr     string
	// TLS is the gRPC server's TLS configuration (required): the
	// controller's serving certificate from its issuer.
	TLS *tls.Config
	// Register, when set, adds services to the gRPC server (Identity,
	// Policy) before it serves.
	Register func(*grpc.Server, Env)

	// WebhookAddr, WebhookTLSDir and Webhook together enable the
	// admission webhook: Webhook makes its handler from a namespace
	// annotation lookup over the shared cache, served over TLS on
	// WebhookAddr with the key pair of WebhookTLSDir (tls.crt, tls.key,
	// picked up again when the mounted Secret changes). Webhook nil or
	// WebhookAddr empty: no webhook, and no Namespace informer.
	WebhookAddr   string
	WebhookTLSDir string
	Webhook       func(NamespaceAnnotations) http.Handler

	// Metrics, when set, is the registry to serve; default metrics.New().
	Metrics       *metrics.Metrics
	Logger        *slog.Logger
	ShutdownGrace time.Duration
	// DrainDelay is how long a stop keeps everything serving, reporting
	// not ready, before it closes listeners: the endpoint's removal
	// reaches the API server (webhook calls) and kube-proxy first, so a
	// controller restart refuses no pod admission (failurePolicy Fail).
	DrainDelay time.Duration
	// SyncTimeout bounds the wait for the informers' first lists.
	SyncTimeout time.Duration
}

// Env is what Config.Register gets to build services.
type Env struct {
	Client  kubernetes.Interface
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Done is closed when the controller stops: streams must end then.
	Done <-chan struct{}
	// Policy answers Policy.WatchInbound: from the policy.trellis.io
	// objects when their CRDs are installed, else DefaultPolicy.
	Policy policy.Source
	// Workloads reads ExternalWorkloads and writes their status; nil when
	// the API server does not serve them (no external workloads).
	Workloads workloadversioned.Interface
}

// NamespaceAnnotations looks up a namespace's annotations.
type NamespaceAnnotations func(ctx context.Context, namespace string) (map[string]string, error)

// Controller is a running Kubernetes-mode controller.
type Controller struct {
	grpcAddr, adminAddr, webhookAddr string
	Metrics                          *metrics.Metrics
	Source                           *endpoints.Source
	done                             chan struct{}
	err                              error
}

// ClientFromKubeconfig makes a clientset from a kubeconfig file, or from
// the pod's service account when path is empty.
func ClientFromKubeconfig(path string) (kubernetes.Interface, error) {
	cfg, err := restConfig(path)
	if err != nil {
		return nil, err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// PolicyClientFromKubeconfig makes a policy.trellis.io clientset like
// ClientFromKubeconfig.
func PolicyClientFromKubeconfig(path string) (versioned.Interface, error) {
	c, err := clientFromKubeconfig(path, "policy client", versioned.NewForConfig)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// clientFromKubeconfig makes a clientset (what names it in errors) like
// ClientFromKubeconfig.
func clientFromKubeconfig[C any](path, what string, mk func(*rest.Config) (C, error)) (C, error) {
	cfg, err := restConfig(path)
	if err != nil {
		var zero C
		return zero, err
	}
	c, err := mk(cfg)
	if err != nil {
		return c, fmt.Errorf("%s: %w", what, err)
	}
	return c, nil
}

func restConfig(path string) (*rest.Config, error) {
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
	// client-go's default of 5 requests a second (burst 10) throttles
	// TokenReviews: 1,000 proxies starting at once got ~5 certificates a
	// second and most timed out (bench/ctrlscale's Certify storm); at
	// these rates they all got one, at ~126 a second.
	cfg.QPS, cfg.Burst = ClientQPS, ClientBurst
	return cfg, nil
}

// The controller's API request rates (client-side limits): Certify makes a
// TokenReview per call, so a node's worth of pods starting at once must
// not queue behind a per-second budget meant for a kubectl.
const (
	ClientQPS   = 200
	ClientBurst = 400
)

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
	client, policyClient := cfg.Client, cfg.PolicyClient
	if client == nil {
		var err error
		if client, err = ClientFromKubeconfig(cfg.Kubeconfig); err != nil {
			return nil, err
		}
		if policyClient, err = PolicyClientFromKubeconfig(cfg.Kubeconfig); err != nil {
			return nil, err
		}
		if cfg.GatewayClient, err = clientFromKubeconfig(cfg.Kubeconfig, "gateway API client", gwversioned.NewForConfig); err != nil {
			return nil, err
		}
		if cfg.WorkloadClient, err = clientFromKubeconfig(cfg.Kubeconfig, "workload client", workloadversioned.NewForConfig); err != nil {
			return nil, err
		}
	}
	ic, err := informers.New(client, 0)
	if err != nil {
		return nil, err
	}
	webhook := cfg.Webhook != nil && cfg.WebhookAddr != ""
	var keyPair *KeyPairDir
	if webhook {
		if cfg.WebhookTLSDir == "" {
			return nil, errors.New("serve: the webhook needs a TLS directory (tls.crt, tls.key)")
		}
		reloadErrors := prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_controller_webhook_tls_reload_errors_total",
			Help: "Changes of the webhook key pair files that were refused (the previous pair keeps serving).",
		})
		if err := m.Registry.Register(reloadErrors); err != nil {
			return nil, fmt.Errorf("webhook metrics: %w", err)
		}
		if keyPair, err = LoadKeyPairDir(cfg.WebhookTLSDir, log.With("component", "webhook"), reloadErrors); err != nil {
			return nil, err
		}
		ic.WatchNamespaces()
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
	if err := adm.ServeDestination(m.Registry, src); err != nil {
		adminLn.Close()
		return nil, err
	}
	if cfg.ReadyCheck != nil {
		adm.SetCheck(cfg.ReadyCheck)
	}
	httpSrv := &http.Server{Handler: adm, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = httpSrv.Serve(adminLn) }()
	closeAdmin := func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = httpSrv.Shutdown(sctx)
		cancel()
	}

	// After the admin server: discovery may wait on the API server, and
	// /live must answer meanwhile.
	rts, err := setupRoutes(client, cfg, ic, log)
	if err != nil {
		closeAdmin()
		return nil, err
	}
	pol, err := setupPolicy(client, policyClient, cfg, ic, rts, log)
	if err != nil {
		closeAdmin()
		return nil, err
	}
	ext, err := setupExternal(client, cfg.WorkloadClient, ic, src, m.Registry, log)
	if err != nil {
		closeAdmin()
		return nil, err
	}
	sm, err := status.NewMetrics(m.Registry)
	if err != nil {
		closeAdmin()
		return nil, err
	}
	bg, cancelBG := context.WithCancel(context.WithoutCancel(ctx))
	ic.Start(bg)
	synced := []cache.InformerSynced{src.HasSynced}
	// What writes to the API server runs on the leading replica only.
	leading := func() status.Elector {
		if cfg.Elector != nil {
			return sm.Leading(cfg.Elector(client))
		}
		return sm.Leading(status.Always{})
	}
	if pol.rt != nil {
		pol.rt.Status.Metrics = sm
		pol.rt.Start(bg, leading())
		synced = append(synced, pol.rt.HasSynced)
	}
	if rts != nil {
		rts.Status.Metrics = sm
		rts.Start(bg, leading())
		synced = append(synced, rts.HasSynced)
	}
	if ext != nil {
		go leading().Run(bg, func(ctx context.Context) { ext.Run(ctx, externalWorkers) })
	}
	stopInformers := func() {
		cancelBG()
		ic.Shutdown()
		if pol.rt != nil {
			pol.rt.Shutdown()
		}
		if rts != nil {
			rts.Shutdown()
		}
	}
	sctx, cancel := context.WithTimeout(ctx, cfg.SyncTimeout)
	err = ic.WaitForSync(sctx)
	if err == nil && !cache.WaitForCacheSync(sctx.Done(), synced...) {
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
	var webhookLn net.Listener
	var webhookSrv *http.Server
	if webhook {
		if webhookLn, err = lc.Listen(ctx, "tcp", cfg.WebhookAddr); err != nil {
			grpcLn.Close()
			stopInformers()
			closeAdmin()
			return nil, fmt.Errorf("webhook listener: %w", err)
		}
		webhookSrv = &http.Server{
			Handler:           cfg.Webhook(namespaceLookup(ic, client)),
			ReadHeaderTimeout: 5 * time.Second,
			// The API server gives a webhook 10 s at most (timeoutSeconds).
			ReadTimeout:  15 * time.Second,
			WriteTimeout: 15 * time.Second,
			IdleTimeout:  90 * time.Second,
			TLSConfig: &tls.Config{
				MinVersion:     tls.VersionTLS12,
				GetCertificate: keyPair.GetCertificate,
			},
			ErrorLog: slog.NewLogLogger(log.With("component", "webhook").Handler(), slog.LevelDebug),
		}
	}
	streamsDone := make(chan struct{})
	srv := grpc.NewServer(append(grpcBufferOptions(),
		grpc.Creds(credentials.NewTLS(cfg.TLS)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)...)
	dst := &destination.Service{Source: src, Metrics: m, Log: log.With("component", "destination"), Done: streamsDone}
	if rts != nil {
		dst.Routes = rts.Source
	}
	if pol.rt != nil {
		dst.Limits = pol.rt.Source // RateLimits on Services
	}
	apiv1.RegisterDestinationServer(srv, dst)
	if cfg.Register != nil {
		env := Env{Client: client, Metrics: m, Log: log, Done: streamsDone, Policy: pol.source}
		if ext != nil {
			env.Workloads = cfg.WorkloadClient
		}
		cfg.Register(srv, env)
	}

	c := &Controller{grpcAddr: grpcLn.Addr().String(), adminAddr: adminLn.Addr().String(), Metrics: m, Source: src, done: make(chan struct{})}
	if webhookLn != nil {
		c.webhookAddr = webhookLn.Addr().String()
	}
	errc := make(chan error, 2) // one per server
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(grpcLn); err != nil {
			errc <- fmt.Errorf("gRPC server: %w", err)
		}
	})
	if webhookSrv != nil {
		wg.Go(func() {
			if err := webhookSrv.ServeTLS(webhookLn, "", ""); !errors.Is(err, http.ErrServerClosed) {
				select {
				case errc <- fmt.Errorf("webhook server: %w", err):
				default:
				}
			}
		})
	}
	adm.SetReady(true)
	log.Info("controller serving (kubernetes mode)", "grpc", c.grpcAddr, "admin", c.adminAddr, "webhook", c.webhookAddr)

	stop := shutdown.Sequence{
		Log: log, Grace: cfg.ShutdownGrace, DrainDelay: cfg.DrainDelay,
		Unready:    func() { adm.SetReady(false) },
		Streams:    streamsDone,
		GRPC:       srv,
		Admin:      httpSrv,
		Background: stopInformers,
		Wait:       wg.Wait,
	}
	if webhookSrv != nil {
		stop.Webhooks = []*http.Server{webhookSrv}
	}
	go func() {
		defer close(c.done)
		c.err = stop.Run(ctx, errc)
	}()
	return c, nil
}

// GRPCAddr is the bound gRPC address.
func (c *Controller) GRPCAddr() string { return c.grpcAddr }

// WebhookAddr is the bound webhook address, "" without a webhook.
func (c *Controller) WebhookAddr() string { return c.webhookAddr }

// AdminAddr is the bound admin address.
func (c *Controller) AdminAddr() string { return c.adminAddr }

// Wait blocks until the controller has stopped.
func (c *Controller) Wait() error {
	<-c.done
	return c.err
}

// namespaceLookup reads namespace annotations from the shared cache. A
// namespace the cache has not seen yet (created just before its first
// pod) is read from the API server rather than taken as unannotated.
func namespaceLookup(ic *informers.Cache, client kubernetes.Interface) NamespaceAnnotations {
	return func(ctx context.Context, name string) (map[string]string, error) {
		ns, err := ic.Namespaces.Get(name)
		if apierrors.IsNotFound(err) {
			ns, err = client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		}
		if err != nil {
			return nil, fmt.Errorf("namespace %s: %w", name, err)
		}
		return ns.Annotations, nil
	}
}

type policySide struct {
	rt     *k8spolicy.Runtime // nil: the default policy
	source policy.Source
}

// setupPolicy serves Policy from the policy.trellis.io objects when the
// API server has their CRDs, else the default policy (a cluster installed
// without `trellis install --crds` keeps working; trellis check says so).
func setupPolicy(client kubernetes.Interface, pc versioned.Interface, cfg Config, ic *informers.Cache, rts *routes.Runtime, log *slog.Logger) (policySide, error) {
	def := policySide{source: DefaultPolicy{}}
	if pc == nil {
		return def, nil
	}
	pcfg := k8spolicy.Config{Discovery: client.Discovery(), Client: pc, Gateway: cfg.GatewayClient,
		Pods: ic.Pods, Services: ic.Services, TrustDomain: cfg.TrustDomain, Log: log.With("component", "policy")}
	if rts != nil {
		pcfg.GatewayInformers = rts.Factory
	}
	rt, err := k8spolicy.Setup(pcfg)
	if err != nil || rt == nil {
		if err == nil {
			log.Warn("policy.trellis.io/v1alpha1 is not served (CRDs not installed): every port gets the default policy")
		}
		return def, err
	}
	return policySide{rt: rt, source: rt.Source}, nil
}

// setupRoutes reads the Gateway API's mesh routes when the API server
// serves HTTPRoute and GRPCRoute, else returns nil: GetRoutes then
// answers no routes.
func setupRoutes(client kubernetes.Interface, cfg Config, ic *informers.Cache, log *slog.Logger) (*routes.Runtime, error) {
	if cfg.GatewayClient == nil {
		return nil, nil
	}
	return routes.Setup(routes.Config{Discovery: client.Discovery(), Client: cfg.GatewayClient, Services: ic.Services,
		ClusterDomain: cfg.ClusterDomain, Log: log.With("component", "routes")})
}

// externalWorkers sync Services' ExternalWorkload slices in parallel.
const externalWorkers = 2

// setupExternal serves ExternalWorkloads when the API server has their
// CRD: their informer joins the shared cache (the Destination answers
// their endpoints with their identity) and the controller of their
// EndpointSlices is made, to run on the leading replica. Without the CRD
// (an older install) it returns nil and neither runs, as for policy;
// installing the CRD later takes a restart of the controller.
func setupExternal(client kubernetes.Interface, wc workloadversioned.Interface, ic *informers.Cache, src *endpoints.Source, reg prometheus.Registerer, log *slog.Logger) (*external.Controller, error) {
	if wc == nil {
		return nil, nil
	}
	served, err := informers.Served(client.Discovery(), workloadv1.SchemeGroupVersion.String())
	if err != nil {
		return nil, err
	}
	if !served["externalworkloads"] {
		log.Warn("workload.trellis.io/v1alpha1 is not served (CRDs not installed): no ExternalWorkloads")
		return nil, nil
	}
	if err := ic.WatchExternalWorkloads(wc); err != nil {
		return nil, err
	}
	if err := src.WatchExternalWorkloads(); err != nil {
		return nil, err
	}
	return external.New(external.Config{Client: client, Cache: ic, Registerer: reg, Log: log.With("component", "external-workloads")})
}
