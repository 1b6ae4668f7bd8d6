package vizcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/trellis-mesh/trellis/cli/kubeconfig"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/install"
	"github.com/trellis-mesh/trellis/install/vizk8s"
)

// New returns `trellis viz` (install, uninstall).
func New() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "viz",
		Short: "Install or remove the Prometheus behind trellis stat, routes, edges and the dashboard",
		Example: `  trellis viz install | kubectl apply --server-side -f -
  trellis stat deploy -n trellis-demo
  trellis viz uninstall --apply`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newInstall(), newUninstall())
	return cmd
}

type clusterFlags struct{ kubeconfig, context string }

func (c *clusterFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.kubeconfig, "kubeconfig", "", "path to the kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	cmd.Flags().StringVar(&c.context, "context", "", "kubeconfig context to use (default the current context)")
}

func (c *clusterFlags) dynamic() (dynamic.Interface, error) {
	cfg, err := kubeconfig.Load(c.kubeconfig, c.context)
	if err != nil {
		return nil, err
	}
	return dynamic.NewForConfig(cfg)
}

func newInstall() *cobra.Command {
	var (
		o      vizk8s.Options
		apply  bool
		k      clusterFlags
		out    output.Flag
		wait   time.Duration
		render = func() ([]byte, error) { return vizk8s.Render(o) }
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print (or with --apply apply) a pinned Prometheus that scrapes every proxy",
		Long: `Print the manifests of namespace ` + vizk8s.Namespace + `: a pinned Prometheus (` + vizk8s.DefaultImage + `)
with its ServiceAccount, least-privilege RBAC (list and watch pods, nothing
else), configuration, Service and Deployment, for
"kubectl apply --server-side -f -", or apply them with --apply.

Prometheus scrapes every trellis-proxy's admin port (/metrics) and the
controller, and puts namespace, pod, the owning workload (workload_kind,
workload) and the pod's identity on every series: the labels "trellis stat",
"routes", "edges" and the dashboard query. It keeps --retention of data in
an emptyDir (at most 512 MB). docs/observability.md shows the relabelling
for your own Prometheus.`,
		Example: `  # Review, then apply
  trellis viz install | kubectl apply --server-side -f -

  # Or let trellis apply it
  trellis viz install --apply

  # Another registry, a mesh with another trust domain
  trellis viz install --image registry.example.com/prometheus:v3.16.0 --trust-domain example.org`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			y, err := render()
			if err != nil {
				return err
			}
			m, err := vizk8s.Manifest(y)
			if err != nil {
				return err
			}
			if !apply {
				if out.Format() == output.JSON {
					return printJSONList(cmd.OutOrStdout(), m)
				}
				_, err := cmd.OutOrStdout().Write(y)
				return err
			}
			dc, err := k.dynamic()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), wait)
			defer cancel()
			if err := install.Apply(ctx, dc, m); err != nil {
				return err
			}
			for _, obj := range m.Objects {
				fmt.Fprintf(cmd.OutOrStdout(), "applied %s\n", obj.Ref())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Image, "image", vizk8s.DefaultImage, "the Prometheus image")
	f.StringVar(&o.TrustDomain, "trust-domain", "cluster.local", "trust domain of the mesh's identities (for the identity label)")
	f.DurationVar(&o.ScrapeInterval, "scrape-interval", 10*time.Second, "how often every proxy is scraped")
	f.DurationVar(&o.Retention, "retention", 6*time.Hour, "how long Prometheus keeps data")
	f.StringVar(&o.MemoryLimit, "memory-limit", "1Gi", "Prometheus's memory limit")
	f.BoolVar(&apply, "apply", false, "apply the manifests (server-side, field manager trellis) instead of printing them")
	f.DurationVar(&wait, "timeout", time.Minute, "how long --apply may take")
	k.register(cmd)
	out.Register(cmd, output.YAML, output.JSON)
	return cmd
}

func printJSONList(w io.Writer, m *install.Manifest) error {
	items := make([]map[string]any, len(m.Objects))
	for i, o := range m.Objects {
		items[i] = o.Content
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
}

func newUninstall() *cobra.Command {
	var (
		apply bool
		k     clusterFlags
		wait  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "List (or with --apply delete) everything trellis viz install created",
		Long: `Find every object labelled ` + vizk8s.Selector + `
and print it for "kubectl delete -f -", or delete it with --apply. The
Prometheus data goes with its pod. ("trellis uninstall" removes these too.)`,
		Example: `  trellis viz uninstall | kubectl delete -f -
  trellis viz uninstall --apply`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dc, err := k.dynamic()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), wait)
			defer cancel()
			objs, err := findViz(ctx, dc)
			if err != nil {
				return err
			}
			if !apply {
				listing := string(install.DeleteManifest(objs))
				_, rest, _ := strings.Cut(listing, "\n") // its header names trellis uninstall
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "# Objects trellis viz uninstall removes (labelled %s).\n%s", vizk8s.Selector, rest)
				return err
			}
			if err := install.Delete(ctx, dc, objs); err != nil {
				return err
			}
			for _, o := range objs {
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", o.Ref())
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&apply, "apply", false, "delete the objects instead of printing them")
	cmd.Flags().DurationVar(&wait, "timeout", time.Minute, "how long listing and deleting may take")
	k.register(cmd)
	return cmd
}

// findViz lists the objects of viz install, in delete order.
func findViz(ctx context.Context, dc dynamic.Interface) ([]install.Installed, error) {
	var out []install.Installed
	for i := len(install.Kinds) - 1; i >= 0; i-- {
		kind := install.Kinds[i]
		list, err := dc.Resource(kind.GVR()).List(ctx, metav1.ListOptions{LabelSelector: vizk8s.Selector})
		if apierrors.IsNotFound(err) {
			continue // a kind this cluster does not serve
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", kind.Resource, err)
		}
		for _, u := range list.Items {
			out = append(out, install.Installed{Kind: kind, Name: u.GetName(), Namespace: u.GetNamespace()})
		}
	}
	return out, nil
}
