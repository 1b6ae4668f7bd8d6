package externalworkloadcmd

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
	"github.com/trellis-mesh/trellis/internal/ewtoken/ewsecret"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// tokenDoc is the -o json|yaml document of token.
type tokenDoc struct {
	Token     string    `json:"token"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Expiry    time.Time `json:"expiry"`
}

type tokenOptions struct {
	namespace, controlPlane string
	ttl                     time.Duration
	now                     func() time.Time
}

func newTokenCommand(open OpenFunc, cf *clusterFlags) *cobra.Command {
	o := tokenOptions{now: time.Now}
	var out output.Flag
	cmd := &cobra.Command{
		Use:   "token NAME -n NAMESPACE",
		Short: "Mint a single-use bootstrap token for an ExternalWorkload's proxy",
		Long: `Mint a bootstrap token for the ExternalWorkload NAME in NAMESPACE and
print it: the credential its trellis-proxy (--external-workload NS/NAME,
--token-file) sends for its first certificate.

The token is a secret: move it to the host over a channel you trust and
delete other copies. It works once, for this workload only, until --ttl
(at most 24h). The cluster keeps only its SHA-256, in a Secret
trellis-ew-token-<hash prefix> in --control-plane-namespace, which the
controller deletes when the token is redeemed or found expired; creating
it needs the right to create Secrets there.

A proxy that restarts (its key lives only in its memory), or whose
certificate expired while it was offline, needs a new token.

-o text prints the token alone on stdout (and a note on stderr);
-o json|yaml prints {token, namespace, name, expiry}.`,
		Example: `  # A token valid one hour, written where the proxy reads it
  trellis external-workload token legacy -n shop > legacy.token

  # Valid 8 hours, as JSON for a provisioning tool
  trellis external-workload token legacy -n shop --ttl 8h -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNames(open, cf, &o.namespace),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ewtoken.CheckRef(o.namespace, args[0]); err != nil {
				return fmt.Errorf("externalworkload %s/%s: not a valid namespace and name: %w", o.namespace, args[0], err)
			}
			if err := ewsecret.CheckTTL(o.ttl); err != nil {
				return fmt.Errorf("--ttl: %w", err)
			}
			c, err := cf.open(open)
			if err != nil {
				return err
			}
			doc, err := mint(cmd.Context(), c, o, args[0])
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), doc, func(w io.Writer) error {
				fmt.Fprintf(cmd.ErrOrStderr(), "bootstrap token for externalworkload %s, single use, valid until %s: put it in its proxy's --token-file (it is a secret)\n",
					ewtoken.Ref(doc.Namespace, doc.Name), doc.Expiry.Format(time.RFC3339))
				_, err := fmt.Fprintln(w, doc.Token)
				return err
			})
		},
	}
	addNamespaceFlag(cmd, &o.namespace, "", "namespace of the ExternalWorkload (required)")
	_ = cmd.MarkFlagRequired("namespace")
	cmd.Flags().DurationVar(&o.ttl, "ttl", ewsecret.DefaultTTL, "how long the token may be redeemed (at most 24h)")
	cmd.Flags().StringVar(&o.controlPlane, "control-plane-namespace", k8slabels.ControlPlaneNamespace, "namespace of the Trellis control plane, where the token's hash is kept")
	out.Register(cmd, output.Text, output.JSON, output.YAML)
	return cmd
}

// mint checks that the workload exists, then mints its token.
func mint(ctx context.Context, c Clients, o tokenOptions, name string) (tokenDoc, error) {
	ref := ewtoken.Ref(o.namespace, name)
	_, err := c.Workloads.WorkloadV1alpha1().ExternalWorkloads(o.namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return tokenDoc{}, fmt.Errorf("externalworkload %s not found: create it first (docs/external-workloads.md)", ref)
	case err != nil:
		return tokenDoc{}, fmt.Errorf("get externalworkload %s: %w", ref, err)
	}
	b, expiry, err := ewsecret.Mint(ctx, c.Kube.CoreV1(), o.controlPlane, o.namespace, name, o.ttl, o.now())
	if err != nil {
		return tokenDoc{}, fmt.Errorf("mint a token for externalworkload %s: %w", ref, err)
	}
	return tokenDoc{Token: b.Token(), Namespace: b.Namespace, Name: b.Name, Expiry: expiry}, nil
}

// completeNames completes NAME with the ExternalWorkloads of -n.
func completeNames(open OpenFunc, cf *clusterFlags, ns *string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 || *ns == "" {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := cf.open(open)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
		defer cancel()
		list, err := c.Workloads.WorkloadV1alpha1().ExternalWorkloads(*ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names := make([]cobra.Completion, 0, len(list.Items))
		for _, ew := range list.Items {
			names = append(names, ew.Name)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
