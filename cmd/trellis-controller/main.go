// Command trellis-controller is the Trellis control plane. `local` serves a
// mesh described by a YAML file (docs/controller.md, docs/local-mode.md).
package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/controller/local"
	"github.com/trellis-mesh/trellis/internal/version"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "trellis-controller:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "trellis-controller",
		Short:         "The Trellis control plane: identity, destination and policy for trellis-proxy",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newLocalCmd(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), version.String()) },
	})
	return root
}

func newLocalCmd() *cobra.Command {
	var cfg local.Config
	var level string
	cmd := &cobra.Command{
		Use:   "local",
		Short: "Serve a mesh described by a YAML store file, with a CA kept in a state directory",
		Long: `Serve the Identity, Destination and Policy APIs from a YAML store file
(docs/local-mode.md) instead of Kubernetes. On first run a trust anchor and an
issuer are generated in --state-dir; give DIR/anchor.crt to every proxy as
--trust-anchors. Edits to the store file are picked up while running; a bad
edit is refused and the last good configuration keeps serving.`,
		Example: `  # serve mesh.yaml, keeping the CA in ./state
  trellis-controller local --config mesh.yaml --state-dir ./state \
    --listen 127.0.0.1:8086 --admin-addr 127.0.0.1:9996

  # wait until it is ready
  curl -fsS http://127.0.0.1:9996/ready`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(level)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return local.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ConfigPath, "config", "", "the store file (YAML) describing services and workloads (required)")
	f.StringVar(&cfg.StateDir, "state-dir", "", "directory holding the CA (anchor.crt/key, issuer.crt/key); created 0700 (required)")
	f.StringVar(&cfg.Listen, "listen", local.DefaultListen, "address of the gRPC (mTLS) server proxies connect to")
	f.StringVar(&cfg.AdminAddr, "admin-addr", local.DefaultAdminAddr, "address of the admin HTTP server (/metrics, /ready, /live)")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", local.DefaultShutdownGrace, "how long a stop waits for calls in flight")
	f.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	_ = cmd.MarkFlagRequired("config")
	_ = cmd.MarkFlagRequired("state-dir")
	return cmd
}
