// Package tapcmd is `trellis tap`: live requests of a workload, pod or
// namespace through the tap.trellis.io API (docs/observability.md#tap),
// printed as they happen and optionally exported as HAR or pcapng.
package tapcmd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/cli/complete"
	"github.com/trellis-mesh/trellis/cli/kubeconfig"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/version"
	"github.com/trellis-mesh/trellis/viz/k8stap"
	"github.com/trellis-mesh/trellis/viz/localtap"
	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/tapexport"
)

// TapperFunc makes the Tapper of a kubeconfig, context and impersonation.
type TapperFunc func(kubeconfigPath, kubeContext, as string, asGroups []string) (model.Tapper, error)

// FromKubeconfig taps through the API server with the user's credentials.
func FromKubeconfig(path, kubeContext, as string, asGroups []string) (model.Tapper, error) {
	cfg, err := kubeconfig.Load(path, kubeContext)
	if err != nil {
		return nil, err
	}
	cfg.Impersonate.UserName, cfg.Impersonate.Groups = as, asGroups
	return &k8stap.Tapper{Config: cfg}, nil
}

type options struct {
	kubeconfig, kubeContext, namespace, as string
	asGroups                               []string
	path, method, authority, from, to, dir string
	maxRPS, limit, captureBodies           uint32
	sample                                 float64
	headerNames                            bool
	export, file                           string
	local                                  bool
	localDir                               string
}

