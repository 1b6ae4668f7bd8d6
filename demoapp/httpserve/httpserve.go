// Package httpserve runs an HTTP server on a listener until its context
// ends, then shuts it down gracefully.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ShutdownGrace bounds how long in-flight requests may take after the
// context ends.
const ShutdownGrace = 10 * time.Second

// NewServer returns a server for h speaking HTTP/1.1 and, when h2c is true,
// HTTP/2 with prior knowledge on the same port.
func NewServer(h http.Handler, h2c bool, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if h2c {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = &p
	}
	return srv
}

// Serve serves srv on ln until ctx ends, then shuts down within
// ShutdownGrace. It returns nil after a clean shutdown. onShutdown, if not
// nil, runs when shutdown starts (e.g. to stop a gRPC server sharing the
// port).
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, onShutdown func()) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	if onShutdown != nil {
		onShutdown()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		_ = srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), serr)
	}
	if err != nil {
		return fmt.Errorf("shutdown %s: %w", ln.Addr(), err)
	}
	return nil
}
