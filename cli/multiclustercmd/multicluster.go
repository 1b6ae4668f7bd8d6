// Package multiclustercmd is `trellis multicluster`: it links a cluster to
// a peer so that the first can mirror the peer's exported Services. allow
// renders the peer's side (a read-only ServiceAccount); link reads that
// account's token in the peer and renders the linking cluster's side, the
// link Secret of internal/mclink.
package multiclustercmd

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/cli/complete"
	"github.com/trellis-mesh/trellis/cli/kubeconfig"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/mclink"
)

// Cluster is what link needs of the peer: a client, and the API server
// URL its kubeconfig names.
type Cluster struct {
	Kube   kubernetes.Interface
	Server string
}

// ClusterFunc opens the cluster of a kubeconfig and context.
type ClusterFunc func(kubeconfigPath, kubeContext string) (Cluster, error)

// FromKubeconfig opens the cluster the way kubectl does (--kubeconfig, else
// $KUBECONFIG, else ~/.kube/config; --context, else the current one).
func FromKubeconfig(kubeconfigPath, kubeContext string) (Cluster, error) {
	cfg, err := kubeconfig.Load(kubeconfigPath, kubeContext)
	if err != nil {
		return Cluster{}, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return Cluster{}, fmt.Errorf("kubernetes client for %s: %w", cfg.Host, err)
	}
	return Cluster{Kube: kube, Server: cfg.Host}, nil
}

// New returns the `trellis multicluster` command group.
func New() *cobra.Command {
	return newCommand(FromKubeconfig)
}

func newCommand(open ClusterFunc) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "multicluster",
		Short: "Link this cluster to a peer cluster, to mirror the peer's exported Services",
		Long: `Link cluster a to a peer cluster b, so that a can mirror the Services b
exports (label trellis.io/export=true).

Two steps, each printing manifests to apply:
  allow  run for b, applied in b: a ServiceAccount for a that may only
         read Services, EndpointSlices and pods
  link   run against b, applied in a: the link Secret, with a kubeconfig
         that reaches b's API server as that ServiceAccount

Then install a's control plane with --multicluster. See docs/multicluster.md.`,
		Example: `  # In b: let a read b's Services
  trellis multicluster allow --linked-cluster-name a | kubectl --context b apply -f -

  # With b's credentials: the link Secret, applied in a
  trellis multicluster link --context b --cluster-name b --linked-cluster-name a | kubectl --context a apply -f -`,
	}
	cmd.SilenceUsage = true  // errors are about the run, not the syntax
	cmd.SilenceErrors = true // main prints them once
	cmd.AddCommand(newAllowCommand(), newLinkCommand(open))
	return cmd
}

// addNamespaceFlag adds -n: the control plane's namespace, where the link
// objects live in either cluster.
func addNamespaceFlag(cmd *cobra.Command, ns *string) {
	cmd.Flags().StringVarP(ns, "namespace", "n", k8slabels.ControlPlaneNamespace, "namespace of the Trellis control plane")
	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
}

// checkName applies mclink's rule for a cluster name (a DNS label of at
// most 20 characters) by validating a link complete but for the name, so
// the command and the controller cannot disagree on it.
func checkName(flag, name string) error {
	l := mclink.Link{Cluster: name, TrustDomain: identity.DefaultTrustDomain, ClusterDomain: "cluster.local", Mode: mclink.ModeFlat, Kubeconfig: []byte("-")}
	if err := l.Validate(); err != nil {
		return fmt.Errorf("--%s: %w", flag, err)
	}
	return nil
}

// writeYAML writes objects as YAML documents separated by "---".
func writeYAML(w io.Writer, objects ...any) error {
	for i, o := range objects {
		data, err := yaml.Marshal(o)
		if err != nil {
			return fmt.Errorf("write yaml: %w", err)
		}
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
	}
	return nil
}