// New returns `trellis tap`.
func New(tapper TapperFunc) *cobra.Command {
	var o options
	var out output.Flag
	cmd := &cobra.Command{
		Use:   "tap RESOURCE[/NAME] [NAME]",
		Short: "Watch live requests of a workload, pod or namespace",
		Long: fmt.Sprintf(`Stream the requests a workload's proxies see, as they happen: method,
authority, path, status or gRPC status, latency, bytes, direction, both
identities and whether the hop was mutual TLS. Through the Kubernetes API
server (the tap.trellis.io API), so it shows exactly what your RBAC allows:
verb watch on RESOURCE/tap (ClusterRole trellis-tap), and capture as well
for --capture-bodies (trellis-tap-capture).

Header values are never shown; --header-names shows their names.
Authorization and cookie values are never captured in any form.

Each proxy sends at most --max-rps events a second (excess is dropped,
never queued) and --sample of the matching requests, so a tap cannot hurt
the data plane.

--export writes the session, when it ends (--limit, or Ctrl-C), to --file
(mode 0600): har for a browser's or a HAR viewer's network panel, pcapng
for Wireshark (each request as an HTTP/1.1 exchange in its own TCP
connection between the real addresses; bodies only with --capture-bodies).
It is kept in memory until then, so it holds the first %d requests and
%d MiB of captured bodies at most; how many more were seen is printed.`, MaxExport, MaxExportBodyBytes>>20),
		Example: `  # Every request of the demo's web deployment
  trellis tap deploy/web -n trellis-demo

  # Only GETs under /books, with identities, as JSON lines
  trellis tap deploy/web -n trellis-demo --path /books --method GET -o json

  # A whole namespace, 100 requests, into Wireshark
  trellis tap ns/trellis-demo --limit 100 --export pcapng --file demo.pcapng

  # Local mode: the workload web of a running trellis demo
  trellis tap workload/web --local

  # With the first KiB of each body, into a HAR file
  trellis tap deploy/books -n trellis-demo --capture-bodies 1024 --limit 20 --export har --file books.har`,
		Args: cobra.RangeArgs(0, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := o.request()
			if err != nil {
				return err
			}
			var (
				target model.Resource
				t      model.Tapper
			)
			if o.local || o.localDir != "" {
				if target, err = LocalTarget(args, o.namespace); err == nil {
					t, err = openLocal(o.localDir)
				}
			} else if target, err = ParseTarget(args, o.namespace); err == nil {
				t, err = tapper(o.kubeconfig, o.kubeContext, o.as, o.asGroups)
			}
			if err != nil {
				return err
			}
			return run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), t, model.TapRequest{Target: target, Observe: req}, string(out.Format()), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "path to the kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&o.kubeContext, "context", "", "kubeconfig context to use (default the current context)")
	f.StringVarP(&o.namespace, "namespace", "n", "", "namespace of the resource (default \"default\")")
	f.StringVar(&o.as, "as", "", "tap as this user (impersonation, as kubectl --as)")
	f.StringSliceVar(&o.asGroups, "as-group", nil, "tap as this group (impersonation; repeatable)")
	f.StringVar(&o.path, "path", "", "only requests whose path starts with this")
	f.StringVar(&o.method, "method", "", "only requests with this method (GET, POST, ...)")
	f.StringVar(&o.authority, "authority", "", "only requests to this authority (host:port, exactly as sent)")
	f.StringVar(&o.from, "from", "", "only requests from this identity (SPIFFE ID)")
	f.StringVar(&o.to, "to", "", "only requests to this identity (SPIFFE ID)")
	f.StringVar(&o.dir, "direction", "", "inbound or outbound (default both)")
	f.Uint32Var(&o.maxRPS, "max-rps", 0, "events per second each proxy may send (default 100, at most 1000)")
	f.Float64Var(&o.sample, "sample", 0, "fraction of matching requests to show, in (0, 1] (default all)")
	f.Uint32Var(&o.limit, "limit", 0, "stop after this many requests (default: until Ctrl-C)")
	f.BoolVar(&o.headerNames, "header-names", false, "show the names (never the values) of request and response headers")
	f.Uint32Var(&o.captureBodies, "capture-bodies", 0, "capture up to this many bytes of each body (needs the RBAC verb capture; at most 65536)")
	f.StringVar(&o.export, "export", "", fmt.Sprintf("also write the session to --file: har or pcapng (its first %d requests, %d MiB of bodies at most)", MaxExport, MaxExportBodyBytes>>20))
	f.StringVar(&o.file, "file", "", "file --export writes")
	f.BoolVar(&o.local, "local", false, "local mode: tap the proxies of a running `trellis demo` through its controller")
	f.StringVar(&o.localDir, "local-dir", "", "local mode: the work directory of the run to tap (default the newest running `trellis demo`'s)")
	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
	_ = cmd.RegisterFlagCompletionFunc("export", cobra.FixedCompletions([]string{"har", "pcapng"}, cobra.ShellCompDirectiveNoFileComp))
	out.Register(cmd, output.Text, output.Wide, output.JSON, output.YAML)
	return cmd
}

func (o *options) request() (*apiv1.ObserveRequest, error) {
	if !(o.sample >= 0 && o.sample <= 1) {
		return nil, fmt.Errorf("--sample %g: want a fraction in (0, 1]", o.sample)
	}
	if o.captureBodies > 65536 {
		return nil, fmt.Errorf("--capture-bodies %d: at most 65536", o.captureBodies)
	}
	if o.maxRPS > 1000 {
		return nil, fmt.Errorf("--max-rps %d: at most 1000", o.maxRPS)
	}
	switch o.dir {
	case "", "inbound", "outbound":
	default:
		return nil, fmt.Errorf("--direction %q: want inbound or outbound", o.dir)
	}
	switch {
	case o.export != "" && o.export != "har" && o.export != "pcapng":
		return nil, fmt.Errorf("--export %q: want har or pcapng", o.export)
	case o.export != "" && o.file == "":
		return nil, fmt.Errorf("--export %s needs --file", o.export)
	case o.export == "" && o.file != "":
		return nil, errors.New("--file needs --export har or pcapng")
	}
	m := &apiv1.TapMatch{PathPrefix: o.path, Method: o.method, Authority: o.authority, FromIdentity: o.from, ToIdentity: o.to, Direction: o.dir}
	return &apiv1.ObserveRequest{Limit: o.limit, MaxRps: o.maxRPS, Match: m, Sample: o.sample, HeaderNames: o.headerNames, BodyBytes: o.captureBodies}, nil
}

// An export is held in memory until the tap ends, so it keeps at most
// MaxExport requests and MaxExportBodyBytes of captured bodies (the first
// ones); what comes after is counted and said when the file is written.
const (
	MaxExport          = 10000
	MaxExportBodyBytes = 256 << 20
)

// exportBuf holds the exchanges of an export within its maxima.
type exportBuf struct {
	// maxN and maxBody: 0 is MaxExport and MaxExportBodyBytes.
	maxN, maxBody int
	xs            []*tapexport.Exchange
	bodyBytes     int
	// left out: exchanges past a maximum. Once one is, every later one
	// is too: the file is the session's beginning, without gaps.
	left int
}

// add keeps x unless a maximum is reached; it reports whether it did.
func (b *exportBuf) add(x *tapexport.Exchange) bool {
	maxN, maxBody := cmp.Or(b.maxN, MaxExport), cmp.Or(b.maxBody, MaxExportBodyBytes)
	n := len(x.RequestBody) + len(x.ResponseBody)
	if b.left > 0 || len(b.xs) >= maxN || b.bodyBytes+n > maxBody {
		b.left++
		return false
	}
	b.xs, b.bodyBytes = append(b.xs, x), b.bodyBytes+n
	return true
}

// run taps until the limit, Ctrl-C or an error, then writes the export.
func run(ctx context.Context, stdout, stderr io.Writer, t model.Tapper, req model.TapRequest, format string, o options) error {
	var (
		asm tapexport.Assembler
		buf exportBuf
	)
	err := t.Tap(ctx, req, func(ev *apiv1.TapEvent) error {
		if o.export != "" {
			if x, ok := asm.Add(ev); ok {
				buf.add(x)
			}
		}
		return writeEvent(stdout, format, ev)
	})
	if err != nil && ctx.Err() == nil {
		return tapError(err)
	}
	if o.export == "" {
		return nil
	}
	for _, x := range asm.Pending() {
		buf.add(x)
	}
	xs := buf.xs
	// Completion order is not start order: files read best in time order.
	slices.SortStableFunc(xs, func(a, b *tapexport.Exchange) int { return a.Start.Compare(b.Start) })
	if err := writeExport(o.export, o.file, xs); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %d requests to %s (%s)\n", len(xs), o.file, o.export)
	if buf.left > 0 {
		fmt.Fprintf(stderr, "warning: %d more requests were not exported: an export holds at most %d requests and %d MiB of bodies (narrow the tap with --limit or filters)\n",
			buf.left, MaxExport, MaxExportBodyBytes>>20)
	}
	return nil
}

// tapError adds what to do to a refusal.
func tapError(err error) error {
	var te *k8stap.Error
	if !errors.As(err, &te) || te.Code != 403 {
		return err
	}
	if strings.Contains(te.Message, "cannot capture") {
		return err
	}
	return fmt.Errorf("%w (tapping needs the RBAC verb watch on RESOURCE/tap in tap.trellis.io: bind the ClusterRole trellis-tap)", err)
}

func writeExport(kind, path string, xs []*tapexport.Exchange) (err error) {
	f, err := createPrivate(path)
	if err != nil {
		return fmt.Errorf("--file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("--file %s: %w", path, cerr)
		}
	}()
	if kind == "har" {
		return tapexport.WriteHAR(f, version.Version, xs)
	}
	pw, err := tapexport.NewPcapWriter(f)
	if err != nil {
		return err
	}
	for _, x := range xs {
		if err := pw.Write(x); err != nil {
			return err
		}
	}
	return pw.Flush()
}

// createPrivate creates (or truncates) path readable by the user only:
// an export may hold captured bodies. An existing regular file with a
// wider mode is narrowed to 0600 too (devices and pipes are left alone).
func createPrivate(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o077 != 0 {
		err = f.Chmod(0o600)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// openLocal is the local controller's Tapper: dir's, or the running demo's.
func openLocal(dir string) (model.Tapper, error) {
	if dir != "" {
		return localtap.Open(dir)
	}
	t, _, err := localtap.FindRunning()
	return t, err
}
