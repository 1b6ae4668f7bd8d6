// Package app runs one demo workload (a role) from a Config: the thin
// trellis-demo-app main parses flags into a Config and calls Run.
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/echo"
	"github.com/trellis-mesh/trellis/demoapp/faults"
	"github.com/trellis-mesh/trellis/demoapp/httpserve"
	"github.com/trellis-mesh/trellis/demoapp/loadgen"
	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"github.com/trellis-mesh/trellis/demoapp/services"
	"github.com/trellis-mesh/trellis/demoapp/upstream"
	"google.golang.org/grpc"
)

// Roles returns the valid values of Config.Role.
func Roles() []string { return []string{"web", "books", "authors", "loadgen", "echo"} }

// Config is everything a demo process needs.
type Config struct {
	Role   string
	Listen string // host:port to serve on (optional for loadgen)
	// Listener, when set, is served instead of opening Listen (tests and
	// in-process callers that picked a port already). Run closes it.
	Listener net.Listener
	Proxy    string  // the local proxy's outbound address; empty: direct
	FailRate float64 // share of requests failed on purpose
	// FailFor limits FailRate to the first FailFor after the first request
	// (0: for ever): a replica that recovers by itself.
	FailFor time.Duration
	// SlowStartFor and SlowStartDelay (echo): every request but /healthz
	// waits SlowStartDelay during the first SlowStartFor after the first
	// request, as an app warming its caches.
	SlowStartFor, SlowStartDelay time.Duration
	// SlowStartCapacity (echo): while slow, at most this many requests are
	// served at once and the rest queue (0: no limit).
	SlowStartCapacity int
	Name              string // reported as served_by; defaults to the role
	Version           string // books: reported version

	Books   string // web: authority of books
	Authors string // books: authority of authors

	Load loadgen.Config // loadgen: Target, RPS, Path, Duration, MaxInFlight...

	// AccessLog: echo logs every request it receives.
	AccessLog bool

	// Stdout receives loadgen's final JSON line (nil: discarded).
	Stdout io.Writer
	Log    *slog.Logger
}

// Validate checks a Config before anything is started.
func (c *Config) Validate() error {
	var errs []error
	roles := Roles()
	valid := false
	for _, r := range roles {
		valid = valid || r == c.Role
	}
	if !valid {
		errs = append(errs, fmt.Errorf("--role %q: must be one of %s", c.Role, strings.Join(roles, ", ")))
	}
	if c.Listen == "" && c.Listener == nil && c.Role != "loadgen" {
		errs = append(errs, errors.New("--listen is required"))
	}
	for flag, addr := range map[string]string{"--listen": c.Listen, "--proxy": c.Proxy} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", flag, addr, err))
		}
	}
	if _, err := faults.New(c.FailRate); err != nil {
		errs = append(errs, fmt.Errorf("--fail-rate: %w", err))
	}
	if c.FailFor < 0 {
		errs = append(errs, fmt.Errorf("--fail-for %v: must not be negative", c.FailFor))
	}
	if err := (&faults.SlowStart{For: c.SlowStartFor, Delay: c.SlowStartDelay, Capacity: c.SlowStartCapacity}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--slow-start-for, --slow-start-delay, --slow-start-capacity: %w", err))
	}
	switch c.Role {
	case "web":
		if c.Books == "" {
			errs = append(errs, errors.New("--books is required"))
		}
	case "books":
		if c.Authors == "" {
			errs = append(errs, errors.New("--authors is required"))
		}
	case "loadgen":
		if c.Load.Target == "" {
			errs = append(errs, errors.New("--target is required"))
		}
	}
	return errors.Join(errs...)
}

