// Package dashboardcmd serves the web dashboard (viz/dashboard) from the
// trellis process: `trellis dashboard` (Prometheus and the aggregated tap
// API, with the user's own credentials) and `trellis demo --dashboard`.
package dashboardcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"time"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/viz/dashboard"
)

// DefaultPort is where the dashboard listens unless --port says otherwise.
const DefaultPort = 50750

// ServeOptions are the flags shared by `trellis dashboard` and `trellis
// demo --dashboard`.
type ServeOptions struct {
	Address   string
	Port      int
	NoBrowser bool
	// Output: text prints a line for people, json/yaml a {url} document.
	Output output.Format
	Stdout io.Writer
	Stderr io.Writer
	Logger *slog.Logger
	// Open opens url in a browser (default: xdg-open or open).
	Open func(url string) error
	// Ready, when set, gets the URL once the dashboard listens.
	Ready func(url string)
}

// Served is what the command prints.
type Served struct {
	URL string `json:"url"`
}

// Serve serves the dashboard on o.Address:o.Port until ctx ends.
func Serve(ctx context.Context, o ServeOptions, cfg dashboard.Config) error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("--port %d: want 0 to 65535", o.Port)
	}
	ip := net.ParseIP(o.Address)
	if ip == nil {
		return fmt.Errorf("--address %q: want an IP address, e.g. 127.0.0.1", o.Address)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(o.Address, strconv.Itoa(o.Port)))
	if err != nil {
		return fmt.Errorf("dashboard: listen on %s:%d: %w (choose another with --port)", o.Address, o.Port, err)
	}
	addr := ln.Addr().String()
	cfg.AllowedHosts = dashboard.AllowedHosts(addr)
	cfg.Logger = o.Logger
	h, err := dashboard.New(cfg)
	if err != nil {
		_ = ln.Close()
		return err
	}
	if !ip.IsLoopback() {
		fmt.Fprintf(o.Stderr, "warning: the dashboard has no login: anyone who can reach %s sees what your credentials allow, taps included\n", addr)
	}
	url := "http://" + addr + "/"
	if err := output.Write(o.Stdout, o.Output, Served{URL: url}, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "Trellis dashboard: %s (Ctrl-C to stop)\n", url)
		return err
	}); err != nil {
		_ = ln.Close()
		return err
	}
	if !o.NoBrowser {
		open := o.Open
		if open == nil {
			open = OpenBrowser
		}
		if err := open(url); err != nil {
			fmt.Fprintf(o.Stderr, "could not open a browser (%v): open %s yourself\n", err, url)
		}
	}
	if o.Ready != nil {
		o.Ready(url)
	}
	return serve(ctx, ln, h)
}

func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: the tap stream is long-lived; it bounds each
		// write itself.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("dashboard: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// OpenBrowser opens url with the desktop's opener (xdg-open, or open on
// macOS) without waiting for the browser.
func OpenBrowser(url string) error {
	opener := "xdg-open"
	if goruntime.GOOS == "darwin" {
		opener = "open"
	}
	cmd := exec.Command(opener, url)
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }() // reap it
	return nil
}
