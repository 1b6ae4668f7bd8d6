// Package diagcmd is `trellis diagnostics`: the raw state support asks
// for first. proxy-metrics and controller-metrics read the admin ports
// through the API server's pod proxy (as `trellis check` and `edges` do),
// endpoints asks every controller replica what Destination answers now
// (its read-only /debug/destination admin endpoint), policy computes a
// pod's inbound policy with the controller's translation. Each has a local
// mode against the demo's proxies and local controller.
package diagcmd

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/check"
	"github.com/trellis-mesh/trellis/cli/checkcmd"
	"github.com/trellis-mesh/trellis/cli/complete"
	"github.com/trellis-mesh/trellis/cli/output"
)

// New returns `trellis diagnostics` for the cluster of the kubeconfig.
func New() *cobra.Command { return newCommand(checkcmd.FromKubeconfig) }

func newCommand(build checkcmd.EnvFunc) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "diagnostics",
		Aliases: []string{"diag"},
		Short:   "Show the raw state of proxies and the controller: metrics, endpoints, policy",
		Long: `Commands that show what the mesh's parts hold right now, the first things
support asks for: a proxy's metrics, every controller replica's metrics,
what the controller's Destination service answers for a service, and the
inbound policy the controller answers a pod's proxy for a port.

On a cluster they go through the API server (its pod proxy for the admin
ports), with your kubeconfig's credentials: no port-forward, nothing
installed. With --config (a local store file, as "trellis demo" writes it)
or --controller-admin they read the local processes instead.`,
		Example: `  # A proxy's metrics
  trellis diagnostics proxy-metrics web-5d9c7b-x2x9q -n demo

  # What Destination answers for books.demo:8080 now
  trellis diagnostics endpoints books:8080 -n demo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newProxyMetrics(build), newControllerMetrics(build), newEndpoints(build), newPolicy())
	return cmd
}

// common are the flags the subcommands share.
type common struct {
	kubeconfig, context, namespace string
	controlPlaneNS                 string
	out                            output.Flag
}

func (c *common) flags(cmd *cobra.Command, namespaced bool) {
	f := cmd.Flags()
	f.StringVar(&c.kubeconfig, "kubeconfig", "", "path to the kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&c.context, "context", "", "kubeconfig context to use (default the current context)")
	if namespaced {
		f.StringVarP(&c.namespace, "namespace", "n", "default", "namespace of the pod or service")
		_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
	}
	c.out.Register(cmd, output.Text, output.JSON, output.YAML)
}

// controllerFlags adds what reaches the controller.
func (c *common) controllerFlags(cmd *cobra.Command, admin *string) {
	f := cmd.Flags()
	f.StringVar(&c.controlPlaneNS, "control-plane-namespace", "", "namespace of the controller (default trellis-system)")
	f.StringVar(admin, "controller-admin", "", "local mode: the local controller's admin address (host:port) instead of a cluster")
}

func (c *common) env(build checkcmd.EnvFunc) (*check.Env, error) {
	env, err := build(c.kubeconfig, c.context)
	if err != nil {
		return nil, err
	}
	env.Namespace = c.controlPlaneNS
	return env, nil
}

var errLocalAndCluster = errors.New("--controller-admin (local mode) and --kubeconfig/--context (a cluster) exclude each other")
