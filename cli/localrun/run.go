package localrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/trellis-mesh/trellis/cli/demo"
	"github.com/trellis-mesh/trellis/cli/procs"
)

// Options configure Run.
type Options struct {
	Services     []Service
	Namespace    string // default "local"
	BinDir       string // where trellis-controller and trellis-proxy are; "" = beside Self, then $PATH
	Self         string // path of the running trellis binary
	BasePort     int    // 0: free ports the kernel picks
	Keep         bool   // keep the work directory
	ReadyTimeout time.Duration
	Stdout       io.Writer
	Stderr       io.Writer
	Logger       *slog.Logger
}

// Run starts the mesh, prints how to use it, and keeps it until ctx ends
// (Ctrl-C) or a process exits.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Namespace == "" {
		opts.Namespace = "local"
	}
	if !dnsLabel.MatchString(opts.Namespace) {
		return fmt.Errorf("--namespace %q: must be a DNS label (lower-case letters, digits, inner '-')", opts.Namespace)
	}
	if len(opts.Services) == 0 {
		return errors.New("at least one service is required")
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	controller, err := findBinary(demo.ControllerBinary, opts.BinDir, opts.Self)
	if err != nil {
		return err
	}
	proxy, err := findBinary(demo.ProxyBinary, opts.BinDir, opts.Self)
	if err != nil {
		return err
	}
	ports, err := demo.AllocatePorts(PortsNeeded(len(opts.Services)), opts.BasePort)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "trellis-run-")
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	defer func() {
		if opts.Keep {
			fmt.Fprintf(opts.Stderr, "work dir kept: %s\n", dir)
		} else if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = fmt.Errorf("remove work dir: %w", rerr)
		}
	}()
	plan, err := NewPlan(dir, opts.Namespace, opts.Services, ports)
	if err != nil {
		return err
	}
	if err := plan.Write(); err != nil {
		return err
	}
	sup := procs.New(opts.Logger)
	defer sup.Stop(5 * time.Second)
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case e := <-sup.Exited():
			cancel(e)
		case <-runCtx.Done():
		}
	}()
	if err := start(runCtx, sup, plan, controller, proxy, opts.ReadyTimeout); err != nil {
		if ctx.Err() != nil {
			return nil // Ctrl-C while starting: a clean stop
		}
		return err
	}
	printUsage(opts.Stdout, plan)
	<-runCtx.Done()
	var exit *procs.ExitError
	if errors.As(context.Cause(runCtx), &exit) {
		return fmt.Errorf("trellis run stopped: %w", exit)
	}
	return nil
}

// start runs the controller, then every proxy, each waited for /ready.
func start(ctx context.Context, sup *procs.Supervisor, p Plan, controller, proxy string, timeout time.Duration) error {
	ctl, err := sup.Start(procs.Spec{
		Name: "trellis-controller", Path: controller, LogPath: p.LogPath("controller"),
		Args: []string{"local", "--config", p.ConfigPath(), "--state-dir", p.StateDir(),
			"--listen", p.Controller, "--admin-addr", p.ControllerAd},
	})
	if err != nil {
		return err
	}
	ready := procs.HTTPReady("http://" + p.ControllerAd + "/ready")
	if err := procs.WaitReady(ctx, ctl, timeout, func(ctx context.Context) error {
		if err := ready(ctx); err != nil {
			return err
		}
		_, err := os.Stat(p.AnchorPath())
		return err
	}); err != nil {
		return err
	}
	all := append([]Proxy{p.Client}, p.Servers...)
	started := make([]*procs.Proc, len(all))
	for i, px := range all {
		if started[i], err = sup.Start(procs.Spec{
			Name: "trellis-proxy (" + px.Workload + ")", Path: proxy,
			LogPath: p.LogPath("proxy-" + px.Workload), Args: proxyArgs(p, px),
		}); err != nil {
			return err
		}
	}
	for i, px := range all {
		if err := procs.WaitReady(ctx, started[i], timeout, procs.HTTPReady("http://"+px.Admin+"/ready")); err != nil {
			return err
		}
	}
	return nil
}

func proxyArgs(p Plan, px Proxy) []string {
	args := []string{
		"--mode", "explicit",
		"--outbound-addr", px.Outbound,
		"--inbound-addr", px.Inbound,
		"--admin-addr", px.Admin,
		"--tap-addr", px.Tap,
		"--controller-addr", p.Controller,
		"--trust-anchors", p.AnchorPath(),
		"--identity", p.Identity(px.Workload),
		"--token-file", p.TokenPath(px),
		"--workload", px.Workload,
		"--shutdown-grace", "1s",
	}
	if px.Service != nil {
		args = append(args, "--app-addr", px.Service.Addr)
	}
	return args
}

// printUsage says where to send requests and how to see they were meshed.
// The "client proxy:" line is the contract scripts and tests read.
func printUsage(w io.Writer, p Plan) {
	fmt.Fprintf(w, "mesh ready (work dir %s)\n", p.Dir)
	fmt.Fprintf(w, "client proxy: %s\n", p.Client.Outbound)
	for _, s := range p.Servers {
		fmt.Fprintf(w, "service %s:%d -> server proxy %s (admin %s) -> %s\n",
			p.Authority(*s.Service), ServicePort, s.Inbound, s.Admin, s.Service.Addr)
	}
	first := p.Servers[0]
	fmt.Fprintf(w, "try:\n  curl -i -H 'Host: %s' http://%s/\n", p.Authority(*first.Service), p.Client.Outbound)
	fmt.Fprintf(w, "  curl -s http://%s/metrics | grep 'trellis_requests_total{.*tls=\"true\"'\n", first.Admin)
	fmt.Fprintln(w, "press Ctrl-C to stop")
}

// findBinary looks for name in binDir, else beside self, else in $PATH.
func findBinary(name, binDir, self string) (string, error) {
	candidates := []string{}
	if binDir != "" {
		candidates = append(candidates, filepath.Join(binDir, name))
	} else if self != "" {
		candidates = append(candidates, filepath.Join(filepath.Dir(self), name))
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	if binDir == "" {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("cannot find %s: run `make build` (it puts every binary in ./bin) or pass --bin-dir", name)
}
