package policycmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/cli/checkcmd"
	"github.com/trellis-mesh/trellis/cli/complete"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/meshconfig"
)

// common are the flags every command here shares.
type common struct {
	namespace  string
	kubeconfig string
	context    string
	config     string
	out        output.Flag
	output     string // the chosen -o, set by check
}

func (c *common) flags(cmd *cobra.Command, outputs string) {
	f := cmd.Flags()
	f.StringVarP(&c.namespace, "namespace", "n", "", "namespace of the workloads (required)")
	f.StringVar(&c.kubeconfig, "kubeconfig", "", "path to the kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&c.context, "context", "", "kubeconfig context to use (default the current context)")
	f.StringVar(&c.config, "config", "", "local mode: the store file (as `trellis demo` writes it) instead of a cluster")
	var formats []output.Format
	for _, o := range strings.Split(outputs, "|") {
		formats = append(formats, output.Format(o))
	}
	// The one -o convention (cli/output): its completion, its check.
	c.out.Register(cmd, formats...)
	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
}

func (c *common) check(outputs string) error {
	if c.namespace == "" {
		return errors.New("--namespace (-n) is required")
	}
	c.output = string(c.out.Format())
	return c.out.Validate()
}

// source is the cluster of the kubeconfig, or the store file of --config.
func (c *common) source() (Source, error) {
	if c.config != "" {
		return LocalSource{Path: c.config}, nil
	}
	env, err := checkcmd.FromKubeconfig(c.kubeconfig, c.context)
	if err != nil {
		return nil, err
	}
	return KubeSource{Env: env}, nil
}

// observe lists the pods of the namespace and scrapes each proxy once.
// A pod that cannot be scraped is an error: a suggestion without its
// traffic would deny it.
func observe(ctx context.Context, src Source, ns, workload string) ([]Pod, error) {
	pods, err := src.Pods(ctx, ns)
	if err != nil {
		return nil, err
	}
	if workload != "" {
		if pods, err = only(pods, workload, ns); err != nil {
			return nil, err
		}
	}
	for i := range pods {
		body, err := src.Scrape(ctx, pods[i])
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", ns, pods[i].Name, err)
		}
		s, err := ParseMetrics(strings.NewReader(string(body)))
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", ns, pods[i].Name, err)
		}
		pods[i].Samples = s
	}
	return pods, nil
}

