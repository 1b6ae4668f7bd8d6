package diagcmd

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/cli/complete"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/cli/policycmd"
)

// PodPolicy is `diagnostics policy`'s document: the ServerPolicy as the
// proxy receives it (protojson), and the default that decides when it is
// the default answer.
type PodPolicy struct {
	Namespace string          `json:"namespace"`
	Pod       string          `json:"pod"`
	Port      uint32          `json:"port"`
	Default   string          `json:"defaultInboundPolicy"`
	Policy    json.RawMessage `json:"policy"`
	sp        *apiv1.ServerPolicy
}

func newPolicy() *cobra.Command {
	var (
		r   policycmd.PodPolicyRequest
		out output.Flag
	)
	cmd := &cobra.Command{
		Use:   "policy POD PORT",
		Short: "Show the inbound policy the controller answers a pod's proxy for a port",
		Long: `Compute the ServerPolicy that the controller's Policy service answers the
pod's proxy for PORT (the app's port), with the controller's own
translation (internal/policymodel) of the namespace's Servers,
AuthorizationPolicies, HTTPRoutes and GRPCRoutes, read with your
credentials: the same code, so the same answer. The controller itself
answers a policy only to the workload's own identity (a proxy may not read
another workload's policy), so this command does not ask it.

A port no Server selects gets the default answer: the proxy then applies
its default inbound policy (the pod's or namespace's
config.trellis.io/default-inbound-policy annotation, else
all-unauthenticated). "trellis policy explain" decides one call against the
same answer.`,
		Example: `  # The books pod's port 8080 in the demo
  trellis diagnostics policy books-7c9f-abcde 8080 -n trellis-demo

  # The answer as the proxy gets it (protojson)
  trellis diagnostics policy books-7c9f-abcde 8080 -n trellis-demo -o json

  # Local mode: a workload of the demo's store file
  trellis diagnostics policy books 9101 -n demo --config /tmp/trellis-demo/mesh.yaml`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := strconv.ParseUint(args[1], 10, 16)
			if err != nil || p == 0 {
				return fmt.Errorf("PORT %q: want 1-65535", args[1])
			}
			r.Pod, r.Port = args[0], uint32(p)
			sp, def, err := policycmd.PodPolicy(cmd.Context(), r)
			if err != nil {
				return err
			}
			raw, err := protojson.Marshal(sp)
			if err != nil {
				return err
			}
			doc := PodPolicy{Namespace: r.Namespace, Pod: r.Pod, Port: r.Port, Default: def, Policy: raw, sp: sp}
			if doc.Default == "" {
				doc.Default = "all-unauthenticated"
			}
			return out.Print(cmd.OutOrStdout(), doc, func(w io.Writer) error { return writePolicy(w, doc) })
		},
	}
	f := cmd.Flags()
	f.StringVarP(&r.Namespace, "namespace", "n", "default", "namespace of the pod")
	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
	f.StringVar(&r.Kubeconfig, "kubeconfig", "", "path to the kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&r.Context, "context", "", "kubeconfig context to use (default the current context)")
	f.StringVar(&r.Config, "config", "", "local mode: the store file (as trellis demo writes it) instead of a cluster")
	f.StringVar(&r.TrustDomain, "trust-domain", "", "trust domain of service accounts in authorizations (default cluster.local)")
	out.Register(cmd, output.Text, output.JSON, output.YAML)
	return cmd
}

func writePolicy(w io.Writer, d PodPolicy) error {
	sp := d.sp
	access := strings.ToLower(strings.ReplaceAll(sp.GetAccess().String(), "_", "-"))
	if sp.GetAccess() == apiv1.AccessPolicy_ACCESS_UNSPECIFIED {
		access = "(the proxy's default: " + d.Default + ")"
	}
	fmt.Fprintf(w, "%s/%s port %d\n  server: %s (source %s)\n  protocol: %s\n  access: %s\n",
		d.Namespace, d.Pod, d.Port, sp.GetName(), dash(sp.GetSource()), sp.GetProtocol(), access)
	if sp.GetAudit() {
		fmt.Fprintln(w, "  audit: denials are logged and let through")
	}
	if l := sp.GetLimits(); l != nil {
		writeLimits(w, l)
	}
	if sp.GetAccess() == apiv1.AccessPolicy_ACCESS_UNSPECIFIED && len(sp.GetAuthorizations()) == 0 && len(sp.GetRoutes()) == 0 {
		fmt.Fprintf(w, "  no Server selects this port: %s decides every call\n", d.Default)
		return nil
	}
	writeAuthz(w, "  ", sp.GetAuthorizations())
	for _, r := range sp.GetRoutes() {
		fmt.Fprintf(w, "  route %s: %s\n", r.GetName(), dash(matches(r.GetMatches(), "; ")))
		writeAuthz(w, "    ", r.GetAuthorizations())
	}
	return nil
}

func writeAuthz(w io.Writer, indent string, as []*apiv1.Authorization) {
	if len(as) == 0 {
		fmt.Fprintf(w, "%sauthorizations: none\n", indent)
		return
	}
	for _, a := range as {
		var who []string
		if a.GetUnauthenticated() {
			who = append(who, "anyone (unauthenticated)")
		}
		who = append(who, a.GetIdentities()...)
		for _, ns := range a.GetNamespaces() {
			who = append(who, "namespace "+ns)
		}
		for _, n := range a.GetNets() {
			who = append(who, "network "+n.GetCidr())
		}
		fmt.Fprintf(w, "%sauthorization %s: %s\n", indent, a.GetName(), dash(strings.Join(who, ", ")))
	}
}

// match renders a route match as "GET /path" or "/prefix*", headers after.
func match(m *apiv1.RouteMatch) string {
	path := m.GetPathExact()
	if path == "" {
		path = m.GetPathPrefix() + "*"
	}
	parts := []string{strings.TrimSpace(m.GetMethod() + " " + path)}
	for _, h := range m.GetHeaders() {
		op := "="
		if h.GetRegex() {
			op = "~"
		}
		parts = append(parts, h.GetName()+op+h.GetValue())
	}
	return strings.Join(parts, " ")
}

// writeLimits writes a RateLimit's limits (0: none), one line per kind.
func writeLimits(w io.Writer, l *apiv1.Limits) {
	fmt.Fprintf(w, "  limits: %d rps (burst %d), %d concurrent\n", l.GetRequestsPerSecond(), l.GetBurst(), l.GetMaxConcurrency())
	if l.GetClientRequestsPerSecond() > 0 {
		fmt.Fprintf(w, "    per client: %d rps (burst %d)\n", l.GetClientRequestsPerSecond(), l.GetClientBurst())
	}
	for _, o := range l.GetOverrides() {
		fmt.Fprintf(w, "    override: %d rps (burst %d) for %s\n", o.GetRequestsPerSecond(), o.GetBurst(), strings.Join(o.GetIdentities(), ", "))
	}
	if a := l.GetAdaptiveConcurrency(); a != nil {
		fmt.Fprintf(w, "    adaptive concurrency: on (min %d, max %d; 0: the proxy's default)\n", a.GetMinLimit(), a.GetMaxLimit())
	}
	if p := l.GetProbes(); len(p.GetMatches()) > 0 {
		fmt.Fprintf(w, "    exempt: plaintext kubelet probes %s\n", matches(p.GetMatches(), ", "))
	}
}

// matches is a route's matches, joined by sep.
func matches(ms []*apiv1.RouteMatch, sep string) string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = match(m)
	}
	return strings.Join(out, sep)
}
