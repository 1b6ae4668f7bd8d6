package externalworkloadcmd

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wlv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/cli/check"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// listDoc is the -o json|yaml document of list.
type listDoc struct {
	TrustDomain string         `json:"trustDomain"`
	Workloads   []workloadInfo `json:"workloads"`
}

type workloadInfo struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Identity  string   `json:"identity"`
	Addresses []string `json:"addresses"`
	// Certified is the Certified condition's status (True, False,
	// Unknown when the controller has not written it).
	Certified string     `json:"certified"`
	Reason    string     `json:"reason,omitempty"`
	Expiry    *time.Time `json:"expiry,omitempty"`
	KeySHA256 string     `json:"keySHA256,omitempty"`
}

func newListCommand(open OpenFunc, cf *clusterFlags) *cobra.Command {
	var (
		ns, controlPlane string
		out              output.Flag
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the ExternalWorkloads: identity, addresses, certified, certificate expiry",
		Long: `List the ExternalWorkloads of a namespace (-n), or of every namespace,
with the identity their proxy gets (the trust domain is read from the
controller's Deployment in --control-plane-namespace), their addresses,
whether their proxy holds a certificate (the Certified condition) and
when it expires. -o wide adds the SHA-256 of the key that redeemed the
last bootstrap token: only that key may renew.`,
		Example: `  # Every namespace
  trellis external-workload list

  # One namespace, as JSON
  trellis external-workload list -n shop -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.open(open)
			if err != nil {
				return err
			}
			doc, err := listWorkloads(cmd.Context(), c, ns, controlPlane, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), doc, func(w io.Writer) error { return printList(w, doc, out.Format() == output.Wide, time.Now()) })
		},
	}
	addNamespaceFlag(cmd, &ns, "", "namespace of the ExternalWorkloads (default: every namespace)")
	cmd.Flags().StringVar(&controlPlane, "control-plane-namespace", k8slabels.ControlPlaneNamespace, "namespace of the Trellis control plane (its trust domain names identities)")
	out.Register(cmd, output.Text, output.Wide, output.JSON, output.YAML)
	return cmd
}

// listWorkloads reads the workloads and the controller's trust domain;
// without the latter (no controller there) identities use the default,
// with a warning.
func listWorkloads(ctx context.Context, c Clients, ns, controlPlane string, warn io.Writer) (listDoc, error) {
	list, err := c.Workloads.WorkloadV1alpha1().ExternalWorkloads(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return listDoc{}, fmt.Errorf("list externalworkloads: %w", err)
	}
	td, _, err := check.ControllerTrustDomains(ctx, c.Kube, controlPlane)
	if err != nil {
		td = identity.DefaultTrustDomain
		fmt.Fprintf(warn, "warning: trust domain of the controller unknown (%v): identities shown in %s\n", err, td)
	}
	doc := listDoc{TrustDomain: td, Workloads: []workloadInfo{}}
	for i := range list.Items {
		doc.Workloads = append(doc.Workloads, describe(&list.Items[i], td))
	}
	slices.SortFunc(doc.Workloads, func(a, b workloadInfo) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return doc, nil
}

func describe(ew *wlv1.ExternalWorkload, td string) workloadInfo {
	w := workloadInfo{
		Namespace: ew.Namespace, Name: ew.Name,
		Identity:  identity.ID{TrustDomain: td, Namespace: ew.Namespace, ServiceAccount: ew.Spec.ServiceAccount}.String(),
		Certified: string(metav1.ConditionUnknown), KeySHA256: ew.Status.KeySHA256,
		Addresses: []string{},
	}
	for _, a := range ew.Spec.Addresses {
		w.Addresses = append(w.Addresses, a.IP)
	}
	if c := meta.FindStatusCondition(ew.Status.Conditions, wlv1.ConditionCertified); c != nil {
		w.Certified, w.Reason = string(c.Status), c.Reason
	}
	if e := ew.Status.CertificateExpiry; e != nil {
		t := e.UTC()
		w.Expiry = &t
	}
	return w
}

func printList(w io.Writer, doc listDoc, wide bool, now time.Time) error {
	if len(doc.Workloads) == 0 {
		_, err := fmt.Fprintln(w, "No external workloads.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "NAMESPACE\tNAME\tIDENTITY\tADDRESSES\tCERTIFIED\tEXPIRY"
	if wide {
		head += "\tKEY SHA-256"
	}
	fmt.Fprintln(tw, head)
	for _, x := range doc.Workloads {
		certified := x.Certified
		if x.Reason != "" && x.Certified != string(metav1.ConditionTrue) {
			certified += " (" + x.Reason + ")"
		}
		line := strings.Join([]string{x.Namespace, x.Name, x.Identity, strings.Join(x.Addresses, ","), certified, expiry(x.Expiry, now)}, "\t")
		if wide {
			line += "\t" + orDash(x.KeySHA256)
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// expiry is the time with what is left, or that it has passed.
func expiry(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	s := t.Format(time.RFC3339)
	if d := t.Sub(now); d > 0 {
		return s + " (" + d.Round(time.Minute).String() + " left)"
	}
	return s + " (EXPIRED)"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
