// Package topcmd is `trellis top`: the live, sorted-by-volume view of the
// requests of a resource, from the tap stream (model.Tapper), aggregated by
// viz/top. On a terminal it refreshes in place until q or Ctrl-C; with -o
// json or yaml (or when stdout is not a terminal) it prints a snapshot at
// each refresh instead, for scripts.
package topcmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/cli/complete"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/cli/tapcmd"
	"github.com/trellis-mesh/trellis/viz/localtap"
	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/top"
)

type options struct {
	namespace, kubeconfig, context, file string
	as, localDir                         string
	asGroups                             []string
	local                                bool
	path, method, authority, direction   string
	maxRPS, limit                        uint32
	refresh                              time.Duration
	out                                  output.Flag
}

// New returns `trellis top`; kube builds the cluster's Tapper (as
// `trellis tap` does: tapcmd.FromKubeconfig).
func New(kube tapcmd.TapperFunc) *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "top RESOURCE [NAME]",
		Short: "Show the requests of a resource live, busiest first (from tap)",
		Long: `Tap the requests of a resource (kubectl-style: deploy/web, pod/NAME,
ns/NAME, statefulsets, daemonsets, replicasets, jobs) and show one row per
source, destination, method and path: how many finished, the best, worst
and last latency, and the success rate (an error, a 5xx, or a non-OK gRPC
status fails), busiest first, refreshed in place like top. q or Ctrl-C
quits and gives the terminal back as it was.

Paths are shown without their query string. Headers and bodies are never
requested. The tap goes through the API server's tap.trellis.io API with
your credentials (RBAC: watch on RESOURCE/tap, ClusterRole trellis-tap), at
most --max-rps events per second per proxy: tap can never slow the mesh.

With -o json or yaml, or when stdout is not a terminal, a snapshot is
printed at each --refresh instead (json: one object per line) until the tap
ends or Ctrl-C. --file replays a saved tap session (newline-delimited
protojson TapEvents, as the tap API streams them). --local taps the
proxies of a running "trellis demo" through its controller (RESOURCE is
then workload/NAME, or nothing for every workload).`,
		Example: `  # The demo's web deployment, live
  trellis top deploy/web -n trellis-demo

  # Only the /books requests of a namespace
  trellis top ns/trellis-demo --path /books

  # Snapshots every 5 s for a script
  trellis top deploy/web -n trellis-demo -o json --refresh 5s | jq -c '.rows[0]'

  # The busiest path of the next 200 requests
  trellis top deploy/web -n trellis-demo -o json --limit 200 | tail -1 | jq '.rows[0]'

  # A saved session
  trellis top deploy/web --file session.ndjson

  # Local mode: every workload of the running trellis demo
  trellis top --local`,
		Args: cobra.RangeArgs(0, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, tapper, err := o.target(args, kube)
			if err != nil {
				return err
			}
			stdin, _ := cmd.InOrStdin().(*os.File)
			stdout, _ := cmd.OutOrStdout().(*os.File)
			return run(cmd.Context(), o, tapper, model.TapRequest{Target: target, Observe: o.observe()}, stdin, stdout, cmd.OutOrStdout())
		},
	}
	o.flags(cmd)
	return cmd
}

func (o *options) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&o.namespace, "namespace", "n", "", "namespace of the resource (default \"default\"; ns/NAME taps a whole namespace)")
	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "path to the kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&o.context, "context", "", "kubeconfig context to use (default the current context)")
	f.StringVar(&o.as, "as", "", "tap as this user (impersonation, as kubectl --as)")
	f.StringSliceVar(&o.asGroups, "as-group", nil, "tap as this group (impersonation, repeatable)")
	f.BoolVar(&o.local, "local", false, "local mode: tap the proxies of a running `trellis demo` through its controller")
	f.StringVar(&o.localDir, "local-dir", "", "local mode: the work directory of the run to tap (default the newest running `trellis demo`'s)")
	f.StringVar(&o.file, "file", "", "replay a saved tap session (newline-delimited protojson TapEvents) instead of tapping")
	f.StringVar(&o.path, "path", "", "only requests whose path starts with this")
	f.StringVar(&o.method, "method", "", "only requests with this method")
	f.StringVar(&o.authority, "authority", "", "only requests to this authority (exact)")
	f.StringVar(&o.direction, "direction", "", "only inbound or outbound requests (default both)")
	f.Uint32Var(&o.maxRPS, "max-rps", 100, "most events per second each proxy sends (the excess is dropped, never queued; at most 1000)")
	f.Uint32Var(&o.limit, "limit", 0, "end after this many requests (0: until q or Ctrl-C); the last snapshot is then printed")
	f.DurationVar(&o.refresh, "refresh", time.Second, "how often the view (or a snapshot) is refreshed")
	o.out.Register(cmd, output.Text, output.JSON, output.YAML)
}

func (o *options) observe() *apiv1.ObserveRequest {
	return &apiv1.ObserveRequest{MaxRps: o.maxRPS, Limit: o.limit, Match: &apiv1.TapMatch{
		PathPrefix: o.path, Method: o.method, Authority: o.authority, Direction: o.direction}}
}

