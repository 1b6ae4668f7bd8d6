// Command cluster brings a real single-node Kubernetes up and down on this
// machine for Trellis's end-to-end tests: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet and kube-proxy from one
// multi-call binary built from the Go module proxy; containerd, runc, the
// CNI plugins and iptables from Debian; CoreDNS built with go install.
//
//	cluster up       start (idempotent) and print the kubeconfig path
//	cluster down     stop and remove everything it created
//	cluster status   say whether it is up; exit 1 if not
//	cluster images   build the Trellis image tarballs (and import them if up)
//	cluster conformance-images  build the Gateway API conformance suite's echo image and import it
//	cluster smoke    run a Deployment + Service and prove it answers
//	cluster smoke-pair  clusters a and b side by side, pods of each calling
//	                 the other's, both down, the machine as it was (pair.go)
//	cluster build    only build/cache the binaries
//
// Everything lives under $TRELLIS_CLUSTER_DIR (default /var/tmp/trellis-cluster):
// cache/ survives `down` so a warm `up` does not rebuild; run/ does not.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usageText = `usage: cluster [flags] up|down|status|images|extras|conformance-images|smoke|smoke-pair|build

Environment:
  TRELLIS_CLUSTER       which cluster: a (default) in the host's namespaces, or b in
                        namespaces of its own beside it (profile.go, isolate.go)
  TRELLIS_CLUSTER_DIR   harness directory (default /var/tmp/trellis-cluster, or
                        /var/tmp/trellis-cluster-b for b)
  TRELLIS_CLUSTER_CACHE the build cache (default the harness directory's cache/;
                        cluster.mk points b's at a's, which the clusters share)
  TRELLIS_IMAGE_REPO    registry part of the Trellis images (default trellis, as the chart)
  TRELLIS_IMAGE_TAG     tag of the Trellis images (default dev; cluster.mk passes the build version)
`

func main() {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usageText); fs.PrintDefaults() }
	bin := fs.String("bin", "", "directory of the Trellis static binaries (default: <repo>/bin)")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	closeInheritedOnExec()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	h, err := newHarness(log, *bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
	switch fs.Arg(0) {
	case "up":
		if h.inside() {
			err = h.up(ctx)
		} else {
			err = h.upIsolated(ctx)
		}
	case "down":
		if h.inside() {
			err = h.down(ctx)
		} else {
			err = h.downIsolated(ctx)
		}
	case "ns-init": // isolate.go: once, inside new namespaces
		if !h.p.isolated || !h.inside() {
			err = errors.New("ns-init runs only inside an isolated cluster's new namespaces")
		} else {
			err = h.nsInit(ctx)
		}
	case "status":
		err = h.status(ctx)
	case "images":
		err = h.images(ctx)
	case "extras":
		err = h.extras(ctx)
	case "conformance-images":
		err = h.conformanceImages(ctx)
	case "smoke":
		err = h.smoke(ctx)
	case "smoke-pair":
		err = h.smokePair(ctx)
	case "build":
		_, err = h.buildAll(ctx)
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

// harness holds the fixed facts of one machine and harness directory.
type harness struct {
	log       *slog.Logger
	p         profile
	dir       string // TRELLIS_CLUSTER_DIR
	cache     string // TRELLIS_CLUSTER_CACHE
	modDir    string // this Go module (test/cluster/k8s)
	repoBin   string // the product's bin/ directory
	imageRepo string
	imageTag  string
}

func newHarness(log *slog.Logger, bin string) (*harness, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("must run as root (it runs containerd, the kubelet and iptables)")
	}
	modDir, err := findModule()
	if err != nil {
		return nil, err
	}
	if bin == "" {
		bin = filepath.Join(modDir, "..", "..", "..", "bin")
	}
	bin, err = filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	p, err := profileFor(os.Getenv("TRELLIS_CLUSTER"))
	if err != nil {
		return nil, err
	}
	dir := envOr("TRELLIS_CLUSTER_DIR", defaultDir(p.name))
	if !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
		return nil, fmt.Errorf("TRELLIS_CLUSTER_DIR=%q: must be an absolute path other than /", dir)
	}
	cache := envOr("TRELLIS_CLUSTER_CACHE", filepath.Join(dir, "cache"))
	if !filepath.IsAbs(cache) {
		return nil, fmt.Errorf("TRELLIS_CLUSTER_CACHE=%q: must be an absolute path", cache)
	}
	return &harness{
		log:       loggerFor(log, p),
		p:         p,
		dir:       filepath.Clean(dir),
		cache:     filepath.Clean(cache),
		modDir:    modDir,
		repoBin:   bin,
		imageRepo: envOr("TRELLIS_IMAGE_REPO", "trellis"),
		imageTag:  envOr("TRELLIS_IMAGE_TAG", "dev"),
	}, nil
}

// loggerFor names the cluster in every line, but cluster a's (the one
// most runs use, whose lines are as they always were).
func loggerFor(log *slog.Logger, p profile) *slog.Logger {
	if p.name == "a" {
		return log
	}
	return log.With("cluster", p.name)
}

// findModule locates test/cluster/k8s: the working directory or a parent.
func findModule() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/trellis-mesh/trellis/test/cluster/k8s\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("run me from test/cluster/k8s (no go.mod of the cluster module above %s)", wd)
		}
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (h *harness) cacheDir(parts ...string) string {
	return filepath.Join(append([]string{h.cache}, parts...)...)
}

func (h *harness) runDir(parts ...string) string {
	return filepath.Join(append([]string{h.dir, "run"}, parts...)...)
}

// run executes a command and returns its combined output, wrapped in the
// error when it fails.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(lastLines(string(out), 20)))
	}
	return string(out), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// poll calls f every interval until it returns true, an error, or timeout.
func poll(ctx context.Context, timeout, interval time.Duration, what string, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := f()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%s: not ready after %s: %w", what, timeout, last)
			}
			return fmt.Errorf("%s: not ready after %s", what, timeout)
		case <-time.After(interval):
		}
	}
}

func execCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

// closeInheritedOnExec marks every file descriptor above stderr that this
// process inherited close-on-exec. The cluster's daemons outlive this
// process; without it they would keep whatever the caller had open, such
// as the lock of `flock LOCK make e2e`, held until the cluster stops.
func closeInheritedOnExec() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}
