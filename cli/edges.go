package cli

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/check"
	"github.com/trellis-mesh/trellis/cli/checkcmd"
	"github.com/trellis-mesh/trellis/cli/complete"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/cli/vizcmd"
)

func newEdgesCommand(build checkcmd.EnvFunc) *cobra.Command {
	var (
		kubeconfig, kubeContext, namespace string
		out                                output.Flag
		viz                                vizcmd.EdgesFlags
	)
	cmd := &cobra.Command{
		Use:   "edges",
		Short: "Show every meshed pod's outbound edges: who served them and whether over mTLS",
		Long: `Read the metrics of every meshed pod's proxy (through the API server's pod
proxy, as trellis check does) and print one row per edge: the pod, the
destination it called, the identity that served it and whether the hop was
mutual TLS with that verified identity, with the requests and success rate
counted since the proxy started.

When the cluster runs "trellis viz install" (or with --prometheus-url), the
edges come from Prometheus instead, over the last --time-window, and the
destination is the workload that served it (else the service). With no
cluster configured and a "trellis demo" running (or with --local), the
demo's proxies are read directly.

An edge with MTLS "no" went to a peer without a Trellis proxy (or one whose
identity could not be verified): it is not protected by the mesh.`,
		Example: `  # The demo application (trellis demo --kubernetes)
  trellis edges -n trellis-demo

  # As JSON, every namespace
  trellis edges -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, fromViz, err := vizcmd.Edges(cmd.Context(), kubeconfig, kubeContext, namespace, viz)
			if err != nil {
				return err
			}
			if !fromViz {
				env, err := build(kubeconfig, kubeContext)
				if err != nil {
					return err
				}
				env.ProxyNamespace = namespace
				if res, err = check.MeshEdges(cmd.Context(), env); err != nil {
					return err
				}
			}
			return out.Print(cmd.OutOrStdout(), res, func(w io.Writer) error {
				return writeEdges(w, res, out.Format() == output.Wide)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "path to the kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&kubeContext, "context", "", "kubeconfig context to use (default the current context)")
	f.StringVarP(&namespace, "namespace", "n", "", "only the pods of this namespace (default all namespaces)")
	f.StringVar(&viz.PrometheusURL, "prometheus-url", "", "read the edges from this Prometheus (relabelled as docs/observability.md says)")
	f.BoolVar(&viz.Local, "local", false, "local mode: the proxies of a running `trellis demo`")
	f.StringVar(&viz.Config, "config", "", "local mode: the local store file whose proxies to read (implies --local)")
	f.DurationVarP(&viz.Window, "time-window", "t", time.Minute, "Prometheus and local modes: the window the requests are counted over")
	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
	out.Register(cmd, output.Text, output.Wide, output.JSON, output.YAML)
	return cmd
}

func writeEdges(w io.Writer, res check.PodEdgesResult, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "NAMESPACE\tPOD\tDESTINATION\tSERVED BY\tMTLS\tREQUESTS\tSUCCESS"
	if wide {
		head += "\tSERVICE ACCOUNT"
	}
	fmt.Fprintln(tw, head)
	for _, e := range res.Edges {
		mtls, peer := "no", e.PeerIdentity
		if e.MTLS {
			mtls = "yes"
		}
		if peer == "" {
			peer = "(no identity)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.1f%%", e.Namespace, e.Pod, e.Destination, peer, mtls,
			strconv.FormatFloat(e.Requests, 'f', 0, 64), 100*e.SuccessRate)
		if wide {
			fmt.Fprintf(tw, "\t%s", e.ServiceAccount)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(res.Edges) == 0 {
		fmt.Fprintln(w, "no edges yet: no meshed pod has sent a request")
	}
	for pod, why := range res.Unreadable {
		fmt.Fprintf(w, "%s: proxy metrics unreadable: %s\n", pod, why)
	}
	return nil
}
