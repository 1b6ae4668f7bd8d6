package installcmd

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/install"
)

// NewUpgrade returns `trellis upgrade`.
func NewUpgrade() *cobra.Command {
	var k kubeFlags
	return newUpgrade(time.Now, &k, k.clientset)
}

func newUpgrade(now func() time.Time, k *kubeFlags, client func() (kubernetes.Interface, error)) *cobra.Command {
	var r renderFlags
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Print the control plane of this version, keeping the cluster's identity material",
		Long: `Re-render the control plane with this binary's version (and the given
flags), reusing the identity material of the running install: the trust
anchors, the issuer and the webhook certificate are read from the cluster
(ConfigMap trellis-trust-anchors, Secrets trellis-identity-issuer and
trellis-webhook-tls) and printed again unchanged, so proxies keep trusting
the control plane. Pass the same --ha, --cni, --multicluster and --set
flags as at install.

The webhook certificate is replaced when it expires within 30 days. An
issuer Secret without the Trellis labels (e.g. cert-manager's) is left to
its owner. --identity-* files replace the issuer (see docs/identity.md for
an anchor rotation without downtime).`,
		Example: `  # Upgrade the CRDs, then the control plane
  trellis upgrade --crds | kubectl apply --server-side -f -
  trellis upgrade | kubectl apply --server-side -f -

  # An HA install stays HA only if you say so again
  trellis upgrade --ha --set controller.logLevel=debug | kubectl apply --server-side -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if r.crds {
				return printCRDs(cmd, &r, k)
			}
			if err := r.checkTrustDomain(); err != nil {
				return err
			}
			t := now()
			opts := r.options()
			if _, err := install.BuildValues(opts); err != nil {
				return err
			}
			c, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			ex, err := install.ReadExisting(ctx, c)
			if err != nil {
				return err
			}
			id, supplied, err := r.suppliedIdentity(t, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if !supplied {
				id = ex.Identity
				warnings, err := install.CheckIdentity(id, t)
				if err != nil {
					return fmt.Errorf("the installed identity material: %w (supply new material with --identity-*)", err)
				}
				for _, w := range warnings {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
				}
			}
			opts.Identity = id
			if ex.Webhook != nil && install.CheckWebhookTLS(*ex.Webhook, install.Namespace, t) == nil {
				opts.Webhook = *ex.Webhook
			} else {
				fmt.Fprintln(cmd.ErrOrStderr(), "note: generating a new webhook serving certificate (missing, invalid or expiring within 30 days)")
				if opts.Webhook, err = install.GenerateWebhookTLS(install.Namespace, r.webhookValidity, t); err != nil {
					return err
				}
			}
			m, err := install.Render(opts)
			if err != nil {
				return err
			}
			return r.write(cmd.OutOrStdout(), m)
		},
	}
	r.add(cmd.Flags())
	k.add(cmd.Flags())
	return cmd
}
