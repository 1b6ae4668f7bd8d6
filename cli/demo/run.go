package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/httpget"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/cli/procs"
	"github.com/trellis-mesh/trellis/viz/stats"
)

// Options configure Run. The zero value of a field means its default.
type Options struct {
	BinDir   string
	RPS      int
	Duration time.Duration // 0: until ctx ends
	Interval time.Duration
	Output   output.Format // text (the default), json or yaml
	Fail     map[string]float64
	// Split is --split (nil: none).
	Split    *Split
	Keep     bool
	BasePort int
	// Policy is "" or PolicyDeny (policy.go).
	Policy string
	// Dashboard, when set, serves the dashboard over the running demo
	// until ctx ends (dashboard.go).
	Dashboard func(ctx context.Context, p Plan) error
	// TraceCollector, when set, is every proxy's --trace-collector (an
	// OTLP/gRPC host:port), with TraceSampleRatio as --trace-sample-ratio.
	TraceCollector   string
	TraceSampleRatio float64

	// ReadyTimeout bounds each readiness wait; Warmup is left out of the
	// final summary; StopGrace is the SIGTERM-to-SIGKILL delay.
	ReadyTimeout time.Duration
	Warmup       time.Duration
	StopGrace    time.Duration

	// Self is the path of the running trellis binary, for finding its
	// siblings.
	Self   string
	Stdout io.Writer
	Stderr io.Writer
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.RPS == 0 {
		o.RPS = 50
	}
	if o.Interval == 0 {
		o.Interval = 5 * time.Second
	}
	if o.Output == "" {
		o.Output = output.Text
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 3 * time.Second
	}
	if o.StopGrace == 0 {
		o.StopGrace = 5 * time.Second
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.RPS < 0:
		return fmt.Errorf("--rps %d: must be positive", o.RPS)
	case o.Duration < 0:
		return fmt.Errorf("--duration %s: must not be negative", o.Duration)
	case o.Interval < 100*time.Millisecond:
		return fmt.Errorf("--interval %s: must be at least 100ms", o.Interval)
	case o.Output != output.Text && !output.IsStructured(o.Output):
		return fmt.Errorf("-o %q: want text, json or yaml", o.Output)
	}
	for svc, r := range o.Fail {
		if !knownService(svc) || r < 0 || r > 1 {
			return fmt.Errorf("--fail %s=%v: unknown service or rate outside 0-1", svc, r)
		}
	}
	return nil
}

// Run runs the demo until ctx ends (Ctrl-C: a clean stop, nil error), the
// duration passes, or a child dies (an error naming it).
func Run(ctx context.Context, opts Options) (err error) {
	if err := opts.defaults(); err != nil {
		return err
	}
	bins, err := FindBinaries(opts.BinDir, opts.Self)
	if err != nil {
		return err
	}
	need := PortsNeeded()
	if opts.Policy != "" {
		need += IntruderPorts
	}
	ports, err := AllocatePorts(need, opts.BasePort)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "trellis-demo-")
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	defer func() {
		if opts.Keep {
			fmt.Fprintf(opts.Stderr, "work dir kept: %s\n", dir)
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = fmt.Errorf("remove work dir: %w", rerr)
		}
	}()
	plan, err := NewPlan(dir, ports[:PortsNeeded()], opts.Fail)
	if err != nil {
		return err
	}
	plan.Split = opts.Split
	if plan, err = plan.WithPolicy(opts.Policy, ports[PortsNeeded():]); err != nil {
		return err
	}
	if err := plan.Write(); err != nil {
		return err
	}

	d := &demo{opts: opts, bins: bins, plan: plan, sup: procs.New(opts.Logger)}
	// Children stop on every way out, including a panic.
	defer d.sup.Stop(opts.StopGrace)

	// A child that dies cancels everything with itself as the cause.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case e := <-d.sup.Exited():
			cancel(e)
		case <-runCtx.Done():
		}
	}()

	err = d.run(runCtx)
	var exit *procs.ExitError
	if errors.As(context.Cause(runCtx), &exit) || errors.As(err, &exit) {
		if !opts.Keep {
			return fmt.Errorf("demo stopped: %w\n(run with --keep to keep the work dir and every log)", exit)
		}
		return fmt.Errorf("demo stopped: %w", exit)
	}
	if err != nil && ctx.Err() != nil {
		// Interrupted while starting up: a clean stop, not a failure.
		fmt.Fprintln(opts.Stderr, "stopped")
		return nil
	}
	return err
}

type demo struct {
	opts Options
	bins Binaries
	plan Plan
	sup  *procs.Supervisor
}

func (d *demo) status(format string, args ...any) {
	fmt.Fprintf(d.opts.Stderr, format+"\n", args...)
}

