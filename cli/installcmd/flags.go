// Package installcmd is `trellis install`, `trellis upgrade` and
// `trellis uninstall`: flags and output around package install, which
// renders the chart and talks to the cluster.
package installcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/cli/kubeconfig"
	"github.com/trellis-mesh/trellis/install"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/internal/version"
)

// renderFlags are shared by install and upgrade.
type renderFlags struct {
	crds            bool
	gatewayChannel  string
	ha              bool
	cni             bool
	multicluster    bool
	mcGateway       bool
	clusterName     string
	defaultInbound  string
	traceCollector  string
	set             []string
	dryCount        bool
	anchorsFile     string
	issuerCertFile  string
	issuerKeyFile   string
	externalIssuer  bool
	acceptTDs       []string
	anchorValidity  time.Duration
	issuerValidity  time.Duration
	webhookValidity time.Duration
}

func (r *renderFlags) add(f *pflag.FlagSet) {
	f.BoolVar(&r.crds, "crds", false, "print only the CRDs (apply them first): policy.trellis.io, workload.trellis.io, and the Gateway API's HTTPRoute, GRPCRoute and ReferenceGrant where the cluster lacks them")
	f.StringVar(&r.gatewayChannel, "gateway-api-channel", "standard", "with --crds, the Gateway API channel of the CRDs installed where absent: standard, experimental (route retries), or none (never an installed one is replaced)")
	f.BoolVar(&r.ha, "ha", false, "high availability: 3 controller replicas spread over nodes, a PodDisruptionBudget, the injector failing closed")
	f.BoolVar(&r.cni, "cni", false, "CNI redirection: a DaemonSet installs the trellis-cni plugin on every node and injected pods get no NET_ADMIN/NET_RAW (set cni.binDir and cni.confDir if the node's CNI directories are not /opt/cni/bin and /etc/cni/net.d)")
	f.BoolVar(&r.multicluster, "multicluster", false, "multicluster: the controller mirrors the exported Services of clusters linked with \"trellis multicluster link\", and may write Services and EndpointSlices (chart multicluster.enabled; docs/multicluster.md)")
	f.BoolVar(&r.mcGateway, "multicluster-gateway", false, "multicluster gateway: linked clusters whose pods cannot reach this cluster's reach its exported Services through a gateway that routes their mesh TLS by server name without terminating it (chart multicluster.gateway.*: a LoadBalancer Service on port 4180 by default; docs/multicluster.md, \"Gateway mode\")")
	f.StringVar(&r.clusterName, "cluster-name", "", "this cluster's name: its trust domain becomes NAME.local (chart identity.trustDomain), so its identities name it and a policy can tell its workloads from another cluster's; required with --multicluster and --multicluster-gateway unless identity.trustDomain is set (docs/multicluster.md)")
	f.StringVar(&r.defaultInbound, "default-inbound-policy", "", "what applies to a port no Server selects, cluster-wide (chart proxy.defaultInboundPolicy; namespaces and pods override it with config.trellis.io/default-inbound-policy): deny, audit, all-authenticated, cluster-authenticated or all-unauthenticated (default)")
	f.StringVar(&r.traceCollector, "trace-collector", "", "host:port of an OTLP/gRPC collector every proxy sends its spans to, cluster-wide (chart proxy.tracing.collector; namespaces and pods override it with config.trellis.io/trace-collector; default none: tracing off)")
	f.StringArrayVar(&r.set, "set", nil, "set a chart value, KEY=VALUE[,KEY=VALUE] (repeatable; keys as in charts/trellis/values.yaml, e.g. image.tag, image.registry, controller.logLevel, proxy.resources.limits.memory)")
	f.BoolVar(&r.dryCount, "dry-count", false, "print how many objects of each kind would be applied instead of the manifests")
	f.StringVar(&r.anchorsFile, "identity-trust-anchors", "", "PEM file of the trust anchors proxies trust (with --identity-issuer-cert/-key, or --identity-external-issuer)")
	f.StringVar(&r.issuerCertFile, "identity-issuer-cert", "", "PEM file of the issuer certificate (then any intermediates) signed by one of the trust anchors")
	f.StringVar(&r.issuerKeyFile, "identity-issuer-key", "", "PEM file of the issuer's private key")
	f.BoolVar(&r.externalIssuer, "identity-external-issuer", false, "the Secret trellis-identity-issuer is managed outside Trellis (cert-manager): do not render it; needs --identity-trust-anchors")
	f.StringSliceVar(&r.acceptTDs, "identity-accept-trust-domains", nil, "trust domains, besides identity.trustDomain, whose mesh peers every proxy accepts: other clusters sharing the trust anchor (comma-separated; chart identity.acceptTrustDomains; docs/multicluster.md)")
	f.DurationVar(&r.anchorValidity, "identity-anchor-validity", install.DefaultAnchorValidity, "validity of a generated trust anchor")
	f.DurationVar(&r.issuerValidity, "identity-issuer-validity", install.DefaultIssuerValidity, "validity of a generated issuer (cut to the anchor's)")
	f.DurationVar(&r.webhookValidity, "webhook-cert-validity", install.DefaultWebhookValidity, "validity of a generated webhook serving certificate and its CA")
}

