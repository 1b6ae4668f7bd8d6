package vizcmd

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/complete"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/viz/model"
)

// queryFlags are the flags every view shares.
type queryFlags struct {
	src       SourceFlags
	namespace string
	from, to  string
	window    time.Duration
	out       output.Flag
}

func (q *queryFlags) register(cmd *cobra.Command, formats ...output.Format) {
	f := cmd.Flags()
	q.src.Register(f)
	f.StringVarP(&q.namespace, "namespace", "n", "", "namespace of the resources (default all namespaces)")
	f.StringVar(&q.from, "from", "", "only traffic from this resource (KIND/NAME, e.g. deploy/web)")
	f.StringVar(&q.to, "to", "", "only traffic to this resource (KIND/NAME, e.g. deploy/books or svc/books)")
	f.DurationVarP(&q.window, "time-window", "t", time.Minute, "window of the rates and latencies")
	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
	q.out.Register(cmd, formats...)
}

// query builds the model.Query of args.
func (q *queryFlags) query(args []string) (model.Query, error) {
	if q.window < time.Second {
		return model.Query{}, fmt.Errorf("-t %s: at least 1s", q.window)
	}
	r, err := ParseResource(args, q.namespace)
	if err != nil {
		return model.Query{}, err
	}
	from, err := ParseRef("from", q.from, q.namespace)
	if err != nil {
		return model.Query{}, err
	}
	to, err := ParseRef("to", q.to, q.namespace)
	if err != nil {
		return model.Query{}, err
	}
	return model.Query{Resource: r, From: from, To: to, Window: q.window}, nil
}

// runView opens the source and answers one view (never a nil slice, so
// JSON has [] rather than null).
func runView[T any](cmd *cobra.Command, q *queryFlags, args []string, view func(model.Source, context.Context, model.Query) ([]T, error)) (*Opened, []T, error) {
	query, err := q.query(args)
	if err != nil {
		return nil, nil, err
	}
	src, err := q.src.Open(cmd.Context())
	if err != nil {
		return nil, nil, err
	}
	defer src.Close()
	rows, err := view(src.Source, cmd.Context(), query)
	if rows == nil {
		rows = []T{}
	}
	return src, rows, err
}

// StatDoc is `trellis stat -o json|yaml`.
type StatDoc struct {
	// Source is "prometheus" or "local", Where its URL or store file.
	Source string               `json:"source"`
	Where  string               `json:"where"`
	Window string               `json:"window"`
	Stats  []model.WorkloadStat `json:"stats"`
}

// NewStat returns `trellis stat`.
func NewStat() *cobra.Command {
	var q queryFlags
	cmd := &cobra.Command{
		Use:   "stat KIND [NAME] | KIND/NAME",
		Short: "Golden signals per resource: meshed pods, success rate, RPS, latency percentiles",
		Long: `Show, for each resource, how many of its pods are meshed, and the success
rate, requests per second and p50/p95/p99 latency of the requests it served
over the last --time-window (TCP connections open now, for opaque TCP).

KIND is deploy, pod, ns, svc, sts, ds, job or rs (kubectl's names). By
default a resource's figures are its inbound traffic; --from keeps the
requests of one client, --to turns the view around to the requests the
resource sent to one destination. A service's figures are what its clients
sent it.

On Kubernetes the figures come from the Prometheus of "trellis viz
install", reached by a port-forward with your credentials, or from your own
Prometheus with --prometheus-url (it must relabel as docs/observability.md
says; the PromQL of each column is there too). In local mode (a running
"trellis demo", or --local/--config) the proxies are scraped directly: the
resources are workloads, and the first call waits two seconds for a second
scrape. A figure with no request to come from is "-" (null in JSON).`,
		Example: `  # Every deployment of the demo namespace
  trellis stat deploy -n trellis-demo

  # One deployment, over the last 5 minutes, as JSON
  trellis stat deploy/web -n trellis-demo -t 5m -o json

  # What web sent to books
  trellis stat deploy web -n trellis-demo --to deploy/books

  # Services, as their clients see them
  trellis stat svc -n trellis-demo

  # Your own Prometheus
  trellis stat deploy -n trellis-demo --prometheus-url http://prometheus.example:9090

  # Against a running trellis demo on this machine
  trellis stat workload --local`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, rows, err := runView(cmd, &q, args, model.Source.Stat)
			if err != nil {
				return err
			}
			doc := StatDoc{Source: src.Mode, Where: src.Where, Window: q.window.String(), Stats: rows}
			return q.out.Print(cmd.OutOrStdout(), doc, func(w io.Writer) error {
				return writeStat(w, rows, q.out.Format() == output.Wide)
			})
		},
	}
	q.register(cmd, output.Text, output.Wide, output.JSON, output.YAML)
	return cmd
}

