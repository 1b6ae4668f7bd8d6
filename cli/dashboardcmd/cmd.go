package dashboardcmd

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/cli/vizcmd"
)

// AddServeFlags registers --PREFIXport, --PREFIXaddress and --no-browser
// (prefix "dashboard-" for `trellis demo`, whose --port would be unclear).
func AddServeFlags(cmd *cobra.Command, o *ServeOptions, prefix string) {
	f := cmd.Flags()
	f.IntVar(&o.Port, prefix+"port", DefaultPort, "port the dashboard listens on (0: any free port)")
	f.StringVar(&o.Address, prefix+"address", "127.0.0.1", "address the dashboard listens on (it has no login: keep it on loopback)")
	f.BoolVar(&o.NoBrowser, "no-browser", false, "print the dashboard's URL without opening a browser")
}

// New is `trellis dashboard`.
func New(views ViewsFunc) *cobra.Command {
	var (
		serve ServeOptions
		src   vizcmd.SourceFlags
		out   output.Flag
	)
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Open the web dashboard: workloads, edges, routes, live tap, identities, policy decisions",
		Long: `Serve the Trellis dashboard on this machine and open it in a browser.

The figures come from Prometheus: the one "trellis viz install" deploys
(reached through a port-forward, as kubectl port-forward does) or yours
with --prometheus-url. Taps go through the Kubernetes API server's
aggregated tap API with YOUR kubeconfig credentials, so the dashboard shows
exactly what your RBAC allows. Nothing privileged runs in the cluster.

The dashboard listens on 127.0.0.1 and answers only requests for its own
address; it has no login, so keep it there. Ctrl-C stops it. In local mode
(--local, or no cluster configured and a "trellis demo" running) it shows
the demo's proxies, scraped directly, and taps through the demo's
controller.
See docs/observability.md#dashboard.`,
		Example: `  # Open the dashboard of the current kubeconfig context
  trellis dashboard

  # On another port, without opening a browser (e.g. over ssh -L)
  trellis dashboard --port 8084 --no-browser

  # With a Prometheus of your own that scrapes the proxies
  trellis dashboard --prometheus-url http://prometheus.monitoring:9090

  # Print the URL as JSON for a script
  trellis dashboard --no-browser -o json

  # The dashboard of a trellis demo already running on this machine
  trellis dashboard --local

  # Or start the demo with its dashboard
  trellis demo --dashboard`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			serve.Output, serve.Stdout, serve.Stderr = out.Format(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			serve.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			cfg, stop, err := views(ctx, &src)
			if err != nil {
				return err
			}
			defer stop()
			return Serve(ctx, serve, cfg)
		},
	}
	AddServeFlags(cmd, &serve, "")
	src.Register(cmd.Flags())
	out.Register(cmd, output.Text, output.JSON, output.YAML)
	return cmd
}
