package cli

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/localrun"
)

func newRunCommand() *cobra.Command {
	var (
		opts     localrun.Options
		services []string
	)
	cmd := &cobra.Command{
		Use:   "run --service NAME=HOST:PORT...",
		Short: "Put your own apps behind a mesh on this machine",
		Long: `Put your own apps behind a Trellis mesh on this machine, loopback only.

trellis run starts a local control plane (trellis-controller local), one
trellis-proxy in front of each app given with --service (the service
NAME.local:80), and one client proxy that your curl, grpcurl or own client
talks to in explicit mode (name the service in Host or :authority). Every
hop between the proxies is mutual TLS with SPIFFE identities; the proxies'
metrics show the verified identity of the other side.

It is the walkthrough "Your own app behind two proxies" of
docs/local-mode.md as one command. Ctrl-C stops every process and removes
the work directory.`,
		Example: `  # Your HTTP/1.1, h2c or gRPC app on 127.0.0.1:8080 as myapp.local:80
  trellis run --service myapp=127.0.0.1:8080

  # Then, in another terminal (the ports are printed):
  curl -H 'Host: myapp.local' http://127.0.0.1:<client proxy port>/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if opts.Services, err = localrun.ParseServices(services); err != nil {
				return err
			}
			if self, err := os.Executable(); err == nil {
				opts.Self = self
			}
			opts.Stdout = cmd.OutOrStdout()
			opts.Stderr = cmd.ErrOrStderr()
			opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			return localrun.Run(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&services, "service", nil, "NAME=HOST:PORT: your app at HOST:PORT becomes the service NAME.<namespace>:80 behind its own proxy (repeatable)")
	f.StringVar(&opts.Namespace, "namespace", "local", "namespace of the services and workloads")
	f.BoolVar(&opts.Keep, "keep", false, "keep the work directory (store file, certificates, tokens, logs) at the end")
	f.StringVar(&opts.BinDir, "bin-dir", "", "directory holding trellis-controller and trellis-proxy (default: beside trellis, then $PATH)")
	f.IntVar(&opts.BasePort, "base-port", 0, "use the loopback ports from this one upwards instead of free ones the kernel picks")
	return cmd
}