func writeStat(w io.Writer, rows []model.WorkloadStat, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "NAMESPACE\tNAME\tMESHED\tSUCCESS\tRPS\tLATENCY_P50\tLATENCY_P95\tLATENCY_P99\tTCP_CONN"
	if wide {
		head += "\tREQUESTS"
	}
	fmt.Fprintln(tw, head)
	for _, r := range rows {
		meshed := fmt.Sprintf("%d/%d", r.MeshedPods, r.TotalPods)
		if r.Resource.Kind == "services" {
			meshed = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", dash(r.Resource.Namespace), Name(r.Resource), meshed,
			pct(r.SuccessRate), rps(r.RPS), ms(r.P50Ms), ms(r.P95Ms), ms(r.P99Ms), num(r.TCPConns))
		if wide {
			fmt.Fprintf(tw, "\t%.0f", r.Requests)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "no resources: nothing meshed matches (is the namespace right? are its pods injected?)")
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// RoutesDoc is `trellis routes -o json|yaml`.
type RoutesDoc struct {
	Source string            `json:"source"`
	Where  string            `json:"where"`
	Window string            `json:"window"`
	Routes []model.RouteStat `json:"routes"`
}

// NewRoutes returns `trellis routes`.
func NewRoutes() *cobra.Command {
	var q queryFlags
	cmd := &cobra.Command{
		Use:   "routes KIND [NAME] | KIND/NAME",
		Short: "Golden signals per route of a resource: inbound by authority, outbound per route rule and backend",
		Long: `Show the success rate, requests per second and latency percentiles of a
resource's requests over the last --time-window, per route. DIRECTION says
which side of the resource's proxy the figures come from:

  inbound   the requests the resource served, per authority. Routes are
            applied by the client's proxy, so the route is "[default]".
  outbound  the requests the resource sent that an HTTPRoute or GRPCRoute
            attached to a Service (GAMMA) matched: per Service (AUTHORITY,
            as the client named it), route, rule (its index in
            spec.rules) and BACKEND (the backendRef the rule picked), from
            the trellis_route_* metrics of the resource's proxy. With
            --to, also one "[default]" row per authority: every request
            sent there, routed or not.

For services (svc, svc/NAME), the rows are the Service's outbound routes
as all its clients' proxies matched them. --to svc/NAME keeps the routes of
that Service; --from, and --to a workload, show no outbound routes (the
route metrics carry no peer identity). A route's success is any status
class but 5xx (and no response); gRPC statuses are not read there.

Sources as for "trellis stat" (Prometheus on Kubernetes, --prometheus-url,
or the proxies of a local "trellis demo", read per workload).`,
		Example: `  # What books served, and the routes it calls other services through
  trellis routes deploy/books -n trellis-demo

  # The routes web calls books through, per rule and backend (the canary split)
  trellis routes deploy/web -n trellis-demo --to svc/books

  # Every route of the books Service, all its clients together, as JSON
  trellis routes svc/books -n trellis-demo -o json

  # The routes of every Service of a namespace, as YAML, over 5 minutes
  trellis routes svc -n trellis-demo -t 5m -o yaml`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, rows, err := runView(cmd, &q, args, model.Source.Routes)
			if err != nil {
				return err
			}
			doc := RoutesDoc{Source: src.Mode, Where: src.Where, Window: q.window.String(), Routes: rows}
			return q.out.Print(cmd.OutOrStdout(), doc, func(w io.Writer) error { return writeRoutes(w, rows) })
		},
	}
	q.register(cmd, output.Text, output.JSON, output.YAML)
	return cmd
}

func writeRoutes(w io.Writer, rows []model.RouteStat) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tDIRECTION\tAUTHORITY\tROUTE\tRULE\tBACKEND\tSUCCESS\tRPS\tLATENCY_P50\tLATENCY_P95\tLATENCY_P99")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(r.Resource.Namespace), Name(r.Resource),
			dash(r.Direction), dash(r.Authority), r.Route, dash(r.Rule), dash(r.Backend),
			pct(r.SuccessRate), rps(r.RPS), ms(r.P50Ms), ms(r.P95Ms), ms(r.P99Ms))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "no routes: no request in the window")
	}
	return nil
}