func (d *demo) run(ctx context.Context) error {
	p := d.plan
	d.status("trellis demo: work dir %s", p.Dir)

	ctl, err := d.sup.Start(procs.Spec{
		Name: "trellis-controller", Path: d.bins[ControllerBinary], LogPath: p.LogPath("controller"),
		Args: []string{"local", "--config", p.ConfigPath(), "--state-dir", p.StateDir(),
			"--listen", addr(p.ControllerPort), "--admin-addr", addr(p.ControllerAdminPort),
			"--tap-api-addr", addr(p.ControllerTapPort), "--tap-token-file", p.TapTokenPath()},
	})
	if err != nil {
		return err
	}
	ready := procs.HTTPReady("http://" + addr(p.ControllerAdminPort) + "/ready")
	if err := procs.WaitReady(ctx, ctl, d.opts.ReadyTimeout, func(ctx context.Context) error {
		if err := ready(ctx); err != nil {
			return err
		}
		if _, err := os.Stat(p.AnchorPath()); err != nil {
			return fmt.Errorf("trust anchor: %w", err)
		}
		return nil
	}); err != nil {
		return err
	}
	d.status("controller ready on %s", addr(p.ControllerPort))

	// Proxies start together and are waited for together.
	proxies := make([]*procs.Proc, len(p.Workloads))
	for i, w := range p.Workloads {
		proxies[i], err = d.sup.Start(procs.Spec{
			Name: fmt.Sprintf("trellis-proxy (%s)", w.Name), Path: d.bins[ProxyBinary], LogPath: p.LogPath("proxy-" + w.Name),
			Args: d.proxyArgs(w),
		})
		if err != nil {
			return err
		}
	}
	for i, w := range p.Workloads {
		if err := procs.WaitReady(ctx, proxies[i], d.opts.ReadyTimeout, procs.HTTPReady("http://"+addr(w.AdminPort)+"/ready")); err != nil {
			return err
		}
	}
	d.status("%d proxies ready", len(proxies))

	// Servers first, the load generator once they listen.
	var loadgens []Workload
	var servers []*procs.Proc
	var serverWorkloads []Workload
	for _, w := range p.Workloads {
		if w.Role == "loadgen" {
			loadgens = append(loadgens, w)
			continue
		}
		proc, err := d.startApp(w)
		if err != nil {
			return err
		}
		servers = append(servers, proc)
		serverWorkloads = append(serverWorkloads, w)
	}
	for i, w := range serverWorkloads {
		if err := procs.WaitReady(ctx, servers[i], d.opts.ReadyTimeout, tcpReady(addr(w.AppPort))); err != nil {
			return err
		}
	}
	for _, w := range loadgens {
		if _, err := d.startApp(w); err != nil {
			return err
		}
	}
	if d.plan.Policy != "" {
		d.status("policy %s: only loadgen -> web -> books -> authors is allowed; intruder -> books.demo:80 is refused (edit %s to change it live)", d.plan.Policy, d.plan.ConfigPath())
	}
	d.status("demo application running: loadgen -> web.demo:80 -> books.demo:80 (v1, v2) -> authors.demo:80 at %d rps", d.opts.RPS)
	if sp := d.plan.Split; sp != nil {
		d.status("split %s: HTTPRoute %s/%s-split in %s; edit its weights there to shift it live", sp.Service, Namespace, sp.Service, d.plan.ConfigPath())
	}
	if d.opts.Duration > 0 {
		d.status("running for %s", d.opts.Duration)
	} else {
		d.status("press Ctrl-C to stop")
	}
	return d.watchAndServe(ctx)
}

func (d *demo) proxyArgs(w Workload) []string {
	args := []string{
		"--mode", "explicit",
		"--outbound-addr", addr(w.OutboundPort),
		"--inbound-addr", addr(w.InboundPort),
		"--admin-addr", addr(w.AdminPort),
		"--tap-addr", addr(w.TapPort),
		"--app-addr", addr(w.AppPort),
		"--controller-addr", addr(d.plan.ControllerPort),
		"--trust-anchors", d.plan.AnchorPath(),
		"--identity", w.Identity(),
		"--token-file", d.plan.TokenPath(w),
		"--workload", w.Name,
		// The demo stops the load generator at the same time, so a long
		// drain would only delay Ctrl-C.
		"--shutdown-grace", "1s",
	}
	if d.opts.TraceCollector != "" {
		args = append(args, "--trace-collector", d.opts.TraceCollector,
			"--trace-sample-ratio", strconv.FormatFloat(d.opts.TraceSampleRatio, 'f', -1, 64))
	}
	return args
}

func appArgs(w Workload, rps int) []string {
	args := []string{
		"--role", w.Role,
		"--listen", addr(w.AppPort),
		"--proxy", addr(w.OutboundPort),
		"--name", w.Name,
		"--version", w.Version,
	}
	if w.FailRate > 0 {
		args = append(args, "--fail-rate", strconv.FormatFloat(w.FailRate, 'f', -1, 64))
	}
	if w.Role == "loadgen" {
		target := w.Target
		if target == "" {
			target = "web"
		}
		if w.Target != "" {
			rps = max(1, rps/10) // a trickle: enough to show in the tables
		}
		args = append(args, "--rps", strconv.Itoa(rps), "--target", serviceByName(target).Authority())
	}
	return args
}