// options are the chart options of the flags.
func (r *renderFlags) options() install.Options {
	return install.Options{HA: r.ha, Set: r.sets(), AcceptTrustDomains: r.acceptTDs, Version: version.Version}
}

// sets is the --set list with the profile flags first, so an explicit
// --set still wins.
func (r *renderFlags) sets() []string {
	var profile []string
	if r.cni {
		profile = append(profile, "cni.enabled=true")
	}
	if r.multicluster {
		profile = append(profile, "multicluster.enabled=true")
	}
	if r.mcGateway {
		profile = append(profile, "multicluster.gateway.enabled=true")
	}
	if r.clusterName != "" {
		profile = append(profile, "identity.trustDomain="+r.clusterName+".local")
	}
	if r.defaultInbound != "" {
		profile = append(profile, "proxy.defaultInboundPolicy="+r.defaultInbound)
	}
	if r.traceCollector != "" {
		profile = append(profile, "proxy.tracing.collector="+r.traceCollector)
	}
	return append(profile, r.set...)
}

// checkTrustDomain: a cluster joining others needs a trust domain of its
// own, named on purpose (the chart's default, cluster.local, is every
// cluster's): --cluster-name, or identity.trustDomain set explicitly
// (which may keep cluster.local, e.g. for an upgrade).
func (r *renderFlags) checkTrustDomain() error {
	explicit := false
	for _, s := range r.set {
		for _, kv := range strings.Split(s, ",") {
			explicit = explicit || strings.HasPrefix(strings.TrimSpace(kv), "identity.trustDomain=")
		}
	}
	if r.clusterName != "" {
		if explicit {
			return errors.New("--cluster-name and --set identity.trustDomain both name the trust domain: give one")
		}
		if err := identity.ValidateTrustDomain(r.clusterName + ".local"); err != nil || strings.Contains(r.clusterName, ".") {
			return fmt.Errorf("--cluster-name %q: want a DNS label (lowercase letters, digits and inner '-', at most 63 characters)", r.clusterName)
		}
	}
	if (r.multicluster || r.mcGateway) && r.clusterName == "" && !explicit {
		return errors.New("a cluster linked with others needs a trust domain of its own, so that its identities name it: " +
			"--cluster-name NAME (trust domain NAME.local) or --set identity.trustDomain=DOMAIN " +
			"(--set identity.trustDomain=cluster.local keeps the default, e.g. for an existing install)")
	}
	return nil
}

