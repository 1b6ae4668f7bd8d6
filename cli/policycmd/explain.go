package policycmd

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	policyclient "github.com/trellis-mesh/trellis/api/policy/client/clientset/versioned"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/policymodel"
	"github.com/trellis-mesh/trellis/internal/storepolicy"
)

// Unauthenticated is the --from value of a caller without mesh TLS.
const Unauthenticated = "unauthenticated"

// Explanation is the answer of `trellis policy explain`.
type Explanation struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Port     uint32 `json:"port"`
	Decision string `json:"decision"` // allowed | denied | audited
	Server   string `json:"server"`
	Source   string `json:"source"`
	Access   string `json:"access"`
	Route    string `json:"route,omitempty"`
	Authz    string `json:"authorization,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Message  string `json:"message,omitempty"`
	// Authorizations are the server's own, by name: what could allow.
	Authorizations []string `json:"authorizations"`
}

// ParseFrom turns --from into an authz.Input: a SPIFFE ID, NS/SA (a
// service account of the trust domain), or "unauthenticated".
func ParseFrom(from, trustDomain string) (authz.Input, error) {
	switch {
	case from == Unauthenticated:
		return authz.Input{}, nil
	case strings.HasPrefix(from, "spiffe://"):
		if _, err := identity.Parse(from); err != nil {
			return authz.Input{}, fmt.Errorf("--from %q: %w", from, err)
		}
		return authz.Input{Identity: from, TLS: true}, nil
	}
	ns, sa, ok := strings.Cut(from, "/")
	if !ok {
		return authz.Input{}, fmt.Errorf("--from %q: want a SPIFFE ID, NAMESPACE/SERVICEACCOUNT or %s", from, Unauthenticated)
	}
	id, err := identity.New(trustDomain, ns, sa)
	if err != nil {
		return authz.Input{}, fmt.Errorf("--from %q: %w", from, err)
	}
	return authz.Input{Identity: id.String(), TLS: true}, nil
}

// Explain decides in against sp with the proxy's defaults, as the proxy's
// authorization stage does (internal/authz), and says why.
func Explain(sp *apiv1.ServerPolicy, in authz.Input, def authz.Defaults) (Explanation, error) {
	p, err := authz.Compile(sp, def)
	if err != nil {
		return Explanation{}, fmt.Errorf("policy %s: %w", sp.GetName(), err)
	}
	d := p.Decide(in)
	e := Explanation{Server: d.Server, Source: sp.GetSource(), Access: authz.AccessName(p.Access()), Route: d.Route,
		Authz: d.Authz, Reason: d.Reason, Message: d.Msg, Authorizations: []string{}}
	switch {
	case d.Audited:
		e.Decision = "audited"
	case d.Allowed:
		e.Decision = "allowed"
	default:
		e.Decision = "denied"
	}
	for _, a := range sp.GetAuthorizations() {
		e.Authorizations = append(e.Authorizations, a.GetName())
	}
	return e, nil
}

type explainOpts struct {
	common
	from, to, method, path, fromIP, def, trustDomain string
	port                                             uint32
}

func newExplain() *cobra.Command {
	var o explainOpts
	cmd := &cobra.Command{
		Use:   "explain --from IDENTITY --to WORKLOAD --port PORT -n NAMESPACE",
		Short: "Say which policy would allow or deny a call, and why",
		Long: `Compute the policy of the target workload's port from the Servers,
AuthorizationPolicies, HTTPRoutes and GRPCRoutes (of the cluster, or of the
local store file with --config) with the controller's translation
(internal/policymodel), and decide the call with the code the proxy runs
(internal/authz).

