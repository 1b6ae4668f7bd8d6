package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/complete"
	"github.com/trellis-mesh/trellis/cli/dashboardcmd"
	"github.com/trellis-mesh/trellis/cli/demo"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/install/demok8s"
	"github.com/trellis-mesh/trellis/internal/version"
)

func newDemoCommand() *cobra.Command {
	var (
		opts  demo.Options
		fails []string
		split string
		kube  demok8s.Options
		k8s   bool
		out   output.Flag
		dash  bool
		serve dashboardcmd.ServeOptions
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a whole mesh on this machine and watch its traffic",
		Long: `Run a whole Trellis mesh on this machine: no root, no cluster, loopback only.

trellis demo starts a local control plane (trellis-controller local), the
demo application (web -> books v1 and v2 -> authors, HTTP/1.1 then gRPC)
with one trellis-proxy beside each workload, and a load generator. Every
hop between proxies is mutual TLS with SPIFFE identities.

Every --interval it prints two tables computed from the proxies' metrics:
one row per workload (success rate, requests per second, p50/p95/p99
latency of the traffic it serves) and one row per edge (the same figures
for traffic from one workload to one service, and the identity that served
it over mTLS).

The binaries trellis-controller, trellis-proxy and trellis-demo-app are
looked up beside this trellis binary, then in $PATH ("make build" puts them
all in ./bin). Ctrl-C stops every process and removes the work directory.`,
		Example: `  # Run until Ctrl-C, refreshing the tables every 5 seconds
  trellis demo

  # Make 30% of the books responses fail and watch the success rate drop
  trellis demo --fail books=0.3

  # Run for 30 seconds at 100 requests per second and print a JSON summary
  trellis demo --rps 100 --duration 30s -o json > summary.json

  # The same summary as YAML (-o text, the default, prints tables)
  trellis demo --duration 30s -o yaml

  # Default-deny authorization: a denied edge (intruder -> books) shows in the tables
  trellis demo --policy deny --keep

  # The same mesh in the web dashboard (opens the browser; the URL is printed)
  trellis demo --dashboard

  # Send every request's spans to a local Jaeger (OTLP/gRPC on 4317)
  trellis demo --trace-collector 127.0.0.1:4317

  # Keep the work directory (store file, certificates, logs) for a look
  trellis demo --keep --bin-dir ./bin

  # The same application, meshed, on the cluster where Trellis is installed;
  # then every edge's identity and mTLS status
  trellis demo --kubernetes | kubectl apply --server-side -f -
  trellis edges -n trellis-demo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if k8s {
				if out.Format() != output.Text {
					return fmt.Errorf("-o %s: --kubernetes prints manifests (YAML), -o applies to the local run's summary", out.Format())
				}
				kube.RPS = opts.RPS
				return printKubernetesDemo(cmd, kube)
			}
			if opts.RPS < 1 {
				return fmt.Errorf("--rps %d: must be at least 1", opts.RPS)
			}
			if err := checkTraceFlags(opts.TraceCollector, opts.TraceSampleRatio); err != nil {
				return err
			}
			var err error
			if split != "" {
				if opts.Split, err = demo.ParseSplit(split); err != nil {
					return err
				}
			}
			if opts.Fail, err = demo.ParseFails(fails); err != nil {
				return err
			}
			if self, err := os.Executable(); err == nil {
				opts.Self = self
			}
			opts.Output = out.Format()
			opts.Stdout = cmd.OutOrStdout()
			opts.Stderr = cmd.ErrOrStderr()
			opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			if dash {
				opts.Dashboard = demoDashboard(serve, cmd.ErrOrStderr(), opts.Logger)
			}
			return demo.Run(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.RPS, "rps", 50, "requests per second sent by the load generator")
	f.DurationVar(&opts.Duration, "duration", 0, "stop after this long (0: run until Ctrl-C)")
	f.DurationVar(&opts.Interval, "interval", 5*time.Second, "how often to print the tables")
	f.StringArrayVar(&fails, "fail", nil, "SERVICE=RATE: make every workload of SERVICE (web, books, authors) fail this share of requests, e.g. books=0.3 (repeatable)")
	f.StringVar(&split, "split", "", "SERVICE=VERSION:WEIGHT,...: a canary split, e.g. books=v1:90,v2:10: each version gets its own Service (books-v1, books-v2) and an HTTPRoute on books sends each its weight; edit the route in the store file while the demo runs to shift it (docs/traffic.md)")
	f.BoolVar(&opts.Keep, "keep", false, "keep the work directory (store file, certificates, tokens, logs) at the end")
	f.StringVar(&opts.BinDir, "bin-dir", "", "directory holding trellis-controller, trellis-proxy and trellis-demo-app (default: beside trellis, then $PATH)")
	f.StringVar(&opts.Policy, "policy", "", "authorization policy: deny (Servers default-deny, only loadgen -> web -> books -> authors allowed, and an intruder calling books that is refused)")
	f.StringVar(&opts.TraceCollector, "trace-collector", "", "host:port of an OTLP/gRPC collector (Jaeger, the OpenTelemetry Collector): every proxy sends its spans there; the demo app passes the trace headers on, so one request is one trace across web, books and authors")
	f.Float64Var(&opts.TraceSampleRatio, "trace-sample-ratio", 1, "with --trace-collector: the fraction of new traces sampled (0 to 1)")
	f.IntVar(&opts.BasePort, "base-port", 0, "use the loopback ports from this one upwards instead of free ones the kernel picks")
	f.BoolVar(&dash, "dashboard", false, "serve the web dashboard over the demo (docs/observability.md#dashboard)")
	dashboardcmd.AddServeFlags(cmd, &serve, "dashboard-")
	f.BoolVar(&k8s, "kubernetes", false, "print the demo as Kubernetes manifests (a namespace annotated for injection) instead of running it here")
	f.StringVarP(&kube.Namespace, "namespace", "n", demok8s.DefaultNamespace, "with --kubernetes: the namespace of the demo")
	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
	f.StringVar(&kube.Image, "image", "trellis/demo-app:"+version.Version, "with --kubernetes: the trellis-demo-app image")
	// text: live tables, then the summary's; json, yaml: the live tables
	// on stderr, one summary document on stdout at the end. "table" was
	// text's name before the one -o convention.
	out.Register(cmd, output.Text, output.JSON, output.YAML)
	out.Alias("table", output.Text)
	return cmd
}

// printKubernetesDemo writes the demo's manifests to stdout and what to
// do with them to stderr.
func printKubernetesDemo(cmd *cobra.Command, o demok8s.Options) error {
	out, err := demok8s.Render(o)
	if err != nil {
		return err
	}
	if _, err := cmd.OutOrStdout().Write(out); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "# apply: trellis demo --kubernetes | kubectl apply --server-side -f -\n"+
		"# then:  kubectl -n %[1]s rollout status deploy; trellis edges -n %[1]s\n", o.Namespace)
	return nil
}

// demoDashboard serves the dashboard over the demo's proxies; its URL goes
// to stderr with the demo's status lines (stdout is the tables, or the
// -o json summary).
func demoDashboard(serve dashboardcmd.ServeOptions, stderr io.Writer, log *slog.Logger) func(context.Context, demo.Plan) error {
	return func(ctx context.Context, p demo.Plan) error {
		serve.Output, serve.Stdout, serve.Stderr, serve.Logger = output.Text, stderr, stderr, log
		return dashboardcmd.Serve(ctx, serve, dashboardcmd.LocalConfig(p))
	}
}
