// Package externalworkloadcmd is `trellis external-workload`: it mints the
// single-use bootstrap token a VM's proxy redeems for its first
// certificate (internal/ewtoken, the Secret of internal/ewtoken/ewsecret),
// and lists the ExternalWorkloads with their identity and certificate.
package externalworkloadcmd

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	wlversioned "github.com/trellis-mesh/trellis/api/workload/client/clientset/versioned"
	"github.com/trellis-mesh/trellis/cli/complete"
	"github.com/trellis-mesh/trellis/cli/kubeconfig"
)

// Clients are what the commands ask the cluster with.
type Clients struct {
	Kube      kubernetes.Interface
	Workloads wlversioned.Interface
}

// OpenFunc opens the cluster of a kubeconfig and context.
type OpenFunc func(kubeconfigPath, kubeContext string) (Clients, error)

// FromKubeconfig opens the cluster the way kubectl does (--kubeconfig, else
// $KUBECONFIG, else ~/.kube/config; --context, else the current one).
func FromKubeconfig(kubeconfigPath, kubeContext string) (Clients, error) {
	cfg, err := kubeconfig.Load(kubeconfigPath, kubeContext)
	if err != nil {
		return Clients{}, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("kubernetes client for %s: %w", cfg.Host, err)
	}
	wl, err := wlversioned.NewForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("workload.trellis.io client for %s: %w", cfg.Host, err)
	}
	return Clients{Kube: kube, Workloads: wl}, nil
}

// New returns the `trellis external-workload` command group.
func New() *cobra.Command { return newCommand(FromKubeconfig) }

// clusterFlags are --kubeconfig and --context, shared by the subcommands.
type clusterFlags struct{ kubeconfig, context string }

func (c *clusterFlags) open(open OpenFunc) (Clients, error) { return open(c.kubeconfig, c.context) }

func newCommand(open OpenFunc) *cobra.Command {
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:     "external-workload",
		Aliases: []string{"ew"},
		Short:   "Bootstrap tokens and status of external workloads (VMs, hosts) in the mesh",
		Long: `External workloads are VMs and hosts whose trellis-proxy joins the
cluster's mesh (ExternalWorkload, workload.trellis.io/v1alpha1). Their
proxy has no Kubernetes credentials: it redeems a single-use bootstrap
token once for its first certificate, then renews with the certificate.

  token  mint a bootstrap token for one ExternalWorkload
  list   the ExternalWorkloads, their identity and certificate

See docs/external-workloads.md.`,
		Example: `  # A token for the proxy of ExternalWorkload shop/legacy, valid 1 hour
  trellis external-workload token legacy -n shop > legacy.token

  # Which workloads hold a certificate
  trellis external-workload list`,
	}
	cmd.SilenceUsage = true  // errors are about the run, not the syntax
	cmd.SilenceErrors = true // main prints them once
	pf := cmd.PersistentFlags()
	pf.StringVar(&cf.kubeconfig, "kubeconfig", "", "path to the kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	pf.StringVar(&cf.context, "context", "", "kubeconfig context (default the current context)")
	cmd.AddCommand(newTokenCommand(open, &cf), newListCommand(open, &cf))
	return cmd
}

// addNamespaceFlag adds -n with completion of the cluster's namespaces.
func addNamespaceFlag(cmd *cobra.Command, ns *string, def, usage string) {
	cmd.Flags().StringVarP(ns, "namespace", "n", def, usage)
	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
}
