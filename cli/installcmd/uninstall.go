package installcmd

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"

	"github.com/trellis-mesh/trellis/install"
)

// NewUninstall returns `trellis uninstall`.
func NewUninstall() *cobra.Command {
	var k kubeFlags
	return newUninstall(&k, k.dynamic)
}

func newUninstall(k *kubeFlags, client func() (dynamic.Interface, error)) *cobra.Command {
	var apply bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "List (or with --apply delete) everything Trellis installed",
		Long: `Find everything Trellis installed and print it for "kubectl delete -f -",
or delete it with --apply: every object labelled
app.kubernetes.io/part-of=trellis and app.kubernetes.io/managed-by=trellis
(in any namespace), the policy.trellis.io CRDs and the
trellis-injector webhook configuration. Nothing else is touched.

Deleting the CRDs deletes every Server, AuthorizationPolicy and RateLimit
in the cluster. Pods that were injected keep their proxies until they are
restarted.`,
		Example: `  # See what would be removed, then remove it with kubectl
  trellis uninstall
  trellis uninstall | kubectl delete -f -

  # Or let trellis delete it
  trellis uninstall --apply`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dc, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			objs, err := install.FindInstalled(ctx, dc)
			if err != nil {
				return err
			}
			if !apply {
				_, err := cmd.OutOrStdout().Write(install.DeleteManifest(objs))
				return err
			}
			if err := install.Delete(ctx, dc, objs); err != nil {
				return err
			}
			for _, o := range objs {
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", o.Ref())
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d objects deleted (the namespace and CRDs finish deleting in the background)\n", len(objs))
			return nil
		},
	}
	cmd.Flags().BoolVar(&apply, "apply", false, "delete the objects instead of printing them")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up on the API server after this long")
	k.add(cmd.Flags())
	return cmd
}
