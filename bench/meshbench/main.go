// Command meshbench measures, in one run and with identical open-loop load,
// the latency and cost of three paths to the same upstream: direct, through
// a pair of trellis-proxy (mTLS HTTP/2 between them), and through a pair of
// nginx (TLS 1.3 with client certificates between them) as a yardstick.
// See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "upstream" {
		os.Exit(upstreamMain())
	}
	if len(os.Args) > 1 && os.Args[1] == "soak" {
		os.Exit(soakMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "routes" {
		os.Exit(routesMain(os.Args[2:]))
	}
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "meshbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := slog.LevelInfo
	if opts.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(ctx, opts, log, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "meshbench:", err)
		stop()
		os.Exit(1)
	}
}

// upstreamMain runs `meshbench upstream` (started by meshbench itself, and
// by its tests' binary) and returns the exit code.
func upstreamMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ready := func(a upstreamAddrs) { fmt.Fprintf(os.Stdout, "%s%s %s\n", upstreamReadyPrefix, a.http, a.opaque) }
	if err := runUpstream(ctx, log, ready); err != nil {
		log.Error("upstream failed", "err", err)
		return 1
	}
	return 0
}

// soakMain runs `meshbench soak` and returns the exit code.
func soakMain(args []string) int { return subcommand("soak", args, parseSoakFlags, runSoak) }

// routesMain runs `meshbench routes` and returns the exit code.
func routesMain(args []string) int {
	return subcommand("routes", args, parseRoutesFlags, runRoutesReport)
}

// subcommand parses a subcommand's flags and runs it until done or
// interrupted: exit code 2 for bad flags, 1 for a failed run.
func subcommand[O any](name string, args []string, parse func([]string, io.Writer) (O, error),
	run func(context.Context, O, *slog.Logger, io.Writer) error) int {
	o, err := parse(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "meshbench %s: %v\n", name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, o, log, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "meshbench %s: %v\n", name, err)
		return 1
	}
	return 0
}

// workDir makes the run's temporary directory; cleanup removes it unless
// keep.
func workDir(prefix string, keep bool, log *slog.Logger) (dir string, cleanup func(), err error) {
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, fmt.Errorf("temp dir: %w", err)
	}
	if keep {
		log.Info("keeping the temporary directory", "dir", dir)
		return dir, func() {}, nil
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// Path names.
const (
	pathDirect = "direct"
	pathMesh   = "mesh"
	pathNginx  = "nginx"
)

// Scenario kinds, selected with -scenarios.
const (
	kindHTTP      = "http"       // HTTP/1.1 GET, 64 bytes, at each of -rates
	kindGRPC      = "grpc"       // gRPC unary at -grpc-rate
	kindBig       = "big"        // 1 MiB request and response bodies
	kindOpaque    = "opaque"     // raw TCP through both proxies, 1 MiB each way
	kindChurnHTTP = "churn-http" // a new app connection per HTTP request
	kindChurnTCP  = "churn-tcp"  // a new app connection and a new mesh TLS connection per exchange
	kindIdle      = "idle"       // many idle app connections held: RSS per connection
)

// allKinds is every scenario kind, in the order a run measures them;
// "churn" in -scenarios selects both churn kinds.
var allKinds = []string{kindHTTP, kindGRPC, kindBig, kindOpaque, kindChurnHTTP, kindChurnTCP, kindIdle}

type options struct {
	kinds            []string // scenario kinds to run, in allKinds order
	duration, warmup time.Duration
	// extraDuration, extraWarmup time the cells of the new scenarios (big,
	// opaque, churn), shorter by default so a full run stays reasonable.
	extraDuration, extraWarmup time.Duration
	bigRate                    float64 // 1 MiB exchanges per second (big and opaque)
	bigConns                   int
	churnRate                  float64
	churnConns                 int
	idleConns                  int
	rates                      []float64 // HTTP/1.1 scenarios
	grpcRate                   float64   // 0: no gRPC scenario
	paths                      []string
	passes                     int
	conns                      int
	proxyGOMAXPROCS            int
	binDir                     string
	nginxBin                   string
	jsonOut                    string
	keep                       bool
	verbose                    bool
	proxyLogLevel              string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("meshbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var rates, paths, kinds string
	var quick bool
	fs.StringVar(&kinds, "scenarios", "all", "scenarios to run, comma-separated: http, grpc, big, opaque, churn (churn-http and churn-tcp), idle, or all")
	o.extraFlags(fs)
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "measured time per cell")
	fs.DurationVar(&o.warmup, "warmup", 5*time.Second, "warm-up at the target rate before each cell (not measured)")
	fs.StringVar(&rates, "rates", "1000,4000", "HTTP/1.1 request rates (requests per second), comma-separated")
	fs.Float64Var(&o.grpcRate, "grpc-rate", 1000, "gRPC unary rate; 0 skips the gRPC scenario")
	fs.StringVar(&paths, "paths", "direct,mesh,nginx", "paths to measure, comma-separated: direct, mesh, nginx")
	fs.BoolVar(&quick, "quick", false, "smoke run: 2s per cell after a 1s warm-up (unless -duration/-warmup are given)")
	fs.IntVar(&o.passes, "passes", 1, "passes over all cells; even passes run the paths in reverse order")
	fs.IntVar(&o.conns, "conns", 16, "HTTP/1.1 connections (and gRPC calls in flight at most)")
	fs.IntVar(&o.proxyGOMAXPROCS, "proxy-gomaxprocs", 1, "GOMAXPROCS of each trellis-proxy")
	fs.StringVar(&o.binDir, "bin", "bin", "directory holding trellis-controller and trellis-proxy")
	fs.StringVar(&o.nginxBin, "nginx", "/usr/sbin/nginx", "nginx binary for the yardstick")
	fs.StringVar(&o.jsonOut, "o", "", "also write the results as JSON to this file")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configs, certificates, process logs)")
	fs.BoolVar(&o.verbose, "v", false, "debug logging")
	fs.StringVar(&o.proxyLogLevel, "proxy-log-level", "warn", "--log-level of the proxies")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			o.duration = 2 * time.Second
		}
		if !set["warmup"] {
			o.warmup = time.Second
		}
		o.quickExtra(set)
	}
	var err error
	if o.rates, err = parseRates(rates); err != nil {
		return options{}, fmt.Errorf("-rates: %w", err)
	}
	if o.paths, err = parsePaths(paths); err != nil {
		return options{}, fmt.Errorf("-paths: %w", err)
	}
	if o.kinds, err = parseKinds(kinds); err != nil {
		return options{}, fmt.Errorf("-scenarios: %w", err)
	}
	if err := o.checkExtra(); err != nil {
		return options{}, err
	}
	switch {
	case o.duration <= 0:
		return options{}, errors.New("-duration must be positive")
	case o.warmup < 0:
		return options{}, errors.New("-warmup must not be negative")
	case o.grpcRate < 0 || o.grpcRate > 1e6:
		return options{}, errors.New("-grpc-rate must be in [0, 1000000]")
	case o.passes < 1:
		return options{}, errors.New("-passes must be at least 1")
	case o.conns < 1 || o.conns > 10000:
		return options{}, errors.New("-conns must be in [1, 10000]")
	case o.proxyGOMAXPROCS < 1:
		return options{}, errors.New("-proxy-gomaxprocs must be at least 1")
	}
	return o, nil
}

