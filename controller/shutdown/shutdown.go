// Package shutdown is the one stop sequence of the controller, shared by
// local and Kubernetes mode: wait for the stop request or the first server
// failure, then stop taking traffic, end the streams, drain what is in
// flight within a grace period, and release the background work.
package shutdown

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc"
)

// Sequence is what a running controller stops, in this order.
type Sequence struct {
	Log *slog.Logger
	// Grace bounds the drain of each server (webhooks, then gRPC).
	Grace time.Duration
	// Unready turns /ready to 503 first, so load balancers and proxies
	// move away before anything closes.
	Unready func()
	// DrainDelay, after a requested stop, keeps everything serving (not
	// ready) this long before anything closes: the endpoint's removal
	// reaches the API server (webhook calls) and kube-proxy first, so a
	// restart refuses no admission under failurePolicy Fail.
	DrainDelay time.Duration
	// Streams is closed next: open watch streams end with Unavailable
	// (notify.ErrShuttingDown) instead of holding GracefulStop for ever.
	Streams chan struct{}
	// Webhooks are short admission calls: drained with the grace, then
	// closed.
	Webhooks []*http.Server
	// GRPC stops gracefully, or hard after the grace.
	GRPC *grpc.Server
	// Admin is shut down after the servers, so /live and /metrics answer
	// while they drain.
	Admin *http.Server
	// Background stops informers, file watches and renewals, last.
	Background func()
	// Wait, when set, waits for the servers' goroutines.
	Wait func()
}

// Run blocks until ctx is done or errc yields a server failure, then runs
// the sequence. It returns the failure, nil after a requested stop.
func (s Sequence) Run(ctx context.Context, errc <-chan error) error {
	var runErr error
	select {
	case <-ctx.Done():
		s.Log.Info("shutting down")
	case runErr = <-errc:
		s.Log.Error("server failed; shutting down", "err", runErr)
	}
	if runErr == nil && s.DrainDelay > 0 {
		if s.Unready != nil {
			s.Unready()
		}
		s.Log.Info("not ready; draining before closing listeners", "delay", s.DrainDelay)
		time.Sleep(s.DrainDelay)
	}
	s.Stop()
	return runErr
}

// Stop runs the sequence now.
func (s Sequence) Stop() {
	if s.Unready != nil {
		s.Unready()
	}
	if s.Streams != nil {
		close(s.Streams)
	}
	for _, h := range s.Webhooks {
		sctx, cancel := context.WithTimeout(context.Background(), s.Grace)
		if err := h.Shutdown(sctx); err != nil {
			_ = h.Close()
		}
		cancel()
	}
	if s.GRPC != nil {
		s.stopGRPC()
	}
	if s.Admin != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.Admin.Shutdown(sctx)
		cancel()
	}
	if s.Background != nil {
		s.Background()
	}
	if s.Wait != nil {
		s.Wait()
	}
}

// stopGRPC lets calls in flight finish within the grace, then closes the
// connections of clients that do not hang up.
func (s Sequence) stopGRPC() {
	stopped := make(chan struct{})
	go func() { s.GRPC.GracefulStop(); close(stopped) }()
	t := time.NewTimer(s.Grace)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		s.Log.Warn("graceful stop timed out; closing connections", "grace", s.Grace)
		s.GRPC.Stop()
		<-stopped
	}
}
