package policycmd

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	policyclient "github.com/trellis-mesh/trellis/api/policy/client/clientset/versioned"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
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
AuthorizationPolicies and HTTPRoutes (of the cluster, or of the local store
file with --config), and decide the call with the code the proxy runs
(internal/authz).

--from is a SPIFFE ID, NAMESPACE/SERVICEACCOUNT, or "unauthenticated" (no
mesh TLS). --to is a service account (the workload's identity) of the
namespace, or a pod (local: workload) name. Without --method and --path the
call is a connection (TCP): no route is matched. When no Server selects the
port, the proxy's default decides: --default-inbound-policy, else (on
Kubernetes) the pod's config.trellis.io/default-inbound-policy annotation,
else all-unauthenticated.`,
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

// policy computes the ServerPolicy of --to's port and the default that
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
	var p storepolicy.Policies
	def := o.def
	if o.config != "" {
		f, err := ReadStore(o.config)
		if err != nil {
			return nil, "", err
		}
		if p, err = storepolicy.Build(f.Policies); err != nil {
			return nil, "", fmt.Errorf("store file %s: %w", o.config, err)
		}
	} else if p, def, err = o.kubePolicies(ctx, pods); err != nil {
		return nil, "", err
	}
	labels := make([]map[string]string, len(pods))
	for i, pod := range pods {
		labels[i] = pod.Labels
	}
	if sp := storepolicy.Resolve(p, o.namespace, labels, o.port); sp != nil {
		return sp, def, nil
	}
	return &apiv1.ServerPolicy{Name: storepolicy.SourceDefault, Source: storepolicy.SourceDefault}, def, nil
}

// kubePolicies reads the namespace's Servers and AuthorizationPolicies,
// and the default: the pod's annotation, else the namespace's, else the
// flag.
func (o *explainOpts) kubePolicies(ctx context.Context, pods []Pod) (storepolicy.Policies, string, error) {
	var p storepolicy.Policies
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.context}).ClientConfig()
	if err != nil {
		return p, "", fmt.Errorf("load kubeconfig: %w", err)
	}
	c, err := policyclient.NewForConfig(cfg)
	if err != nil {
		return p, "", err
	}
	servers, err := c.PolicyV1alpha1().Servers(o.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return p, "", fmt.Errorf("list Servers of %s: %w", o.namespace, err)
	}
	for i := range servers.Items {
		p.Servers = append(p.Servers, &servers.Items[i])
	}
	aps, err := c.PolicyV1alpha1().AuthorizationPolicies(o.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return p, "", fmt.Errorf("list AuthorizationPolicies of %s: %w", o.namespace, err)
	}
	for i := range aps.Items {
		p.AuthorizationPolicies = append(p.AuthorizationPolicies, &aps.Items[i])
	}
	def := o.def
	if v := pods[0].Annotations[k8slabels.AnnotationDefaultInboundPolicy]; v != "" && def == "" {
		def = v
	}
	return p, def, nil
}

func writeExplanation(w io.Writer, e Explanation) error {
	_, err := fmt.Fprintf(w, "%s -> %s port %d: %s\n  server: %s (source %s, access %s)\n  route: %s\n  allowed by: %s\n  reason: %s\n  %s\n  the server's authorizations: %s\n",
		e.From, e.To, e.Port, strings.ToUpper(e.Decision), e.Server, e.Source, dash(e.Access), dash(e.Route),
		dash(e.Authz), dash(e.Reason), e.Message, dash(strings.Join(e.Authorizations, ", ")))
	return err
}