// Run validates cfg, listens and serves the role until ctx ends. A
// listener that cannot be opened (port in use) is an error.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return err
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Role
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	log := cfg.Log.With("role", cfg.Role, "name", cfg.Name)
	inj, _ := faults.New(cfg.FailRate) // validated above
	clock := faults.NewClock(nil)
	_ = inj.Limit(cfg.FailFor, clock) // validated above

	ln := cfg.Listener
	if ln == nil && cfg.Listen != "" {
		var err error
		ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	if ln != nil {
		log.Info("listening", "addr", ln.Addr().String(), "proxy", cfg.Proxy, "fail_rate", cfg.FailRate,
			"fail_for", cfg.FailFor, "slow_start_for", cfg.SlowStartFor, "slow_start_delay", cfg.SlowStartDelay, "slow_start_capacity", cfg.SlowStartCapacity)
	}

	switch cfg.Role {
	case "web":
		client := upstream.NewHTTPClient(cfg.Proxy, 10*time.Second, 0)
		defer client.Close()
		h := services.NewWebHandler(services.WebConfig{Name: cfg.Name, Books: cfg.Books, Client: client, Faults: inj, Log: log})
		return httpserve.Serve(ctx, httpserve.NewServer(h, false, log), ln, nil)
	case "books":
		cc, err := upstream.DialGRPC(cfg.Proxy, cfg.Authors)
		if err != nil {
			ln.Close()
			return err
		}
		defer cc.Close()
		h := services.NewBooksHandler(services.BooksConfig{
			Name: cfg.Name, Version: cfg.Version, Authors: demopb.NewAuthorsClient(cc), Faults: inj, Log: log,
		})
		return httpserve.Serve(ctx, httpserve.NewServer(h, false, log), ln, nil)
	case "authors":
		return serveGRPC(ctx, ln, log, func(s *grpc.Server) {
			services.RegisterAuthors(s, services.AuthorsConfig{Name: cfg.Name, Faults: inj, Log: log})
		})
	case "echo":
		slow := &faults.SlowStart{For: cfg.SlowStartFor, Delay: cfg.SlowStartDelay, Capacity: cfg.SlowStartCapacity, Clock: clock}
		return echo.Serve(ctx, ln, echo.Config{
			Name: cfg.Name, Faults: inj, Log: log, AccessLog: cfg.AccessLog, Clock: clock, SlowStart: slow,
		})
	case "loadgen":
		return runLoadgen(ctx, cfg, ln, log)
	}
	return fmt.Errorf("unknown role %q", cfg.Role)
}

// serveGRPC serves a gRPC server on ln until ctx ends, then stops it
// gracefully within httpserve.ShutdownGrace.
func serveGRPC(ctx context.Context, ln net.Listener, log *slog.Logger, register func(*grpc.Server)) error {
	s := grpc.NewServer()
	register(s)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { s.GracefulStop(); close(stopped) }()
	t := time.NewTimer(httpserve.ShutdownGrace)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		log.Warn("grace period over, stopping gRPC server")
		s.Stop()
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// runLoadgen runs the load and prints the Result as one JSON line. With a
// listener it also serves /healthz.
func runLoadgen(ctx context.Context, cfg Config, ln net.Listener, log *slog.Logger) error {
	lc := cfg.Load
	lc.Proxy = cfg.Proxy
	lc.Log = log
	if ln != nil {
		srvCtx, stop := context.WithCancel(ctx)
		defer stop()
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		done := make(chan error, 1)
		go func() { done <- httpserve.Serve(srvCtx, httpserve.NewServer(mux, false, log), ln, nil) }()
		defer func() {
			stop()
			if err := <-done; err != nil {
				log.Warn("health server", "err", err)
			}
		}()
	}
	res, err := loadgen.Run(ctx, lc)
	if err != nil {
		return err
	}
	line, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encoding result: %w", err)
	}
	if _, err := fmt.Fprintf(cfg.Stdout, "%s\n", line); err != nil {
		return fmt.Errorf("writing result: %w", err)
	}
	log.Info("load finished", "sent", res.Sent, "ok", res.Succeeded, "failed", res.Failed, "dropped", res.Dropped)
	return nil
}
