package installcmd

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/install"
)

// NewInstall returns `trellis install`.
func NewInstall() *cobra.Command {
	var k kubeFlags
	return newInstall(time.Now, &k, k.clientset)
}

func newInstall(now func() time.Time, k *kubeFlags, client func() (kubernetes.Interface, error)) *cobra.Command {
	var r renderFlags
	var f identityFlags
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
With --multicluster, the controller mirrors the Services of clusters
linked with "trellis multicluster link", and may write Services and
EndpointSlices for that (docs/multicluster.md). With
--multicluster-gateway, also the gateway through which linked clusters
reach this one's exported Services when pod networks are not routable
between them (its ServiceAccount, Deployment and Service).

Install first looks at the cluster of the kubeconfig (--kubeconfig,
--context, else $KUBECONFIG or ~/.kube/config). If it already runs
Trellis, install keeps its trust anchors, issuer and webhook certificate,
as "trellis upgrade" does: re-running install (e.g. with --ha) never
replaces a running mesh's identity. --identity-* files are accepted there
only if they keep every installed anchor; a deliberate new anchor is
--new-identity --anchor-dir DIR, which renders the first stage of the
staged rotation (docs/identity.md). Only with no Trellis in the cluster,
or no cluster reachable (said on stderr), are a new trust anchor, issuer
and webhook certificate generated (unless --identity-* files are given).

The same templates are the Helm chart charts/trellis; see docs/install.md.`,
		Example: `  # Install the CRDs, then the control plane
  trellis install --crds | kubectl apply --server-side -f -
  trellis install | kubectl apply --server-side -f -

  # High availability
  trellis install --ha | kubectl apply --server-side -f -

  # A multicluster gateway reached at a node's port 30418 (no load balancer)
  trellis install --cluster-name east --multicluster-gateway --set multicluster.gateway.serviceType=NodePort,multicluster.gateway.nodePort=30418 | kubectl apply --server-side -f -

  # CNI redirection (no NET_ADMIN in any pod), on a node whose runtime uses other CNI directories
  trellis install --cni --set cni.binDir=/usr/lib/cni,cni.confDir=/etc/cni/net.d | kubectl apply --server-side -f -

  # Your own trust anchor and issuer (e.g. from "trellis identity create-issuer")
  trellis install --identity-trust-anchors ca/anchor.crt \
    --identity-issuer-cert ca/issuer.crt --identity-issuer-key ca/issuer.key | kubectl apply --server-side -f -

  # Another image registry and tag, debug logs
  trellis install --set image.registry=registry.example.com/trellis --set image.tag=v0.2.0 --set controller.logLevel=debug

  # Start a new trust anchor on a cluster that runs Trellis (staged rotation)
  trellis install --new-identity --anchor-dir ./anchor | kubectl apply --server-side -f -

  # How many objects an install creates
  trellis install --dry-count`,
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
			// Validate values before spending time on keys.
			v, err := install.BuildValues(opts)
			if err != nil {
				return err
			}
			td, _ := v.Get("identity.trustDomain")
			mat, err := installMaterial(cmd.Context(), &r, &f, client, fmt.Sprint(td), t, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			opts.Identity, opts.Webhook = mat.id, mat.webhook
			m, err := install.Render(opts)
			if err != nil {
				return err
			}
			return r.write(cmd.OutOrStdout(), m)
		},
	}
	r.add(cmd.Flags())
	f.add(cmd.Flags())
	k.add(cmd.Flags())
	return cmd
}
