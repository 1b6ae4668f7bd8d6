// Command trellis-controller is the Trellis control plane. `local` serves a
// mesh described by a YAML file (docs/controller.md, docs/local-mode.md).
package main

import (
	"context"
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
	root.AddCommand(newKubernetesCmd())
	root.AddCommand(newLocalCmd(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), version.String()) },
	})
	return root
}

// run is what both modes do around their Run: a logger at --log-level
// (grpc-go's own logs routed into it), and a context cancelled by SIGTERM
// or SIGINT.
func run(cmd *cobra.Command, level string, fn func(context.Context, *slog.Logger) error) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
	routeGRPCLog(log)
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return fn(ctx, log)
}

func newLocalCmd() *cobra.Command {
	var cfg local.Config
	var level string
	var autoRenew bool
	cmd := &cobra.Command{
		Use:   "local",
		Short: "Serve a mesh described by a YAML store file, with a CA kept in a state directory",
		Long: `Serve the Identity, Destination and Policy APIs from a YAML store file
(docs/local-mode.md) instead of Kubernetes. On first run a trust anchor and an
issuer are generated in --state-dir; give DIR/anchor.crt (or DIR/bundle.crt
once it exists) to every proxy as --trust-anchors. Alternatively --issuer-dir
reads an issuer from a mounted kubernetes.io/tls Secret (tls.crt, tls.key,
ca.crt) that is managed outside the controller.

Edits to the store file and to the issuer and bundle files are picked up
while running; a bad edit is refused and the last good one keeps serving.
An expired issuer never signs: Certify fails with FAILED_PRECONDITION and
/ready returns 503 until a valid issuer is installed.`,
		Example: `  # serve mesh.yaml, keeping the CA in ./state
  trellis-controller local --config mesh.yaml --state-dir ./state \
    --listen 127.0.0.1:8086 --admin-addr 127.0.0.1:9996

  # wait until it is ready
  curl -fsS http://127.0.0.1:9996/ready

  # issuer from a cert-manager Secret mounted at /var/run/trellis/issuer
  trellis-controller local --config mesh.yaml --issuer-dir /var/run/trellis/issuer`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.IssuerDir != "" {
				if cmd.Flags().Changed("auto-renew-issuer") && autoRenew {
					return fmt.Errorf("--auto-renew-issuer is for --state-dir only: an issuer from --issuer-dir is managed outside the controller")
				}
				autoRenew = false
			}
			cfg.AutoRenewIssuer = autoRenew
			return run(cmd, level, func(ctx context.Context, log *slog.Logger) error {
				cfg.Logger = log
				return local.Run(ctx, cfg)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ConfigPath, "config", "", "the store file (YAML) describing services and workloads (required)")
	f.StringVar(&cfg.StateDir, "state-dir", "", "directory holding the CA (anchor.crt/key, issuer.crt/key, optional bundle.crt); created 0700 and generated on first run")
	f.StringVar(&cfg.IssuerDir, "issuer-dir", "", "instead of --state-dir: a mounted kubernetes.io/tls Secret (tls.crt = issuer [+ intermediates], tls.key, ca.crt = trust bundle), reloaded on change")
	f.BoolVar(&autoRenew, "auto-renew-issuer", true, "--state-dir only: at start and hourly while running, replace an issuer that expired or expires within 7 days with one signed by anchor.key (when present)")
	f.StringVar(&cfg.Listen, "listen", local.DefaultListen, "address of the gRPC (mTLS) server proxies connect to")
	f.StringVar(&cfg.AdminAddr, "admin-addr", local.DefaultAdminAddr, "address of the admin HTTP server (/metrics, /ready, /live)")
	f.StringVar(&cfg.TapAPIAddr, "tap-api-addr", "", "loopback address of the local tap API (trellis tap --local); empty disables it")
	f.StringVar(&cfg.TapTokenFile, "tap-token-file", "", "file holding the bearer token the local tap API requires (with --tap-api-addr)")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", local.DefaultShutdownGrace, "how long a stop waits for calls in flight")
	f.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	_ = cmd.MarkFlagRequired("config")
	cmd.MarkFlagsMutuallyExclusive("state-dir", "issuer-dir")
	cmd.MarkFlagsOneRequired("state-dir", "issuer-dir")
	return cmd
}
