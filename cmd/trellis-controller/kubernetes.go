package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/controller/k8s/serve"
	"github.com/trellis-mesh/trellis/controller/kube"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/mclink"
	"github.com/trellis-mesh/trellis/internal/pki"
)

func newKubernetesCmd() *cobra.Command {
	var cfg kube.Config
	var level string
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
			return run(cmd, level, func(ctx context.Context, log *slog.Logger) error {
				cfg.Logger = log
				return kube.Run(ctx, cfg)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the pod's in-cluster configuration")
	f.StringVar(&cfg.IssuerDir, "issuer-dir", "", "directory of the mounted issuer Secret (tls.crt, tls.key, ca.crt) (required)")
	f.StringVar(&cfg.TrustAnchorsFile, "trust-anchors-file", "", "file of the trust bundle (PEM anchors) served to proxies and injected pods, e.g. the mounted trellis-trust-anchors ConfigMap; reloaded when it changes; empty: ca.crt of --issuer-dir")
	f.StringVar(&cfg.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain of workload identities")
	f.StringSliceVar(&cfg.AcceptTrustDomains, "accept-trust-domains", nil, "trust domains, besides --trust-domain, whose mesh peers every injected proxy accepts: other clusters under the same trust anchor (comma-separated; docs/multicluster.md)")
	f.BoolVar(&cfg.Multicluster, "multicluster", false, "mirror the exported services of linked clusters (link Secrets of type "+string(mclink.SecretType)+" in the pod's namespace; needs write on Services and EndpointSlices; docs/multicluster.md)")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "DNS suffix of services (name.ns.svc.<cluster-domain>)")
	f.StringVar(&cfg.Listen, "listen", serve.DefaultListen, "address of the gRPC (mTLS) server proxies connect to")
	f.StringVar(&cfg.AdminAddr, "admin-addr", serve.DefaultAdminAddr, "address of the admin HTTP server (/metrics, /ready, /live)")
	f.StringVar(&cfg.WebhookAddr, "webhook-addr", kube.DefaultWebhookAddr, "address of the proxy injector's admission webhook (HTTPS, path /inject); empty disables it")
	f.StringVar(&cfg.TapAPIAddr, "tap-api-addr", "", "address of the tap.trellis.io aggregated API (HTTPS, the webhook's key pair; the chart sets "+kube.DefaultTapAPIAddr+"); empty disables it")
	f.StringVar(&cfg.WebhookTLSDir, "webhook-tls-dir", kube.DefaultWebhookTLSDir, "directory of the webhook's mounted kubernetes.io/tls Secret (tls.crt, tls.key; reloaded when it changes)")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", serve.DefaultShutdownGrace, "how long a stop waits for calls in flight")
	f.DurationVar(&cfg.DrainDelay, "drain-delay", serve.DefaultDrainDelay, "how long a stop keeps serving, not ready, before closing its listeners (so the webhook refuses no admission while its endpoint is being removed)")
	f.DurationVar(&cfg.SyncTimeout, "sync-timeout", serve.DefaultSyncTimeout, "how long to wait for the first lists from the API server")
	f.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&cfg.HA, "ha", false, "several replicas: elect one (a Lease in the pod's namespace) to write the policy objects' status; every replica serves")
	f.DurationVar(&cfg.CertificateLifetime, "certificate-lifetime", pki.DefaultWorkloadLifetime, "lifetime of the workload certificates it signs (proxies renew at 70 % of it)")
	f.StringVar(&cfg.SoftMemoryLimit, "soft-memory-limit", kube.SoftMemoryLimitAuto, "the Go runtime's soft memory limit: auto (90 % of the container's cgroup memory limit, none without one), off, or a size such as 200MiB; GOMEMLIMIT, when set, wins")
	_ = cmd.MarkFlagRequired("issuer-dir")
	return cmd
}
