// Command trellis-demo-app is one workload of the Trellis demo: web, books,
// authors, loadgen or echo (see docs/demo-app.md).
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
	"strings"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run returns the exit code: 0 on a clean stop, 2 for bad flags, 1 for
// any other error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("trellis-demo-app", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg app.Config
	var logLevel string
	fs.StringVar(&cfg.Role, "role", "", "workload role: "+strings.Join(app.Roles(), ", ")+" (required)")
	fs.StringVar(&cfg.Listen, "listen", "", "host:port to serve on (required except for loadgen)")
	fs.StringVar(&cfg.Proxy, "proxy", "", "outbound address of the local trellis-proxy (empty: call services directly)")
	fs.Float64Var(&cfg.FailRate, "fail-rate", 0, "share of requests (0.0..1.0) answered with HTTP 500 / gRPC UNAVAILABLE")
	fs.DurationVar(&cfg.FailFor, "fail-for", 0, "fail only during this long after the first request received, then recover (0: for ever)")
	fs.DurationVar(&cfg.SlowStartFor, "slow-start-for", 0, "echo: be slow during this long after the first request received (its readiness probe), /healthz excepted")
	fs.DurationVar(&cfg.SlowStartDelay, "slow-start-delay", 200*time.Millisecond, "echo: the delay of each request while slow (--slow-start-for)")
	fs.IntVar(&cfg.SlowStartCapacity, "slow-start-capacity", 0, "echo: while slow (--slow-start-for), serve at most this many requests at once and queue the rest, as a cold app's small pool does (0: no limit)")
	fs.StringVar(&cfg.Name, "name", "", "name reported in responses (default: the role)")
	fs.StringVar(&cfg.Version, "version", "v1", "version reported by books")
	fs.BoolVar(&cfg.AccessLog, "access-log", false, "echo: log every request received (method, URI, protocol, remote address, User-Agent)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.Books, "books", "books.demo:80", "web: authority of the books service")
	fs.StringVar(&cfg.Authors, "authors", "authors.demo:80", "books: authority of the authors service")
	fs.StringVar(&cfg.Load.Target, "target", "web.demo:80", "loadgen: authority to send requests to")
	fs.Float64Var(&cfg.Load.RPS, "rps", 20, "loadgen: requests per second")
	fs.StringVar(&cfg.Load.Path, "path", "/books/", "loadgen: request path; a trailing / gets an id 1..10 appended")
	fs.DurationVar(&cfg.Load.Duration, "duration", 0, "loadgen: how long to run (0: until SIGTERM)")
	fs.IntVar(&cfg.Load.MaxInFlight, "max-in-flight", 64, "loadgen: concurrent requests; requests due beyond it are dropped")
	fs.DurationVar(&cfg.Load.Timeout, "timeout", 10*time.Second, "loadgen: per-request timeout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "trellis-demo-app: unexpected arguments: %q\n", fs.Args())
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(stderr, "trellis-demo-app: --log-level %q: must be debug, info, warn or error\n", logLevel)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "trellis-demo-app: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 2
	}
	cfg.Stdout = stdout
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := app.Run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "trellis-demo-app: %v\n", err)
		return 1
	}
	return 0
}
