// Package cli is the `trellis` command line: one cobra command per
// subcommand, each a thin layer over a package that does the work.
package cli

import (
	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/checkcmd"
	"github.com/trellis-mesh/trellis/cli/dashboardcmd"
	"github.com/trellis-mesh/trellis/cli/diagcmd"
	"github.com/trellis-mesh/trellis/cli/externalworkloadcmd"
	"github.com/trellis-mesh/trellis/cli/identitycmd"
	"github.com/trellis-mesh/trellis/cli/injectcmd"
	"github.com/trellis-mesh/trellis/cli/installcmd"
	"github.com/trellis-mesh/trellis/cli/multiclustercmd"
	"github.com/trellis-mesh/trellis/cli/policycmd"
	"github.com/trellis-mesh/trellis/cli/tapcmd"
	"github.com/trellis-mesh/trellis/cli/topcmd"
	"github.com/trellis-mesh/trellis/cli/vizcmd"
)

// NewRootCommand returns the `trellis` command with every subcommand.
func NewRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "trellis",
		Short: "Trellis is a small, fast, secure-by-default service mesh",
		Long: `Trellis is a service mesh: a small proxy (trellis-proxy) runs beside every
workload and carries all of its traffic, and a control plane
(trellis-controller) tells the proxies where services are, who they are and
what is allowed.

Without any change to the application, Trellis gives every connection
between workloads mutual TLS with SPIFFE identities, load balances HTTP,
gRPC and TCP traffic, and measures the golden signals (success rate,
requests per second, latency) of every workload and every edge between them.

The trellis command is the way in: start with "trellis demo" to see a whole
mesh run on this machine, no cluster needed.`,
		Example: `  # See a mesh with mTLS and live metrics on this machine (Ctrl-C to stop)
  trellis demo

  # Print the version of this binary
  trellis version`,
		SilenceUsage:  true, // errors are about the run, not the syntax
		SilenceErrors: true, // main prints them once
	}
	root.AddCommand(newVersionCommand(checkcmd.FromKubeconfig), newDemoCommand(), newRunCommand())
	root.AddCommand(identitycmd.New())
	root.AddCommand(injectcmd.New())
	root.AddCommand(checkcmd.New(), newEdgesCommand(checkcmd.FromKubeconfig))
	root.AddCommand(installcmd.NewInstall(), installcmd.NewUpgrade(), installcmd.NewUninstall())
	root.AddCommand(policycmd.NewAuthz(), policycmd.NewPolicy())
	root.AddCommand(tapcmd.New(tapcmd.FromKubeconfig))
	root.AddCommand(dashboardcmd.New(dashboardcmd.FromFlags))
	root.AddCommand(vizcmd.New(), vizcmd.NewStat(), vizcmd.NewRoutes())
	root.AddCommand(diagcmd.New(), topcmd.New(tapcmd.FromKubeconfig))
	root.AddCommand(multiclustercmd.New())
	root.AddCommand(externalworkloadcmd.New())
	return root
}