// parseRates parses "1000,4000": positive request rates, at most 1e6.
func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, fmt.Errorf("rate %q: %w", f, err)
		}
		if !(r > 0 && r <= 1e6) {
			return nil, fmt.Errorf("rate %q: want a number in (0, 1000000]", f)
		}
		out = append(out, r)
	}
	return out, nil // empty: no HTTP scenarios (a gRPC-only run)
}

// parsePaths parses "direct,mesh,nginx", in canonical order, no duplicates.
func parsePaths(s string) ([]string, error) {
	want := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		switch f {
		case "":
		case pathDirect, pathMesh, pathNginx:
			want[f] = true
		default:
			return nil, fmt.Errorf("unknown path %q (want direct, mesh or nginx)", f)
		}
	}
	var out []string
	for _, p := range []string{pathDirect, pathMesh, pathNginx} {
		if want[p] {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no path to measure")
	}
	return out, nil
}

// extraFlags defines the flags of the big, opaque, churn and idle scenarios.
func (o *options) extraFlags(fs *flag.FlagSet) {
	fs.DurationVar(&o.extraDuration, "extra-duration", 8*time.Second, "measured time per cell of the big, opaque and churn scenarios")
	fs.DurationVar(&o.extraWarmup, "extra-warmup", 2*time.Second, "warm-up before each cell of the big, opaque and churn scenarios")
	fs.Float64Var(&o.bigRate, "big-rate", 20, "big and opaque: exchanges per second, each 1 MiB up and 1 MiB down")
	fs.IntVar(&o.bigConns, "big-conns", 4, "big and opaque: connections")
	fs.Float64Var(&o.churnRate, "churn-rate", 1000, "churn: requests per second, each on a new connection")
	fs.IntVar(&o.churnConns, "churn-conns", 500, "churn: workers, so at most this many connections open at once")
	fs.IntVar(&o.idleConns, "idle-conns", 10000, "idle: app connections held open through the front proxy")
}

// quickExtra shortens the new scenarios' cells for -quick, unless their
// flags were given.
func (o *options) quickExtra(set map[string]bool) {
	if !set["extra-duration"] {
		o.extraDuration = 2 * time.Second
	}
	if !set["extra-warmup"] {
		o.extraWarmup = time.Second
	}
}

// checkExtra validates the flags of the new scenarios.
func (o options) checkExtra() error {
	switch {
	case o.extraDuration <= 0 || o.extraWarmup < 0:
		return errors.New("-extra-duration must be positive and -extra-warmup not negative")
	case !(o.bigRate > 0 && o.bigRate <= 10000):
		return errors.New("-big-rate must be in (0, 10000]")
	case o.bigConns < 1 || o.bigConns > 1000:
		return errors.New("-big-conns must be in [1, 1000]")
	case !(o.churnRate > 0 && o.churnRate <= 100000):
		return errors.New("-churn-rate must be in (0, 100000]")
	case o.churnConns < 1 || o.churnConns > 10000:
		return errors.New("-churn-conns must be in [1, 10000]")
	case o.idleConns < 1 || o.idleConns > 100000:
		return errors.New("-idle-conns must be in [1, 100000]")
	}
	return nil
}

// parseKinds parses "http,churn": scenario kinds in allKinds order.
func parseKinds(s string) ([]string, error) {
	want := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		switch f = strings.TrimSpace(f); f {
		case "":
		case "all":
			for _, k := range allKinds {
				want[k] = true
			}
		case "churn":
			want[kindChurnHTTP], want[kindChurnTCP] = true, true
		default:
			if !slices.Contains(allKinds, f) {
				return nil, fmt.Errorf("unknown scenario %q (want %s, churn or all)", f, strings.Join(allKinds, ", "))
			}
			want[f] = true
		}
	}
	var out []string
	for _, k := range allKinds {
		if want[k] {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no scenario to run")
	}
	return out, nil
}
