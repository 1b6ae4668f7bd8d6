package policycmd

import (
	"slices"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/complete"
)

// completeWorkloads offers the workloads (service accounts) of -n: from
// the store file with --config, else the cluster's meshed pods.
func (c *common) completeWorkloads(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if c.config == "" {
		return complete.MeshedWorkloads(complete.FromKubeconfig)(cmd, args, toComplete)
	}
	pods, err := LocalSource{Path: c.config}.Pods(cmd.Context(), c.namespace)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, p := range pods {
		if p.ServiceAccount != "" && !slices.Contains(names, p.ServiceAccount) {
			names = append(names, p.ServiceAccount)
		}
	}
	slices.Sort(names)
	return names, cobra.ShellCompDirectiveNoFileComp
}

// completeWorkloadArg completes the one optional WORKLOAD argument.
func (c *common) completeWorkloadArg(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return c.completeWorkloads(cmd, args, toComplete)
}