// suppliedIdentity reads --identity-* files. ok is false when none is set.
func (r *renderFlags) suppliedIdentity(now time.Time, warn io.Writer) (id install.Identity, ok bool, err error) {
	anyIssuer := r.issuerCertFile != "" || r.issuerKeyFile != ""
	if !anyIssuer && r.anchorsFile == "" && !r.externalIssuer {
		return id, false, nil
	}
	switch {
	case r.anchorsFile == "":
		return id, false, fmt.Errorf("--identity-trust-anchors is required with --identity-issuer-cert/-key or --identity-external-issuer")
	case r.externalIssuer && anyIssuer:
		return id, false, fmt.Errorf("--identity-external-issuer and --identity-issuer-cert/-key exclude each other")
	case !r.externalIssuer && (r.issuerCertFile == "" || r.issuerKeyFile == ""):
		return id, false, fmt.Errorf("--identity-issuer-cert and --identity-issuer-key go together (or --identity-external-issuer)")
	}
	if id.TrustAnchorsPEM, err = readPEMFile(r.anchorsFile); err != nil {
		return id, false, fmt.Errorf("--identity-trust-anchors: %w", err)
	}
	if !r.externalIssuer {
		if id.IssuerCertPEM, err = readPEMFile(r.issuerCertFile); err != nil {
			return id, false, fmt.Errorf("--identity-issuer-cert: %w", err)
		}
		if id.IssuerKeyPEM, err = readPEMFile(r.issuerKeyFile); err != nil {
			return id, false, fmt.Errorf("--identity-issuer-key: %w", err)
		}
	}
	warnings, err := install.CheckIdentity(id, now)
	if err != nil {
		return id, false, err
	}
	for _, w := range warnings {
		fmt.Fprintln(warn, "warning:", w)
	}
	return id, true, nil
}

func readPEMFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > pki.MaxInputLength {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d allowed", path, st.Size(), pki.MaxInputLength)
	}
	return os.ReadFile(path)
}

// write prints the manifest, or with --dry-count its object counts.
func (r *renderFlags) write(w io.Writer, m *install.Manifest) error {
	if r.dryCount {
		total := 0
		for _, c := range m.Counts() {
			fmt.Fprintf(w, "%-30s %d\n", c.Kind, c.Count)
			total += c.Count
		}
		_, err := fmt.Fprintf(w, "%-30s %d\n", "total", total)
		return err
	}
	_, err := w.Write(m.YAML())
	return err
}

// kubeFlags locate the cluster.
type kubeFlags struct {
	kubeconfig string
	context    string
}

func (k *kubeFlags) add(f *pflag.FlagSet) {
	f.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	f.StringVar(&k.context, "context", "", "kubeconfig context (default: the current one)")
}

func (k *kubeFlags) restConfig() (*rest.Config, error) {
	return kubeconfig.Load(k.kubeconfig, k.context)
}

func (k *kubeFlags) clientset() (kubernetes.Interface, error) {
	cfg, err := k.restConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

func (k *kubeFlags) dynamic() (dynamic.Interface, error) {
	cfg, err := k.restConfig()
	if err != nil {
		return nil, err
	}
	return dynamic.NewForConfig(cfg)
}

// printCRDs is --crds for install and upgrade: the Gateway API CRDs are
// looked up in the cluster, and only absent ones are printed; what is
// kept is said in the header and on stderr.
func printCRDs(cmd *cobra.Command, r *renderFlags, k *kubeFlags) error {
	channel := r.gatewayChannel
	if channel == "none" {
		channel = ""
	}
	var lookup install.CRDLookup
	if channel != "" {
		dc, err := k.dynamic()
		if err == nil {
			lookup = crdLookup(cmd.ErrOrStderr(), dc)
		} else {
			fmt.Fprintf(cmd.ErrOrStderr(), "no cluster to look at (%v): every Gateway API CRD is printed\n", err)
		}
	}
	m, err := install.RenderAllCRDs(cmd.Context(), channel, lookup)
	if err != nil {
		return err
	}
	return r.write(cmd.OutOrStdout(), m)
}

// crdLookup reads CRDs through dc; an unreachable cluster is said once and
// read as "absent" (kubectl apply --server-side then refuses to take over
// another manager's CRD).
func crdLookup(stderr io.Writer, dc dynamic.Interface) install.CRDLookup {
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	unreachable := false
	return func(ctx context.Context, name string) (*unstructured.Unstructured, error) {
		if unreachable {
			return nil, nil
		}
		u, err := dc.Resource(gvr).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil, nil
		case err != nil && install.IsUnreachable(err):
			unreachable = true
			fmt.Fprintf(stderr, "cluster unreachable (%v): every Gateway API CRD is printed\n", err)
			return nil, nil
		}
		return u, err
	}
}
