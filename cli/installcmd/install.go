package installcmd

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/install"
	"github.com/trellis-mesh/trellis/internal/version"
)

// NewInstall returns `trellis install`.
func NewInstall() *cobra.Command { return newInstall(time.Now) }

func newInstall(now func() time.Time) *cobra.Command {
	var r renderFlags
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print the Trellis control plane (or, with --crds, its CRDs) as YAML to apply",
		Long: `Print the Kubernetes manifests of the Trellis control plane in namespace
trellis-system, for "kubectl apply --server-side -f -": the namespace, the
controller's ServiceAccount and least-privilege RBAC, the controller
Deployment and Service, the identity issuer Secret and trust-anchors
ConfigMap, and the injector's webhook configuration with its serving
certificate. Apply the CRDs (--crds) first. With --cni, also the
trellis-cni installer DaemonSet (namespace trellis-cni), and the injector
redirects pods' traffic with the CNI plugin instead of a NET_ADMIN init
container.

Unless --identity-* files are given, a new trust anchor and issuer are
generated on every run, and so is the webhook certificate: two runs print
different Secrets. Keep the anchor stable across upgrades with "trellis
upgrade", which reuses what the cluster holds.

The same templates are the Helm chart charts/trellis; see docs/install.md.`,
		Example: `  # Install the CRDs, then the control plane
  trellis install --crds | kubectl apply --server-side -f -
  trellis install | kubectl apply --server-side -f -

  # High availability
  trellis install --ha | kubectl apply --server-side -f -

  # CNI redirection (no NET_ADMIN in any pod), on a node whose runtime uses other CNI directories
  trellis install --cni --set cni.binDir=/usr/lib/cni,cni.confDir=/etc/cni/net.d | kubectl apply --server-side -f -

  # Your own trust anchor and issuer (e.g. from "trellis identity create-issuer")
  trellis install --identity-trust-anchors ca/anchor.crt \
    --identity-issuer-cert ca/issuer.crt --identity-issuer-key ca/issuer.key | kubectl apply --server-side -f -

  # Another image registry and tag, debug logs
  trellis install --set image.registry=registry.example.com/trellis --set image.tag=v0.2.0 --set controller.logLevel=debug

  # How many objects an install creates
  trellis install --dry-count`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if r.crds {
				return printCRDs(cmd, &r)
			}
			t := now()
			opts := install.Options{HA: r.ha, Set: r.sets(), Version: version.Version}
			// Validate values before spending time on keys.
			v, err := install.BuildValues(opts)
			if err != nil {
				return err
			}
			td, _ := v.Get("identity.trustDomain")
			id, supplied, err := r.suppliedIdentity(t, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if !supplied {
				if id, err = install.GenerateIdentity(fmt.Sprint(td), r.anchorValidity, r.issuerValidity, t); err != nil {
					return err
				}
			}
			opts.Identity = id
			if opts.Webhook, err = install.GenerateWebhookTLS(install.Namespace, r.webhookValidity, t); err != nil {
				return err
			}
			m, err := install.Render(opts)
			if err != nil {
				return err
			}
			return r.write(cmd.OutOrStdout(), m)
		},
	}
	r.add(cmd.Flags())
	return cmd
}