--from is a SPIFFE ID, NAMESPACE/SERVICEACCOUNT, or "unauthenticated" (no
mesh TLS). --to is a service account (the workload's identity) of the
namespace, or a pod (local: workload) name. Without --method and --path the
call is a connection (TCP): no route is matched. When no Server selects the
port, the proxy's default decides: --default-inbound-policy, else (on
Kubernetes) the pod's config.trellis.io/default-inbound-policy annotation,
else its namespace's, else all-unauthenticated.`,
		Example: `  # May web call books' port 9101 in the demo (local mode)?
  trellis policy explain -n demo --config /tmp/trellis-demo/mesh.yaml \
      --from demo/web --to books --port 9101 --method GET --path /books

  # On a cluster, a caller without mesh TLS, as JSON
  trellis policy explain -n shop --from unauthenticated --to books --port 8080 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check("text|json|yaml"); err != nil {
				return err
			}
			e, err := o.run(cmd.Context())
			if err != nil {
				return err
			}
			return render(cmd.OutOrStdout(), o.output, e, func(w io.Writer) error { return writeExplanation(w, e) })
		},
	}
	o.flags(cmd, "text|json|yaml")
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "the caller: SPIFFE ID, NAMESPACE/SERVICEACCOUNT or unauthenticated (required)")
	f.StringVar(&o.to, "to", "", "the called workload: service account or pod name in --namespace (required)")
	_ = cmd.RegisterFlagCompletionFunc("to", o.completeWorkloads)
	f.Uint32Var(&o.port, "port", 0, "the called port, as the app listens on it (required)")
	f.StringVar(&o.method, "method", "", "HTTP method of the request")
	f.StringVar(&o.path, "path", "", "HTTP path of the request")
	f.StringVar(&o.fromIP, "from-ip", "", "the caller's IP address, for network-limited authorizations")
	f.StringVar(&o.def, "default-inbound-policy", "", "the proxy's default ("+strings.Join(authz.Values(), ", ")+"; default all-unauthenticated)")
	f.StringVar(&o.trustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain of NAMESPACE/SERVICEACCOUNT callers and the proxy")
	return cmd
}

func (o *explainOpts) run(ctx context.Context) (Explanation, error) {
	if o.from == "" || o.to == "" || o.port == 0 || o.port > 65535 {
		return Explanation{}, fmt.Errorf("--from, --to and --port (1-65535) are required")
	}
	in, err := ParseFrom(o.from, o.trustDomain)
	if err != nil {
		return Explanation{}, err
	}
	if o.fromIP != "" {
		if in.ClientIP, err = netip.ParseAddr(o.fromIP); err != nil {
			return Explanation{}, fmt.Errorf("--from-ip: %w", err)
		}
	}
	in.Method, in.Path, in.Conn = o.method, o.path, o.method == "" && o.path == ""
	if u, err := url.ParseRequestURI(o.path); err == nil {
		// --path as sent: decoded for matching, escaped as the app gets it.
		in.Path, in.RawPath = u.Path, u.EscapedPath()
	}
	if !in.Conn && in.Path == "" {
		in.Path = "/"
	}
	sp, def, err := o.policy(ctx)
	if err != nil {
		return Explanation{}, err
	}
	access, err := authz.ParseAccess(def)
	if err != nil {
		return Explanation{}, err
	}
	e, err := Explain(sp, in, authz.Defaults{Access: access, TrustDomain: o.trustDomain})
	e.From, e.To, e.Port = o.from, o.to, o.port
	return e, err
}

// policy computes the ServerPolicy of --to's port with
// internal/policymodel, as the controller does, and the default that
// applies to it.
func (o *explainOpts) policy(ctx context.Context) (*apiv1.ServerPolicy, string, error) {
	src, err := o.source()
	if err != nil {
		return nil, "", err
	}
	pods, err := src.Pods(ctx, o.namespace)
	if err != nil {
		return nil, "", err
	}
	if pods, err = only(pods, o.to, o.namespace); err != nil {
		return nil, "", err
	}
	if o.config == "" {
		return o.kubePolicy(ctx, pods)
	}
	f, err := ReadStore(o.config)
	if err != nil {
		return nil, "", err
	}
	p, err := storepolicy.Build(f.Policies)
	if err != nil {
		return nil, "", fmt.Errorf("store file %s: %w", o.config, err)
	}
	ws := make([]storepolicy.Workload, len(pods))
	for i, pod := range pods {
		ws[i] = storepolicy.Workload{Name: pod.Name, Labels: pod.Labels}
	}
	return p.Answer(o.namespace, ws, o.port, cmp.Or(f.TrustDomain, o.trustDomain)), o.def, nil
}

// kubePolicy connects to the cluster and computes the answer (kubeAnswer).
func (o *explainOpts) kubePolicy(ctx context.Context, pods []Pod) (*apiv1.ServerPolicy, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.context}).ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("load kubeconfig: %w", err)
	}
	var c kubeClients
	if c.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, "", err
	}
	if c.policy, err = policyclient.NewForConfig(cfg); err != nil {
		return nil, "", err
	}
	if c.gateway, err = gwclient.NewForConfig(cfg); err != nil {
		return nil, "", err
	}
	return o.kubeAnswer(ctx, c, pods)
}

// kubeClients are the cluster's APIs explain reads.
type kubeClients struct {
	kube    kubernetes.Interface
	policy  policyclient.Interface
	gateway gwclient.Interface
}

// kubeAnswer reads the pods and the namespace's Servers,
// AuthorizationPolicies, HTTPRoutes and GRPCRoutes and translates them; the
// default is the flag, else the pod's annotation, else the namespace's.
func (o *explainOpts) kubeAnswer(ctx context.Context, c kubeClients, pods []Pod) (*apiv1.ServerPolicy, string, error) {
	in := policymodel.Input{Port: o.port, TrustDomain: o.trustDomain}
	for _, p := range pods {
		pod, err := c.kube.CoreV1().Pods(o.namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return nil, "", fmt.Errorf("get pod %s/%s: %w", o.namespace, p.Name, err)
		}
		in.Pods = append(in.Pods, pod)
	}
	ns, err := c.kube.CoreV1().Namespaces().Get(ctx, o.namespace, metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("get namespace %s: %w", o.namespace, err)
	}
	if in.Objects, err = kubeObjects(ctx, c, o.namespace); err != nil {
		return nil, "", err
	}
	def := cmp.Or(o.def, in.Pods[0].Annotations[k8slabels.AnnotationDefaultInboundPolicy], ns.Annotations[k8slabels.AnnotationDefaultInboundPolicy])
	return policymodel.Translate(in), def, nil
}

// kubeObjects lists a namespace's policy objects. A cluster without the
// Gateway API's CRDs has no routes.
func kubeObjects(ctx context.Context, c kubeClients, ns string) (policymodel.Objects, error) {
	var o policymodel.Objects
	servers, err := c.policy.PolicyV1alpha1().Servers(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return o, fmt.Errorf("list Servers of %s: %w", ns, err)
	}
	aps, err := c.policy.PolicyV1alpha1().AuthorizationPolicies(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return o, fmt.Errorf("list AuthorizationPolicies of %s: %w", ns, err)
	}
	hrs, err := c.gateway.GatewayV1().HTTPRoutes(ns).List(ctx, metav1.ListOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return o, fmt.Errorf("list HTTPRoutes of %s: %w", ns, err)
	}
	grs, err := c.gateway.GatewayV1().GRPCRoutes(ns).List(ctx, metav1.ListOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return o, fmt.Errorf("list GRPCRoutes of %s: %w", ns, err)
	}
	o.Servers = ptrs(servers.Items)
	o.Authz = ptrs(aps.Items)
	if hrs != nil {
		o.HTTPRoutes = ptrs(hrs.Items)
	}
	if grs != nil {
		o.GRPCRoutes = ptrs(grs.Items)
	}
	return o, nil
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

func writeExplanation(w io.Writer, e Explanation) error {
	_, err := fmt.Fprintf(w, "%s -> %s port %d: %s\n  server: %s (source %s, access %s)\n  route: %s\n  allowed by: %s\n  reason: %s\n  %s\n  the server's authorizations: %s\n",
		e.From, e.To, e.Port, strings.ToUpper(e.Decision), e.Server, e.Source, dash(e.Access), dash(e.Route),
		dash(e.Authz), dash(e.Reason), e.Message, dash(strings.Join(e.Authorizations, ", ")))
	return err
}
