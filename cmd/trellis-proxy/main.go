// Command trellis-proxy is the Trellis data plane: it runs beside a workload
// and carries its traffic over mutual TLS. See docs/proxy.md.
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

	"google.golang.org/grpc/grpclog"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/internal/version"
	"github.com/trellis-mesh/trellis/proxy"
)

const usageText = `trellis-proxy: the Trellis service mesh data plane.

Every flag can also be set with the environment variable TRELLIS_PROXY_<FLAG>
(upper case, dashes as underscores); flags win over the environment.

Examples:
  # Explicit (local) mode: the app sends HTTP to 127.0.0.1:4140 with the
  # service as Host; mesh peers reach the app at 127.0.0.1:9101 through :4143.
  trellis-proxy --controller-addr 127.0.0.1:8086 \
    --trust-anchors state/anchor.crt --token-file books.token \
    --identity spiffe://cluster.local/ns/demo/sa/books \
    --inbound-addr 127.0.0.1:4243 --admin-addr 127.0.0.1:4291 --app-addr 127.0.0.1:9101
  curl -H 'Host: authors.demo' http://127.0.0.1:4140/authors

  # The same from the environment:
  TRELLIS_PROXY_CONTROLLER_ADDR=127.0.0.1:8086 TRELLIS_PROXY_IDENTITY=... trellis-proxy

  # Keep the trust bundle learned from the controller across restarts: a
  # restart after an anchor rotation starts from it, not from the bootstrap
  # file that only holds the old anchor (the injector sets this on Kubernetes).
  trellis-proxy ... --trust-anchors state/anchor.crt --trust-anchors-cache /var/run/trellis/state/trust-anchors.pem

  # An external workload (a VM) joining a cluster's mesh: the token file holds
  # a single-use token from "trellis external-workload token vm-books -n shop";
  # a restarted proxy needs a new one.
  trellis-proxy --external-workload shop/vm-books --token-file /etc/trellis/bootstrap-token \
    --identity spiffe://cluster.local/ns/shop/sa/books --controller-addr 10.0.0.5:8086 \
    --trust-anchors /etc/trellis/trust-anchors.pem --trust-anchors-cache /var/lib/trellis/trust-anchors.pem ...

  # A multicluster gateway (Kubernetes: trellis install --set multicluster.gateway.enabled=true).
  trellis-proxy --mode transparent --gateway-addr 0.0.0.0:4180 --inbound-addr 127.0.0.1:4143 ...

Flags:
`

// explicitlySet reports whether the flag was given, on the command line
// or in its TRELLIS_PROXY_* environment variable.
func explicitlySet(fs *flag.FlagSet, name string, lookup func(string) (string, bool)) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	_, env := lookup(envName(name))
	return set || env
}