func (d *demo) startApp(w Workload) (*procs.Proc, error) {
	return d.sup.Start(procs.Spec{
		Name: fmt.Sprintf("trellis-demo-app (%s)", w.Name), Path: d.bins[AppBinary], LogPath: d.plan.LogPath("app-" + w.Name),
		Args: appArgs(w, d.opts.RPS),
	})
}

func tcpReady(address string) func(context.Context) error {
	return func(ctx context.Context) error {
		var dialer net.Dialer
		c, err := dialer.DialContext(ctx, "tcp", address)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// watch prints the tables every interval until the duration passes or ctx
// ends, then the summary over the run after the warm-up.
func (d *demo) watch(ctx context.Context) error {
	live := d.opts.Stdout
	if output.IsStructured(d.opts.Output) {
		live = d.opts.Stderr // stdout carries only the summary document
	}
	names := make([]string, len(d.plan.Workloads))
	for i, w := range d.plan.Workloads {
		names[i] = w.Name
	}
	scraper := &scraper{client: &http.Client{Timeout: 2 * time.Second}, plan: d.plan}

	start := time.Now()
	var done <-chan time.Time
	if d.opts.Duration > 0 {
		timer := time.NewTimer(d.opts.Duration)
		defer timer.Stop()
		done = timer.C
	}
	warmup := d.opts.Warmup
	if d.opts.Duration > 0 {
		// Short runs still measure most of their traffic.
		warmup = min(warmup, d.opts.Duration/4)
	}
	warm := time.NewTimer(warmup)
	defer warm.Stop()
	tick := time.NewTicker(d.opts.Interval)
	defer tick.Stop()

	// Until the warm-up ends the baseline is "nothing yet" at start.
	base, baseAt := map[string]stats.Snapshot{}, start
	prev, prevAt := scraper.scrape(ctx, d.opts.Logger), time.Now()
	var denied *denials
	if d.plan.Policy != "" {
		denied = &denials{client: scraper.client, plan: d.plan}
		_ = denied.write(ctx, io.Discard) // the baseline
	}

	for {
		select {
		case <-ctx.Done():
			// A dying child is reported by Run; Ctrl-C ends normally.
			var exit *procs.ExitError
			if errors.As(context.Cause(ctx), &exit) {
				return exit
			}
			return d.finish(context.WithoutCancel(ctx), scraper, names, base, baseAt)
		case <-done:
			return d.finish(ctx, scraper, names, base, baseAt)
		case <-warm.C:
			base, baseAt = scraper.scrape(ctx, d.opts.Logger), time.Now()
		case <-tick.C:
			cur, now := scraper.scrape(ctx, d.opts.Logger), time.Now()
			r := BuildReport(names, deltas(cur, prev), now.Sub(prevAt).Seconds())
			title := fmt.Sprintf("%s  (last %s, running %s)", now.Format("15:04:05"),
				now.Sub(prevAt).Round(time.Second), now.Sub(start).Round(time.Second))
			if err := WriteTables(live, r, title); err != nil {
				return err
			}
			if denied != nil {
				if err := denied.write(ctx, live); err != nil {
					return err
				}
			}
			prev, prevAt = cur, now
		}
	}
}

func (d *demo) finish(ctx context.Context, s *scraper, names []string, base map[string]stats.Snapshot, baseAt time.Time) error {
	cur, now := s.scrape(ctx, d.opts.Logger), time.Now()
	r := BuildReport(names, deltas(cur, base), now.Sub(baseAt).Seconds())
	title := fmt.Sprintf("Summary over %s (after a %s warm-up)", now.Sub(baseAt).Round(time.Second), d.opts.Warmup)
	return output.Write(d.opts.Stdout, d.opts.Output, r.Summary(), func(w io.Writer) error { return WriteTables(w, r, title) })
}

func deltas(cur, prev map[string]stats.Snapshot) map[string]stats.Snapshot {
	out := make(map[string]stats.Snapshot, len(cur))
	for name, s := range cur {
		out[name] = s.Sub(prev[name])
	}
	return out
}

type scraper struct {
	client *http.Client
	plan   Plan
}

// scrape reads every proxy's /metrics concurrently. A proxy that cannot be
// read is left out of this round (and logged): if it died, the supervisor
// reports it.
func (s *scraper) scrape(ctx context.Context, log *slog.Logger) map[string]stats.Snapshot {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[string]stats.Snapshot{}
	for _, w := range s.plan.Workloads {
		wg.Go(func() {
			snap, err := s.one(ctx, "http://"+addr(w.AdminPort)+"/metrics")
			if err != nil {
				log.Warn("scrape failed", "workload", w.Name, "err", err)
				return
			}
			mu.Lock()
			out[w.Name] = snap
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func (s *scraper) one(ctx context.Context, url string) (stats.Snapshot, error) {
	// Bounded: a proxy's exposition is a few hundred KiB at most.
	body, err := httpget.Body(ctx, s.client, url, 16<<20)
	if err != nil {
		return nil, err
	}
	return stats.Parse(bytes.NewReader(body))
}
