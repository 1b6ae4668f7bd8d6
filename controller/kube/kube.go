// Package kube runs the controller in Kubernetes mode, as controller/local
// runs it in local mode: the CA from a mounted issuer Secret, the Identity
// service on TokenReview, the Policy service, the proxy injector's webhook,
// and the informer-backed Destination service of controller/k8s/serve.
// cmd/trellis-controller only parses flags into a Config.
package kube

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/ca"
	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/controller/k8s/ewtoken"
	"github.com/trellis-mesh/trellis/controller/k8s/mirror"
	"github.com/trellis-mesh/trellis/controller/k8s/saevents"
	"github.com/trellis-mesh/trellis/controller/k8s/serve"
	"github.com/trellis-mesh/trellis/controller/k8s/tokenreview"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/policy"
	"github.com/trellis-mesh/trellis/controller/status"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Defaults of Config.
const (
	// DefaultWebhookAddr and DefaultWebhookTLSDir: the chart mounts the
	// trellis-webhook-tls Secret there.
	DefaultWebhookAddr   = ":8443"
	DefaultWebhookTLSDir = "/var/run/trellis/webhook"
	// MinCertificateLifetime keeps renewals (at 70 %) from turning into a
	// Certify storm; tests use about a minute.
	MinCertificateLifetime = 30 * time.Second
)

// Config is what `trellis-controller kubernetes` needs: the serving
// configuration (its Logger, Metrics, TLS, ReadyCheck, Register and
// Webhook are filled in by Run) and the identity settings.
type Config struct {
	serve.Config
	// IssuerDir is the mounted issuer Secret (tls.crt, tls.key, ca.crt).
	IssuerDir string
	// TrustAnchorsFile, when set, is the trust bundle served instead of
	// ca.crt (the mounted trellis-trust-anchors ConfigMap).
	TrustAnchorsFile string
	// CertificateLifetime of workload certificates; at least
	// MinCertificateLifetime.
	CertificateLifetime time.Duration
	// HA: several replicas; one, elected with a Lease in the pod's
	// namespace, writes the policy objects' status.
	HA bool
	// AcceptTrustDomains are injected into every proxy: the trust domains,
	// besides TrustDomain, whose mesh peers proxies accept (other
	// clusters under the same trust anchor, docs/multicluster.md).
	AcceptTrustDomains []string
	// Multicluster runs the mirror of linked clusters' exported services
	// (controller/k8s/mirror; link Secrets in the pod's namespace).
	Multicluster bool
	// TapAPIAddr serves the tap.trellis.io aggregated API with the
	// webhook's key pair (WebhookTLSDir); empty: off.
	TapAPIAddr string
	// SoftMemoryLimit is --soft-memory-limit: "auto" or "" (90 % of the
	// container's cgroup memory limit), "off", or a size; GOMEMLIMIT, when
	// set, wins over it.
	SoftMemoryLimit string
	// Getenv reads the injector's TRELLIS_PROXY_* settings and the pod's
	// TRELLIS_POD_{NAMESPACE,NAME}; nil means os.Getenv.
	Getenv func(string) string
}