// target parses the resource and opens the Tapper: a saved session, the
// local demo's controller, or the cluster's tap API.
func (o *options) target(args []string, kube tapcmd.TapperFunc) (model.Resource, model.Tapper, error) {
	switch {
	case o.refresh <= 0:
		return model.Resource{}, nil, errors.New("--refresh must be positive")
	case o.direction != "" && o.direction != "inbound" && o.direction != "outbound":
		return model.Resource{}, nil, fmt.Errorf("--direction %q: want inbound or outbound", o.direction)
	case o.local || o.localDir != "":
		r, err := tapcmd.LocalTarget(args, o.namespace)
		if err != nil {
			return r, nil, err
		}
		t, err := openLocal(o.localDir)
		return r, t, err
	}
	r, err := tapcmd.ParseTarget(args, o.namespace)
	switch {
	case err != nil:
		return r, nil, err
	case o.file != "":
		return r, fileTapper{path: o.file}, nil
	case kube == nil:
		return r, nil, errors.New("this build has no tap client; use --file")
	}
	t, err := kube(o.kubeconfig, o.context, o.as, o.asGroups)
	return r, t, err
}

// openLocal is the local controller's Tapper: dir's, or the newest running
// demo's (as `trellis tap --local`).
func openLocal(dir string) (model.Tapper, error) {
	if dir != "" {
		return localtap.Open(dir)
	}
	t, _, err := localtap.FindRunning()
	return t, err
}

// session is one tap being aggregated.
type session struct {
	mu     sync.Mutex
	agg    top.Aggregator
	target string
	ended  string
}

func (s *session) snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Snapshot{Time: time.Now(), Target: s.target, Rows: s.agg.Rows(), Pending: s.agg.Pending(), Ended: s.ended}
}

func (s *session) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = "ok"
	if err != nil && !errors.Is(err, context.Canceled) {
		s.ended = err.Error()
	}
}

func run(ctx context.Context, o options, t model.Tapper, req model.TapRequest, stdin, stdout *os.File, w io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &session{target: targetName(req.Target)}
	done := make(chan error, 1)
	go func() {
		done <- t.Tap(ctx, req, func(ev *apiv1.TapEvent) error {
			s.mu.Lock()
			s.agg.Add(ev)
			s.mu.Unlock()
			return nil
		})
	}()
	if o.out.Format() == output.Text && isTerminal(stdin, stdout) {
		return live(ctx, o.refresh, s, done, stdin, stdout)
	}
	return snapshots(ctx, o.refresh, o.out.Format(), s, done, w)
}

// targetName is how the title names the target: kind/name -n ns, or
// "every workload" of a local mesh.
func targetName(r model.Resource) string {
	name := strings.TrimPrefix(r.Kind+"/"+r.Name, "/")
	if name == "" {
		name = "every workload"
	}
	if r.Namespace != "" {
		name += " -n " + r.Namespace
	}
	return name
}

// live is the terminal view, until q or Ctrl-C (also after the tap ended:
// its last figures stay on screen).
func live(ctx context.Context, refresh time.Duration, s *session, done <-chan error, stdin, stdout *os.File) error {
	scr, err := openScreen(stdin, stdout)
	if err != nil {
		return err
	}
	defer scr.close()
	quit := make(chan struct{})
	go scr.keys(quit)
	tick := time.NewTicker(refresh)
	defer tick.Stop()
	for {
		w, h := scr.size()
		if _, err := io.WriteString(stdout, frame(s.snapshot(), w, h)); err != nil {
			return err
		}
		select {
		case <-quit:
			return nil
		case <-ctx.Done():
			return nil
		case err := <-done:
			s.end(err)
			done = nil // keep showing; only q ends the view
		case <-tick.C:
		}
	}
}

// snapshots prints one snapshot per refresh, and a last one when the tap
// ends; Ctrl-C (the context) ends it cleanly.
func snapshots(ctx context.Context, refresh time.Duration, f output.Format, s *session, done <-chan error, w io.Writer) error {
	tick := time.NewTicker(refresh)
	defer tick.Stop()
	for {
		var tapErr error
		last := false
		select {
		case <-ctx.Done():
			last = true
		case tapErr = <-done:
			s.end(tapErr)
			last = true
		case <-tick.C:
		}
		if err := printSnapshot(w, f, s.snapshot()); err != nil {
			return err
		}
		if last {
			if tapErr != nil && !errors.Is(tapErr, context.Canceled) {
				return tapErr
			}
			return nil
		}
	}
}

func printSnapshot(w io.Writer, f output.Format, snap Snapshot) error {
	switch f {
	case output.JSON:
		return json.NewEncoder(w).Encode(snap) // one object per line
	case output.YAML:
		if _, err := io.WriteString(w, "---\n"); err != nil {
			return err
		}
	}
	return output.Write(w, f, snap, func(w io.Writer) error {
		fmt.Fprintf(w, "%s  %s\n", snap.Time.Format(time.RFC3339), snap.Target)
		if err := table(w, snap.Rows); err != nil {
			return err
		}
		_, err := fmt.Fprintln(w)
		return err
	})
}
