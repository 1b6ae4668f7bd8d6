// Command ctrlscale measures the Trellis control plane at scale: the real
// trellis-controller (Kubernetes mode) against a real kube-apiserver and
// etcd holding S Services x E endpoints, P simulated proxies holding
// Destination.Get and Policy.WatchInbound streams over mTLS, and
// EndpointSlices changing at a steady rate. It reports the time from each
// slice write to the update on every interested stream, the controller's
// CPU and memory, and the same again with one client that never reads.
// See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type config struct {
	K8sBin        string
	Bin           string
	Services      int
	Endpoints     int
	Proxies       int
	Authorities   int
	Rate          float64
	Duration      time.Duration // per phase
	Settle        time.Duration
	Workers       int
	HotEvery      int
	Certify       bool
	Profile       string
	ControllerEnv []string
	Keep          bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.K8sBin, "k8s-bin", os.Getenv("TRELLIS_K8S_BIN"), "k8s-all multi-call binary (etcd, kube-apiserver); default $TRELLIS_K8S_BIN")
	flag.StringVar(&cfg.Bin, "bin", "", "trellis-controller binary (default: go build ./cmd/trellis-controller)")
	flag.IntVar(&cfg.Services, "services", 1000, "Services without selectors")
	flag.IntVar(&cfg.Endpoints, "endpoints", 10, "endpoints (pods) per Service")
	flag.IntVar(&cfg.Proxies, "proxies", 1000, "simulated proxies (one mTLS connection each)")
	flag.IntVar(&cfg.Authorities, "authorities", 3, "Destination.Get streams per proxy")
	flag.Float64Var(&cfg.Rate, "rate", 50, "EndpointSlice writes per second")
	flag.DurationVar(&cfg.Duration, "duration", 30*time.Second, "churn time of each phase (without, then with the stalled client)")
	flag.DurationVar(&cfg.Settle, "settle", 15*time.Second, "longest wait after a phase for the last updates to arrive")
	flag.IntVar(&cfg.HotEvery, "hot-every", 2, "every Nth write goes to Service 0 (a large deployment in a rolling restart, watched by the stalled client too); 0: all round robin")
	flag.BoolVar(&cfg.Certify, "certify", true, "end with a Certify storm: every proxy starting at once with its own ServiceAccount token")
	flag.StringVar(&cfg.Profile, "profile", "", "build the controller with net/http/pprof overlaid (go build -overlay) and save its heap profile (heap.pprof) into this directory at the end of the churn")
	flag.IntVar(&cfg.Workers, "workers", 32, "API writes in flight while populating")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the temporary directory (controller log)")
	flag.Func("controller-env", "NAME=VALUE added to the controller's environment, e.g. GOMEMLIMIT=100MiB (repeatable)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want NAME=VALUE, got %q", v)
		}
		cfg.ControllerEnv = append(cfg.ControllerEnv, v)
		return nil
	})
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	res, err := run(ctx, log, cfg)
	if err != nil {
		log.Error("ctrlscale failed", "err", err)
		os.Exit(1)
	}
	res.print(os.Stdout, cfg)
}
