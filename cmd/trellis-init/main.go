// Command trellis-init programs the nat rules that redirect a pod's TCP to
// its trellis-proxy (see docs/redirection.md). It runs as an init
// container with only NET_ADMIN and NET_RAW; with --check it verifies the
// rules instead, which in CNI mode needs no capability at all.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/internal/version"
	"github.com/trellis-mesh/trellis/redirect"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], redirect.Exec{}, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	cfg          redirect.Config
	ipv6         redirect.IPv6Mode
	dryRun       bool
	check        bool
	checkMethod  string
	probeTimeout time.Duration
	timeout      time.Duration
}

// parseFlags returns the options, or an exit code when run should stop
// (0 for -h and --version, 2 for bad flags).
func parseFlags(args []string, stdout, stderr io.Writer) (options, int, bool) {
	fs := flag.NewFlagSet("trellis-init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o                     options
		proxyUID              uint
		inPort, outPort       uint
		skipIn, skipOut, ipv6 string
		showVersion           bool
	)
	fs.UintVar(&proxyUID, "proxy-uid", redirect.DefaultProxyUID, "uid the proxy runs as; its traffic is not redirected")
	fs.UintVar(&inPort, "inbound-port", redirect.DefaultInboundPort, "proxy port that receives redirected inbound connections")
	fs.UintVar(&outPort, "outbound-port", redirect.DefaultOutboundPort, "proxy port that receives redirected outbound connections")
	fs.StringVar(&skipIn, "skip-inbound-ports", "", "comma list of inbound ports or ranges (a-b) that go straight to the app")
	fs.StringVar(&skipOut, "skip-outbound-ports", "", "comma list of outbound ports or ranges (a-b) that bypass the proxy")
	fs.StringVar(&ipv6, "ipv6", "auto", "program ip6tables too: auto (when its nat table works), true or false")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the iptables-restore input and change nothing")
	fs.BoolVar(&o.check, "check", false, "verify the rules are in place and change nothing (exit 1 if not)")
	fs.StringVar(&o.checkMethod, "check-method", "auto", "with --check: rules (list them; needs NET_ADMIN), probe (a redirected test connection; needs nothing, run before the proxy), or auto (rules if permitted, else probe)")
	fs.DurationVar(&o.probeTimeout, "probe-timeout", 3*time.Second, "with --check: how long the probe connection may take")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "overall time limit")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, 0, true
		}
		return o, 2, true
	}
	if showVersion {
		fmt.Fprintln(stdout, "trellis-init", version.String())
		return o, 0, true
	}
	bad := func(format string, a ...any) (options, int, bool) {
		fmt.Fprintf(stderr, "trellis-init: "+format+"\n", a...)
		return o, 2, true
	}
	if fs.NArg() > 0 {
		return bad("unexpected arguments: %q", fs.Args())
	}
	if proxyUID > 1<<32-1 {
		return bad("--proxy-uid %d is out of range", proxyUID)
	}
	if inPort < 1 || inPort > 65535 || outPort < 1 || outPort > 65535 {
		return bad("--inbound-port and --outbound-port must be 1-65535")
	}
	o.cfg = redirect.Config{ProxyUID: uint32(proxyUID), InboundPort: uint16(inPort), OutboundPort: uint16(outPort)}
	var err error
	if o.cfg.SkipInbound, err = redirect.ParsePorts(skipIn); err != nil {
		return bad("--skip-inbound-ports: %v", err)
	}
	if o.cfg.SkipOutbound, err = redirect.ParsePorts(skipOut); err != nil {
		return bad("--skip-outbound-ports: %v", err)
	}
	if o.ipv6, err = redirect.ParseIPv6Mode(ipv6); err != nil {
		return bad("--ipv6: %v", err)
	}
	switch o.checkMethod {
	case "auto", "rules", "probe":
	default:
		return bad("--check-method %q: want auto, rules or probe", o.checkMethod)
	}
	if o.dryRun && o.check {
		return bad("--dry-run and --check exclude each other")
	}
	if err := o.cfg.Validate(); err != nil {
		return bad("%v", err)
	}
	return o, 0, false
}

func run(ctx context.Context, args []string, r redirect.Runner, stdout, stderr io.Writer) int {
	o, code, stop := parseFlags(args, stdout, stderr)
	if stop {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	var err error
	switch {
	case o.dryRun:
		fams := []redirect.Family{redirect.IPv4}
		if o.ipv6 != redirect.IPv6Off {
			fams = append(fams, redirect.IPv6)
		}
		for _, f := range fams {
			// Rendered for a fresh namespace: the real run adds each jump
			// only if it is missing.
			fmt.Fprint(stdout, redirect.Render(o.cfg, f, nil))
		}
		return 0
	case o.check:
		err = check(ctx, r, o, stdout)
	default:
		err = apply(ctx, r, o, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "trellis-init: %v\n", err)
		return 1
	}
	return 0
}

func apply(ctx context.Context, r redirect.Runner, o options, stdout io.Writer) error {
	fams, note, err := redirect.Families(ctx, r, o.ipv6)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "trellis-init %s: redirecting TCP: inbound -> :%d (skipping %s), outbound -> :%d (skipping uid %d, loopback, ports %s)\n",
		version.Version, o.cfg.InboundPort, orNone(redirect.FormatPorts(o.cfg.SkipInbound)),
		o.cfg.OutboundPort, o.cfg.ProxyUID, orNone(redirect.FormatPorts(o.cfg.SkipOutbound)))
	if note != "" {
		fmt.Fprintln(stdout, note)
	}
	for _, f := range fams {
		res, err := redirect.Apply(ctx, r, o.cfg, f)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s; verified\n", res)
	}
	return nil
}

func check(ctx context.Context, r redirect.Runner, o options, stdout io.Writer) error {
	method := o.checkMethod
	if method != "probe" {
		fams, note, err := redirect.Families(ctx, r, o.ipv6)
		if err == nil {
			if note != "" {
				fmt.Fprintln(stdout, note)
			}
			for _, f := range fams {
				if _, err = redirect.Verify(ctx, r, o.cfg, f); err != nil {
					break
				}
				fmt.Fprintf(stdout, "%s: rules in place\n", f)
			}
		}
		switch {
		case err == nil:
			return nil
		case method == "rules" || errors.Is(err, redirect.ErrNotInstalled):
			return err
		}
		// Listing needs NET_ADMIN, which a CNI-mode pod does not have.
		fmt.Fprintf(stdout, "cannot list rules (%v); probing instead\n", err)
	}
	if err := redirect.Probe(ctx, o.cfg, redirect.IPv4, o.probeTimeout); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ipv4: outbound redirection proven by probe")
	if o.ipv6 == redirect.IPv6Off {
		return nil
	}
	err := redirect.Probe(ctx, o.cfg, redirect.IPv6, o.probeTimeout)
	if err != nil && o.ipv6 == redirect.IPv6Auto && redirect.NoIPv6(err) {
		fmt.Fprintln(stdout, "ipv6: skipped, the pod has no IPv6 route")
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ipv6: outbound redirection proven by probe")
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