// envName is the environment variable of a flag.
func envName(flagName string) string {
	return "TRELLIS_PROXY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("trellis-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg                   proxy.Config
		opaquePorts, logLevel string
		acceptTrustDomains    string
		appPorts              string
		probePorts            string
		showVersion           bool
		rc                    runtimeConfig
	)
	fs.StringVar(&cfg.OutboundAddr, "outbound-addr", "127.0.0.1:4140", "outbound listener (the app's traffic)")
	fs.StringVar(&cfg.InboundAddr, "inbound-addr", "0.0.0.0:4143", "inbound listener (mesh peers and plain callers)")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", "0.0.0.0:4191", "admin listener: /metrics, /ready, /live, /shutdown")
	fs.StringVar(&cfg.TapAddr, "tap-addr", ":4190", "Tap.Observe listener (gRPC over mesh mTLS; only the controller's identity may call it): live request metadata for trellis tap (empty: disabled)")
	fs.StringVar(&cfg.Mode, "mode", "explicit", "transparent (SO_ORIGINAL_DST) or explicit (destination from Host/:authority)")
	fs.StringVar(&cfg.AppAddr, "app-addr", "127.0.0.1:8080", "where inbound traffic goes when no target port is known")
	fs.StringVar(&cfg.ControllerAddr, "controller-addr", "", "host:port of the controller's gRPC server (required)")
	fs.StringVar(&cfg.ControllerIdentity, "controller-identity", "", "identity the controller must prove (default spiffe://<td>/ns/trellis-system/sa/trellis-controller)")
	fs.StringVar(&cfg.TrustAnchors, "trust-anchors", "", "PEM file of the bootstrap trust anchors (required)")
	fs.StringVar(&cfg.TrustAnchorsCache, "trust-anchors-cache", "", "file where the trust bundle learned from the controller is kept (written atomically, 0644); at start it is used instead of --trust-anchors when it holds a valid bundle, so a restart after an anchor rotation still reaches the controller (empty: no cache)")
	fs.StringVar(&cfg.Identity, "identity", "", "this workload's SPIFFE ID (required)")
	fs.StringVar(&acceptTrustDomains, "accept-trust-domains", "", "comma-separated trust domains, besides this workload's, whose mesh peers the inbound side accepts: other clusters under the same trust anchor (docs/multicluster.md); authorization still applies, and cluster-authenticated means this workload's domain only (empty: only this workload's)")
	fs.StringVar(&cfg.TokenFile, "token-file", "", "file holding the credential sent with Certify (required); with --external-workload, a single-use bootstrap token")
	fs.StringVar(&cfg.ExternalWorkload, "external-workload", "", "NAMESPACE/NAME of the ExternalWorkload this proxy runs for (a VM or bare-metal host, no Kubernetes credentials): the first certificate spends the bootstrap token of --token-file (trellis external-workload token NAME -n NAMESPACE), renewals present the current certificate. The key lives only in this process: a restarted proxy, or one whose certificate expired, needs a new token in --token-file (empty: not an external workload)")
	fs.StringVar(&cfg.Workload, "workload", "", "workload name, for logs")
	fs.StringVar(&cfg.Zone, "zone", "", "this workload's topology zone: outbound balancers prefer endpoints in it while they are healthy (empty: learnt from the Destination service's answer for the proxy's own address: --app-ip and the inbound port, the zone of the pod's node; in explicit mode --inbound-addr, the store file's zone of the workload whose proxyAddr it is)")
	fs.StringVar(&cfg.PodName, "pod-name", "", "this pod's name (Kubernetes; the injector sets it), sent with policy watches so Servers apply to exactly the pods they select")
	fs.DurationVar(&cfg.DetectTimeout, "detect-timeout", 10*time.Second, "protocol detection timeout; on timeout the stream is opaque")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", 0, "default whole-request timeout (0: none)")
	fs.DurationVar(&cfg.HeaderTimeout, "http1-header-timeout", 30*time.Second, "time to read an HTTP/1 request head once its first byte arrived; answered with 408")
	fs.StringVar(&opaquePorts, "opaque-ports", "25,587,3306,4222,5432,6379,11211,27017", "ports never detected (server-speaks-first protocols)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", 10*time.Second, "drain time on SIGTERM or POST /shutdown")
	fs.StringVar(&cfg.AppIP, "app-ip", "", "transparent mode: the address inbound traffic is forwarded to (the pod IP; the injector sets it from status.podIP), so processes listening only on loopback are not exposed to the mesh (empty: 127.0.0.1)")
	fs.StringVar(&probePorts, "tcp-probe-ports", "", "app ports GET /tcp-probe/PORT on the admin address checks by connecting to the app (the injector turns the app's tcpSocket probes into these: a kubelet connection to a redirected port reaches the proxy, which accepts it whether or not the app listens)")
	fs.StringVar(&appPorts, "app-ports", "", "explicit mode: further ports of --app-addr's host that mesh peers may name as target port (--app-addr's own port always may; any other is refused)")
	fs.StringVar(&cfg.DefaultInboundPolicy, "default-inbound-policy", "all-unauthenticated", "what applies to a port no Server selects, and to a Server that leaves it unset (with --external-workload the default is all-authenticated): deny, audit (allow, count would-be denials), all-authenticated (only mesh mTLS peers), cluster-authenticated (only mesh peers of this trust domain) or all-unauthenticated; a refused caller gets 403, gRPC PERMISSION_DENIED or a closed connection")
	fs.StringVar(&cfg.TraceCollector, "trace-collector", "", "host:port of an OTLP/gRPC collector: each request's span goes there, and traceparent is propagated (empty: tracing off, the proxy reads and writes no trace header)")
	fs.StringVar(&cfg.TraceCollectorCA, "trace-collector-ca", "", "PEM file of CA certificates: reach --trace-collector over TLS, verifying its certificate for its host (empty: plain text)")
	fs.Float64Var(&cfg.TraceSampleRatio, "trace-sample-ratio", 1, "fraction of new traces sampled, 0 to 1; a caller's decision (traceparent's sampled flag, B3's) is always honoured")
	fs.IntVar(&rc.maxProcs, "gomaxprocs", 1, "Go scheduler threads (GOMAXPROCS); 0: one per CPU. The GOMAXPROCS environment variable wins")
	fs.StringVar(&rc.memoryLimit, "memory-limit", "auto", "soft memory limit of the Go runtime, a safety net below the container's limit: auto (90 % of the cgroup memory limit, none without one), off (or 0), or a size such as 48MiB. GOMEMLIMIT wins")
	fs.IntVar(&rc.gcPercent, "gc-percent", 0, "GC target: heap growth in percent between collections (0: Go's default of 100; -1: off). GOGC wins")
	fs.StringVar(&cfg.GatewayAddr, "gateway-addr", "", "make this proxy a multicluster gateway listening here (e.g. 0.0.0.0:4180): it passes mesh TLS from other clusters, routed by its server name <port>.<svc>.<ns>.svc.<cluster domain> and never terminated, to the meshed endpoints of services exported with trellis.io/export=true; such a proxy fronts no app (docs/multicluster.md; empty: not a gateway)")
	fs.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "this cluster's DNS domain: a TLS server name <port>.<svc>.<ns>.svc.<domain> is a mesh client come through a multicluster gateway")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	if err := applyEnv(fs, os.LookupEnv); err != nil {
		fmt.Fprintln(stderr, "trellis-proxy:", err)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if cfg.ExternalWorkload != "" && !explicitlySet(fs, "default-inbound-policy", os.LookupEnv) {
		// A host, unlike a pod, is reachable by the whole network: only
		// mesh peers, unless the operator says otherwise.
		cfg.DefaultInboundPolicy = "all-authenticated"
	}
	if showVersion {
		fmt.Fprintln(stderr, "trellis-proxy", version.String())
		return 0
	}
	var err error
	if cfg.OpaquePorts, err = proxy.ParsePorts(opaquePorts); err != nil {
		fmt.Fprintln(stderr, "trellis-proxy: --opaque-ports:", err)
		return 2
	}
	if acceptTrustDomains != "" {
		for _, td := range strings.Split(acceptTrustDomains, ",") {
			cfg.AcceptTrustDomains = append(cfg.AcceptTrustDomains, strings.TrimSpace(td))
		}
	}
	if cfg.TCPProbePorts, err = proxy.ParsePorts(probePorts); err != nil {
		fmt.Fprintln(stderr, "trellis-proxy: --tcp-probe-ports:", err)
		return 2
	}
	if cfg.AppPorts, err = proxy.ParsePorts(appPorts); err != nil {
		fmt.Fprintln(stderr, "trellis-proxy: --app-ports:", err)
		return 2
	}
	if err := rc.apply(os.LookupEnv); err != nil {
		fmt.Fprintln(stderr, "trellis-proxy:", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintln(stderr, "trellis-proxy: --log-level:", err)
		return 2
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// Library logs go through slog, rate-limited: a misbehaving peer must
	// not be able to flood the output past --log-level (docs/proxy.md).
	cfg.CaptureStdLog = true
	grpclog.SetLoggerV2(ratelog.GRPCLogger{L: ratelog.New(cfg.Logger.With("component", "grpc"), 0)})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := proxy.Run(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, "trellis-proxy:", err)
		return 1
	}
	return 0
}

// applyEnv sets each flag from TRELLIS_PROXY_<NAME> when present; flags
// parsed afterwards override it.
func applyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		if v, ok := lookup(name); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}
