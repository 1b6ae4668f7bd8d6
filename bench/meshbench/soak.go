package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/bench/loadgen"
)

// soakOptions are the flags of `meshbench soak`.
type soakOptions struct {
	duration, interval, warmup time.Duration
	rate                       float64
	conns, gomaxprocs          int
	binDir, logLevel           string
	// RSS may rise by at most slopeMiBPerHour over the measured window
	// plus noiseMiB (GC cycles move RSS by a few MiB either way).
	slopeMiBPerHour, noiseMiB float64
	maxGoroutineGrowth        int
}

func parseSoakFlags(args []string, stderr io.Writer) (soakOptions, error) {
	fs := flag.NewFlagSet("meshbench soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o soakOptions
	fs.DurationVar(&o.duration, "duration", 30*time.Minute, "how long to send load")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "how often to sample the proxies (load runs in chunks of this length)")
	fs.DurationVar(&o.warmup, "warmup", 0, "start of the run left out of the growth checks (default: a quarter of -duration, at most 5m)")
	fs.Float64Var(&o.rate, "rate", 2000, "HTTP/1.1 requests per second through the mesh")
	fs.IntVar(&o.conns, "conns", 16, "keep-alive connections")
	fs.IntVar(&o.gomaxprocs, "proxy-gomaxprocs", 1, "GOMAXPROCS of each trellis-proxy")
	fs.StringVar(&o.binDir, "bin", "bin", "directory holding trellis-controller and trellis-proxy")
	fs.StringVar(&o.logLevel, "proxy-log-level", "warn", "--log-level of the proxies")
	fs.Float64Var(&o.slopeMiBPerHour, "max-rss-slope", 1, "fail when a proxy's RSS trend rises faster than this many MiB per hour (plus -rss-noise)")
	fs.Float64Var(&o.noiseMiB, "rss-noise", 2, "MiB of RSS rise over the window allowed on top of -max-rss-slope")
	fs.IntVar(&o.maxGoroutineGrowth, "max-goroutine-growth", 10, "fail when a proxy's goroutines at the end exceed those after warm-up by more than this")
	if err := fs.Parse(args); err != nil {
		return soakOptions{}, err
	}
	if fs.NArg() > 0 {
		return soakOptions{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["warmup"] {
		o.warmup = min(o.duration/4, 5*time.Minute)
	}
	switch {
	case o.duration <= 0 || o.interval <= 0 || o.warmup < 0:
		return soakOptions{}, errors.New("-duration and -interval must be positive, -warmup not negative")
	case o.duration < 3*o.interval+o.warmup:
		return soakOptions{}, errors.New("-duration must hold -warmup and at least three -interval samples")
	case !(o.rate > 0 && o.rate <= 1e6) || o.conns < 1 || o.gomaxprocs < 1:
		return soakOptions{}, errors.New("-rate must be in (0, 1000000], -conns and -proxy-gomaxprocs at least 1")
	}
	return o, nil
}

// soakSample is one reading of both proxies after a chunk of load.
type soakSample struct {
	at               time.Duration // since the load started
	requests, failed int64
	p99              int64 // µs, corrected, of the chunk
	rss              [2]float64
	goroutines       [2]float64
	firstError       string
}

var soakProxies = [2]string{"client-proxy", "server-proxy"}

// runSoak sends HTTP/1.1 load through meshbench's mesh for the whole
// duration and samples each proxy's /metrics after every chunk. It fails
// on the first failed request, and at the end on RSS or goroutine growth.
func runSoak(ctx context.Context, o soakOptions, log *slog.Logger, out io.Writer) error {
	dir, err := os.MkdirTemp("", "meshbench-soak-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	ps := &procs{dir: dir, log: log}
	defer ps.Stop()
	_, addrs, err := startUpstream(ctx, ps)
	if err != nil {
		return err
	}
	m, err := startMesh(ctx, ps, meshOptions{binDir: o.binDir, gomaxprocs: o.gomaxprocs, logLevel: o.logLevel}, dirUnder(dir, "mesh"), addrs)
	if err != nil {
		return err
	}
	workers, closer := loadgen.HTTPWorkers(loadgen.HTTPTarget{Addr: m.outboundAddr, Host: meshAuthority}, o.conns)
	defer closer.Close()
	admins := [2]string{m.clientAdmin, m.serverAdmin}
	fmt.Fprintf(out, "soak: HTTP/1.1 GET at %g rps over %d connections through the mesh for %v, sampled every %v; growth checked after %v\n",
		o.rate, o.conns, o.duration, o.interval, o.warmup)
	// Fixed widths, not a tabwriter: each row is printed as it comes.
	const row = "%8s %9s %7s %9s %15s %18s %15s %18s\n"
	fmt.Fprintf(out, row, "t", "requests", "failed", "p99 ms", "client RSS MiB", "client goroutines", "server RSS MiB", "server goroutines")
	var samples []soakSample
	start := time.Now()
	for time.Since(start) < o.duration {
		res, err := loadgen.Run(ctx, loadgen.Config{Rate: o.rate, Duration: min(o.interval, o.duration-time.Since(start))}, workers)
		if err != nil {
			return err
		}
		s := soakSample{at: time.Since(start), requests: res.Completed, failed: res.Errors + res.Unsent, p99: res.Corrected.ValueAtQuantile(99), firstError: res.FirstError}
		for i, a := range admins {
			if s.rss[i], s.goroutines[i], err = scrapeProcess(ctx, a); err != nil {
				return fmt.Errorf("soak: %s /metrics: %w", soakProxies[i], err)
			}
		}
		samples = append(samples, s)
		fmt.Fprintf(out, row, fmt.Sprintf("%.0fs", s.at.Seconds()), strconv.FormatInt(s.requests, 10), strconv.FormatInt(s.failed, 10),
			fmt.Sprintf("%.2f", float64(s.p99)/1000), fmt.Sprintf("%.1f", s.rss[0]/(1<<20)), fmt.Sprintf("%.0f", s.goroutines[0]),
			fmt.Sprintf("%.1f", s.rss[1]/(1<<20)), fmt.Sprintf("%.0f", s.goroutines[1]))
		if s.failed > 0 {
			return fmt.Errorf("soak FAILED at %.0fs: %d requests failed in the last %v (first error: %s)", s.at.Seconds(), s.failed, o.interval, s.firstError)
		}
	}
	return checkSoak(out, o, samples)
}

// checkSoak applies the growth checks to the samples taken after warm-up.
func checkSoak(out io.Writer, o soakOptions, samples []soakSample) error {
	var kept []soakSample
	for _, s := range samples {
		if s.at > o.warmup {
			kept = append(kept, s)
		}
	}
	if len(kept) < 3 {
		return fmt.Errorf("soak: only %d samples after warm-up, need 3", len(kept))
	}
	var failures []string
	window := (kept[len(kept)-1].at - kept[0].at).Hours()
	allowed := o.slopeMiBPerHour*window + o.noiseMiB
	var total int64
	for _, s := range samples {
		total += s.requests
	}
	fmt.Fprintf(out, "\n%d requests, none failed\n", total)
	for i, name := range soakProxies {
		xs, rss := make([]float64, len(kept)), make([]float64, len(kept))
		for j, s := range kept {
			xs[j], rss[j] = s.at.Hours(), s.rss[i]/(1<<20)
		}
		slope := leastSquaresSlope(xs, rss)
		rise := slope * window
		g0, g1 := kept[0].goroutines[i], kept[len(kept)-1].goroutines[i]
		fmt.Fprintf(out, "%s: RSS trend %+.2f MiB/h (%+.2f MiB over the %.1f min checked; allowed %.2f), goroutines %.0f -> %.0f (allowed +%d)\n",
			name, slope, rise, window*60, allowed, g0, g1, o.maxGoroutineGrowth)
		if rise > allowed {
			failures = append(failures, fmt.Sprintf("%s RSS rose %.2f MiB over %.1f min (trend %.2f MiB/h), more than the %.2f allowed", name, rise, window*60, slope, allowed))
		}
		if g1-g0 > float64(o.maxGoroutineGrowth) {
			failures = append(failures, fmt.Sprintf("%s goroutines grew from %.0f to %.0f, more than %d", name, g0, g1, o.maxGoroutineGrowth))
		}
	}
	if len(failures) > 0 {
		return fmt.Errorf("soak FAILED: %s", strings.Join(failures, "; "))
	}
	fmt.Fprintln(out, "soak passed")
	return nil
}

// leastSquaresSlope fits y = a + b*x and returns b (0 for a flat or
// degenerate set).
func leastSquaresSlope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if n < 2 || d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// scrapeProcess reads process_resident_memory_bytes and go_goroutines
// from a proxy's admin /metrics.
func scrapeProcess(ctx context.Context, admin string) (rss, goroutines float64, err error) {
	err = getMetrics(ctx, admin, func(r io.Reader) error {
		rss, goroutines, err = parseProcessMetrics(r)
		return err
	})
	return rss, goroutines, err
}

// parseProcessMetrics finds the two unlabelled gauges in a Prometheus text
// exposition.
func parseProcessMetrics(r io.Reader) (rss, goroutines float64, err error) {
	g, err := parseGauges(r, "process_resident_memory_bytes", "go_goroutines")
	if err != nil {
		return 0, 0, err
	}
	return g["process_resident_memory_bytes"], g["go_goroutines"], nil
}

// parseGauges finds the named unlabelled samples in a Prometheus text
// exposition; each must be there.
func parseGauges(r io.Reader, names ...string) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("%s missing", n)
		}
	}
	return out, nil
}

// getMetrics GETs a proxy's admin /metrics and hands the body to parse.
func getMetrics(ctx context.Context, admin string, parse func(io.Reader) error) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return parse(resp.Body)
}