// NewAuthz returns `trellis authz`.
func NewAuthz() *cobra.Command {
	var c common
	var window time.Duration
	cmd := &cobra.Command{
		Use:   "authz -n NAMESPACE [WORKLOAD]",
		Short: "Show, per server and route, which policies allowed and how many calls were allowed, denied and audited",
		Long: `Show what the proxies' authorization decided over a window: per workload
(service account), server (the Server, or default:<access>) and route, the
AuthorizationPolicies that allowed calls and how many calls were allowed,
denied (with the reasons) and audited (would-be denials let through).

The proxies' counters are read twice, --window apart: on Kubernetes through
the API server's pod proxy, in local mode (--config) from each workload's
adminAddr in the store file.`,
		Example: `  # What the demo's namespace decided over the last minute (local mode)
  trellis authz -n demo --config /tmp/trellis-demo/mesh.yaml

  # One workload of a cluster namespace, over 10 seconds, as JSON
  trellis authz -n shop books --window 10s -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.check("text|json|yaml"); err != nil {
				return err
			}
			if window <= 0 {
				return fmt.Errorf("--window %s: must be positive", window)
			}
			src, err := c.source()
			if err != nil {
				return err
			}
			rows, err := authzRows(cmd.Context(), src, c.namespace, args, window)
			if err != nil {
				return err
			}
			return render(cmd.OutOrStdout(), c.output, rows, func(w io.Writer) error { return writeRows(w, rows, window) })
		},
	}
	c.flags(cmd, "text|json|yaml")
	cmd.ValidArgsFunction = c.completeWorkloadArg
	cmd.Flags().DurationVar(&window, "window", time.Minute, "how long to count decisions for")
	return cmd
}

func authzRows(ctx context.Context, src Source, ns string, args []string, window time.Duration) ([]Row, error) {
	workload := ""
	if len(args) == 1 {
		workload = args[0]
	}
	before, err := observe(ctx, src, ns, workload)
	if err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(window):
	}
	after := make([]Pod, len(before))
	for i, p := range before {
		body, err := src.Scrape(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", ns, p.Name, err)
		}
		s, err := ParseMetrics(strings.NewReader(string(body)))
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", ns, p.Name, err)
		}
		after[i] = p
		after[i].Samples = Delta(p.Samples, s)
	}
	return Table(after), nil
}

// only keeps the pods of a workload: its service account, or a pod name.
func only(pods []Pod, workload, ns string) ([]Pod, error) {
	var out []Pod
	for _, p := range pods {
		if p.ServiceAccount == workload || p.Name == workload || p.Labels["app"] == workload {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("workload %q: no meshed pod of namespace %s runs as that service account, has that name or app label", workload, ns)
	}
	return out, nil
}

func writeRows(w io.Writer, rows []Row, window time.Duration) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "WORKLOAD\tSERVER\tROUTE\tPOLICIES\tALLOWED\tDENIED\tAUDITED\tDENY REASONS\n")
	for _, r := range rows {
		var reasons []string
		for k, v := range r.DenyReasons {
			reasons = append(reasons, fmt.Sprintf("%s=%.0f", k, v))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0f\t%.0f\t%.0f\t%s\n", r.Workload, r.Server, dash(r.Route),
			dash(strings.Join(r.Policies, ",")), r.Allowed, r.Denied, r.Audited, dash(strings.Join(reasons, ",")))
	}
	if len(rows) == 0 {
		fmt.Fprintf(tw, "(no calls in the last %s)\n", window)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// render writes v as json or yaml, or calls text.
func render(w io.Writer, output string, v any, text func(io.Writer) error) error {
	switch output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return text(w)
}

// NewPolicy returns `trellis policy` with its subcommands.
func NewPolicy() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Explain authorization decisions and suggest least-privilege policies",
		Long: `Work with inbound authorization policy (docs/policy.md): suggest writes the
Servers and AuthorizationPolicies that allow exactly the traffic the proxies
saw; explain says which policy allows or denies a call, and why; validate
checks manifests offline and reports every problem at once.`,
		Example: `  # The least-privilege policy of a namespace, in audit mode first
  trellis policy suggest -n shop --audit | kubectl apply -f -

  # Every problem of a manifest at once (the API server names only the first unknown field)
  trellis policy validate -f policies.yaml`,
	}
	cmd.AddCommand(newSuggest(), newExplain(), newValidate())
	return cmd
}

func newSuggest() *cobra.Command {
	var c common
	var audit, apply bool
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "suggest -n NAMESPACE",
		Short: "Write the Servers and AuthorizationPolicies that allow exactly the traffic the proxies saw",
		Long: `Read what the namespace's proxies allowed (their authorization counters,
since each proxy started, or only the clients seen in the last --since) and write, for every workload port that was
called, a Server with accessPolicy deny and one AuthorizationPolicy that
allows exactly the client identities seen, and unauthenticated clients only
where calls without mesh TLS were seen. Kubelet probes are left out: the
probes route the controller adds covers them. Denied calls are not allowed;
they are listed as notes (on stderr).

The workflow (docs/policy.md#walkthrough): suggest --audit and apply it;
watch "trellis authz" until AUDITED stays at zero; suggest (or edit
accessPolicy to deny) and apply again to enforce.`,
		Example: `  # Kubernetes: roll out in audit mode first
  trellis policy suggest -n shop --audit | kubectl apply -f -

  # then enforce, allowing only the clients seen in the last hour
  trellis policy suggest -n shop --since 1h | kubectl apply -f -

  # Local mode: write the suggestion into the demo's store file (applied live)
  trellis policy suggest -n demo --config /tmp/trellis-demo/mesh.yaml --audit --apply`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.check("yaml|json|text"); err != nil {
				return err
			}
			if apply && c.config == "" {
				return errors.New("--apply writes a local store file: give it with --config (on Kubernetes, pipe the YAML to kubectl apply -f -)")
			}
			src, err := c.source()
			if err != nil {
				return err
			}
			pods, err := observe(cmd.Context(), src, c.namespace, "")
			if err != nil {
				return err
			}
			if since > 0 {
				// This machine's clock against the proxies' timestamps: clocks are
				// assumed in sync (trellis check warns on skew with the API server).
				if pods, err = Recent(pods, time.Now().Add(-since)); err != nil {
					return err
				}
			}
			sug, err := Suggest(pods, audit)
			if err != nil {
				return err
			}
			for _, n := range sug.Notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			if apply {
				if err := ApplyToStore(c.config, c.namespace, sug.Objects); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %d Servers and %d AuthorizationPolicies to %s\n", sug.Servers, sug.Policies, c.config)
			}
			return writeSuggestion(cmd.OutOrStdout(), c.output, sug)
		},
	}
	c.flags(cmd, "yaml|json|text")
	cmd.Flags().BoolVar(&audit, "audit", false, "Servers with accessPolicy audit: would-be denials are counted, not refused")
	cmd.Flags().DurationVar(&since, "since", 0, "only the clients seen in this last while (e.g. 1h; default: since each proxy started)")
	cmd.Flags().BoolVar(&apply, "apply", false, "local mode: replace the namespace's policies in the --config store file with the suggestion")
	return cmd
}

func writeSuggestion(w io.Writer, output string, sug Suggestion) error {
	switch output {
	case "json":
		return render(w, output, sug, nil)
	case "text":
		fmt.Fprintf(w, "%d Servers, %d AuthorizationPolicies\n", sug.Servers, sug.Policies)
		for _, n := range sug.Notes {
			fmt.Fprintln(w, "note:", n)
		}
	}
	return writeYAMLDocs(w, sug.Objects)
}

// writeYAMLDocs writes objects as one multi-document YAML stream.
func writeYAMLDocs(w io.Writer, objs []Object) error {
	for _, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "---\n%s", b); err != nil {
			return err
		}
	}
	return nil
}

// ApplyToStore replaces the policies of namespace ns in a local store
// file with objs, and writes it atomically (a new file renamed over the
// old one), so the controller never reads half of it and reloads it live.
func ApplyToStore(path, ns string, objs []Object) error {
	f, err := ReadStore(path)
	if err != nil {
		return err
	}
	var kept []meshconfig.Object
	for _, o := range f.Policies {
		if o.Metadata.Namespace != ns {
			kept = append(kept, o)
		}
	}
	for _, o := range objs {
		spec, err := json.Marshal(o.Spec)
		if err != nil {
			return err
		}
		kept = append(kept, meshconfig.Object{APIVersion: o.APIVersion, Kind: o.Kind,
			Metadata: meshconfig.ObjectMeta{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace}, Spec: spec})
	}
	f.Policies = kept
	data, err := f.Marshal()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".mesh-*.yaml")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