// Run serves until ctx is done, then stops gracefully.
func Run(ctx context.Context, cfg Config) error {
	if cfg.CertificateLifetime < MinCertificateLifetime {
		return fmt.Errorf("--certificate-lifetime %s: want at least %s (proxies renew at 70 %% of it)", cfg.CertificateLifetime, MinCertificateLifetime)
	}
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger
	limit, err := applySoftMemoryLimit(cfg.SoftMemoryLimit, cfg.Getenv, os.ReadFile)
	if err != nil {
		return err
	}
	if limit != "" {
		log.Info("Go soft memory limit set", "limit", limit)
	}
	if cfg.HA {
		cfg.Elector = statusElector(log, cfg.Getenv)
	}
	m := metrics.New()
	cfg.Metrics = m
	authority, err := ca.OpenIssuerDir(cfg.IssuerDir, time.Now(), ca.Options{
		Logger: log.With("component", "ca"), OnReload: registerIssuerMetrics(m), TrustAnchorsFile: cfg.TrustAnchorsFile,
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
	cfg.Register = func(srv *grpc.Server, env serve.Env) { register(ctx, cfg, authority, serving, srv, env) }
	if cfg.WebhookAddr != "" {
		if cfg.Webhook, err = webhook(cfg, authority); err != nil {
			return err
		}
	}
	c, err := serve.Start(ctx, cfg.Config)
	if err != nil {
		return err
	}
	return c.Wait()
}

// statusElector elects the replica that writes status with a Lease in the
// pod's namespace, named by the pod (the downward API's TRELLIS_POD_*).
func statusElector(log *slog.Logger, getenv func(string) string) func(kubernetes.Interface) status.Elector {
	ns, id := getenv("TRELLIS_POD_NAMESPACE"), getenv("TRELLIS_POD_NAME")
	if ns == "" {
		ns = k8slabels.ControlPlaneNamespace
	}
	if id == "" {
		id, _ = os.Hostname()
	}
	return func(c kubernetes.Interface) status.Elector {
		return &status.LeaseElector{Client: c, Namespace: ns, Name: "trellis-controller-status", Identity: id, Log: log.With("component", "leader")}
	}
}

// register adds the Identity and Policy services to the gRPC server; the
// policy comes from serve (the policy.trellis.io objects, or the default
// when their CRDs are not installed).
func register(ctx context.Context, cfg Config, authority *ca.CA, serving *ca.ServingCert, srv *grpc.Server, env serve.Env) {
	log := cfg.Logger
	var auth identitysvc.Authenticator = serve.TokenReviewAuth{Authenticator: &tokenreview.Authenticator{
		Client: env.Client.AuthenticationV1(), Audience: tokenreview.Audience, TrustDomain: cfg.TrustDomain,
	}}
	if env.Workloads != nil {
		auth = externalWorkloadAuth(ctx, cfg, authority, env, auth)
	}
	// Issuances and refusals as Events on the ServiceAccounts; without
	// them (never expected) certificates still flow.
	var events identitysvc.EventSink
	if rec, err := saevents.Start(ctx, env.Client); err != nil {
		log.Warn("no Kubernetes events for certificates", "err", err)
	} else {
		events = rec
	}
	lifetime := cfg.CertificateLifetime
	apiv1.RegisterIdentityServer(srv, &identitysvc.Service{
		Auth: auth, CA: authority, Metrics: env.Metrics, Log: log.With("component", "identity"),
		Lifetime: func() time.Duration { return lifetime }, Events: events,
	})
	apiv1.RegisterPolicyServer(srv, &policy.Service{Source: env.Policy, Metrics: env.Metrics, Log: log.With("component", "policy"), Done: env.Done})
	if cfg.Multicluster {
		if err := startMirror(ctx, cfg, env); err != nil {
			log.Error("no multicluster mirror", "err", err)
		}
	}
	if cfg.TapAPIAddr != "" && cfg.WebhookTLSDir != "" {
		if err := startTapAPI(ctx, cfg, authority, serving, env); err != nil {
			log.Error("no tap API", "err", err)
		}
	}
}

// externalWorkloadAuth puts the external workloads' bootstrap tokens and
// certificate renewals (docs/external-workloads.md) in front of next; if
// it cannot, pods are still served by next alone.
func externalWorkloadAuth(ctx context.Context, cfg Config, authority *ca.CA, env serve.Env, next identitysvc.Authenticator) identitysvc.Authenticator {
	ns := cfg.Getenv("TRELLIS_POD_NAMESPACE")
	if ns == "" {
		ns = k8slabels.ControlPlaneNamespace
	}
	ew, err := ewtoken.New(ewtoken.Config{
		Next: next, Secrets: env.Client.CoreV1(), Workloads: env.Workloads.WorkloadV1alpha1(), Namespace: ns,
		TrustDomain: cfg.TrustDomain, Anchors: func() *x509.CertPool { return authority.State().Pool },
		Registerer: env.Metrics.Registry, Log: cfg.Logger.With("component", "external-workloads"),
	})
	if err != nil {
		cfg.Logger.Error("no external workload certificates", "err", err)
		return next
	}
	go ew.RunSweep(ctx, 10*time.Minute)
	return ew
}

// startMirror mirrors the services of linked clusters, on the replica
// that writes status (every replica with one).
func startMirror(ctx context.Context, cfg Config, env serve.Env) error {
	ns := cfg.Getenv("TRELLIS_POD_NAMESPACE")
	if ns == "" {
		ns = k8slabels.ControlPlaneNamespace
	}
	m, err := mirror.New(mirror.Config{Local: env.Client, Namespace: ns, Registerer: env.Metrics.Registry, Log: cfg.Logger.With("component", "mirror")})
	if err != nil {
		return err
	}
	var el status.Elector = status.Always{}
	if cfg.Elector != nil {
		el = cfg.Elector(env.Client)
	}
	go el.Run(ctx, func(ctx context.Context) { m.Run(ctx, mirrorWorkers) })
	return nil
}

// mirrorWorkers sync mirrors in parallel; each is a few API calls.
const mirrorWorkers = 2

// webhook makes the injector's handler factory from the environment.
func webhook(cfg Config, authority *ca.CA) (func(serve.NamespaceAnnotations) http.Handler, error) {
	icfg, err := injectorConfigFromEnv(cfg.Getenv)
	if err != nil {
		return nil, err
	}
	icfg.TrustDomain = cfg.TrustDomain
	icfg.AcceptTrustDomains = cfg.AcceptTrustDomains
	icfg.ClusterDomain = cfg.ClusterDomain
	if err := icfg.Validate(); err != nil {
		return nil, err
	}
	icfg.ControllerAddr = "trellis-controller." + k8slabels.ControlPlaneNamespace + ".svc." + cfg.ClusterDomain + ":8086"
	icfg.Registerer = cfg.Metrics.Registry
	icfg.Logger = cfg.Logger.With("component", "injector")
	return func(ns serve.NamespaceAnnotations) http.Handler {
		icfg.NamespaceAnnotations = ns
		return newAnchoredHandler(icfg, authority)
	}, nil
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
//	TRELLIS_PROXY_DEFAULT_INBOUND_POLICY        the cluster's default inbound policy (chart proxy.defaultInboundPolicy)
//	TRELLIS_PROXY_TRACE_COLLECTOR, TRELLIS_PROXY_TRACE_SAMPLE_RATIO  tracing defaults (chart proxy.tracing.*)
func injectorConfigFromEnv(getenv func(string) string) (inject.Config, error) {
	c := inject.Config{
		ProxyImage:      getenv("TRELLIS_PROXY_IMAGE"),
		InitImage:       getenv("TRELLIS_INIT_IMAGE"),
		ProxyLogLevel:   getenv("TRELLIS_PROXY_LOG_LEVEL"),
		DefaultRedirect: getenv("TRELLIS_PROXY_REDIRECT"),
	}
	c.DefaultInboundPolicy = getenv("TRELLIS_PROXY_DEFAULT_INBOUND_POLICY")
	c.TraceCollector, c.TraceSampleRatio = getenv("TRELLIS_PROXY_TRACE_COLLECTOR"), getenv("TRELLIS_PROXY_TRACE_SAMPLE_RATIO")
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
		q, err := inject.ParseQuantity(v, r.limit)
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
	cfg       inject.Config
	authority *ca.CA

	mu          sync.Mutex
	fingerprint string
	h           http.Handler
}

func newAnchoredHandler(cfg inject.Config, authority *ca.CA) *anchoredHandler {
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
		a.h, a.fingerprint = inject.NewHandler(cfg), st.Fingerprint
	}
	return a.h
}

func (a *anchoredHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.current().ServeHTTP(w, r)
}
