// Command trellis-cni is a chained CNI plugin that programs a meshed pod's
// traffic redirection from the host (docs/redirection.md). Run by a
// container runtime (CNI_COMMAND set) it is the plugin; `trellis-cni
// install` and `uninstall` put it into or take it out of a node's CNI
// setup, from the installer DaemonSet; `trellis-cni status` (its probe)
// exits 0 only when the plugin is in place.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/trellis-mesh/trellis/cni"
	"github.com/trellis-mesh/trellis/cni/install"
	"github.com/trellis-mesh/trellis/internal/version"
	"github.com/trellis-mesh/trellis/redirect"
)

func main() {
	if os.Getenv("CNI_COMMAND") != "" || len(os.Args) < 2 {
		// skel prints results or CNI error JSON on stdout and exits.
		skel.PluginMainFuncs(cni.New(os.Stdout).Funcs(), cni.SupportedVersions,
			"trellis-cni "+version.Version+": Trellis traffic redirection")
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	switch args[0] {
	case "version", "--version":
		fmt.Fprintln(stdout, "trellis-cni", version.String())
		return 0
	case "install", "uninstall", "status":
	default:
		fmt.Fprintf(stderr, "trellis-cni: unknown command %q (want install, uninstall, status or version; run by a CNI runtime it needs CNI_COMMAND)\n", args[0])
		return 2
	}
	cmd := args[0]
	fs := flag.NewFlagSet("trellis-cni "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		binDir, confDir, skipIn, skipOut, ipv6 string
		proxyUID, inPort, outPort              uint
		watch, cleanup                         bool
		settle                                 time.Duration
	)
	fs.StringVar(&binDir, "cni-bin-dir", "/host/opt/cni/bin", "host CNI bin dir (mounted)")
	fs.StringVar(&confDir, "cni-conf-dir", "/host/etc/cni/net.d", "host CNI conf dir (mounted)")
	fs.UintVar(&proxyUID, "proxy-uid", redirect.DefaultProxyUID, "uid the proxy runs as")
	fs.UintVar(&inPort, "inbound-port", redirect.DefaultInboundPort, "proxy inbound port")
	fs.UintVar(&outPort, "outbound-port", redirect.DefaultOutboundPort, "proxy outbound port")
	fs.StringVar(&skipIn, "skip-inbound-ports", "4143,4190,4191", "inbound ports never redirected, in every pod (pods add theirs by annotation)")
	fs.StringVar(&skipOut, "skip-outbound-ports", "", "outbound ports never redirected, in every pod")
	fs.StringVar(&ipv6, "ipv6", "auto", "program ip6tables too: auto, true or false")
	fs.BoolVar(&watch, "watch", false, "install: keep running and reinstall whenever the conf dir changes")
	fs.BoolVar(&cleanup, "cleanup-on-exit", false, "install --watch: uninstall when stopped")
	fs.DurationVar(&settle, "settle", 500*time.Millisecond, "install --watch: wait this long after a change before reinstalling")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	// Validate the settings the way the plugin will parse them, so a bad
	// flag fails the installer, not every pod.
	if proxyUID > 1<<32-1 || inPort < 1 || inPort > 65535 || outPort < 1 || outPort > 65535 {
		fmt.Fprintln(stderr, "trellis-cni: --proxy-uid or a port is out of range")
		return 2
	}
	entry := install.DefaultEntry(uint32(proxyUID), uint16(inPort), uint16(outPort), skipIn, skipOut, ipv6)
	if _, err := cni.ParseConfig(mustJSON(entry)); err != nil {
		fmt.Fprintf(stderr, "trellis-cni: %v\n", err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "trellis-cni: finding own binary: %v\n", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	in := &install.Installer{BinSrc: self, BinDir: binDir, ConfDir: confDir, Entry: entry, Log: log}
	switch {
	case cmd == "status":
		// The installer's probe: exit 0 only when the plugin is in place.
		if err = in.Check(); err == nil {
			fmt.Fprintln(stdout, "trellis-cni is installed:", binDir, confDir)
		}
	case cmd == "uninstall":
		err = in.Uninstall()
	case watch:
		err = in.Watch(ctx, settle)
		if err == nil && cleanup {
			err = in.Uninstall()
		}
	default:
		err = in.Install()
	}
	if err != nil {
		fmt.Fprintf(stderr, "trellis-cni %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func mustJSON(v map[string]any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // a map of plain values always marshals
	}
	return b
}
