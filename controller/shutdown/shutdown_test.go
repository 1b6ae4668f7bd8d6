package shutdown

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// A stop request and a server failure both run the whole sequence, in
// order; the failure is returned.
func TestSequenceRun(t *testing.T) {
	failed := errors.New("gRPC server: boom")
	for _, tc := range []struct {
		name string
		end  func(cancel context.CancelFunc, errc chan error)
		want error
	}{
		{"stop requested", func(cancel context.CancelFunc, _ chan error) { cancel() }, nil},
		{"server failed", func(_ context.CancelFunc, errc chan error) { errc <- failed }, failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var steps []string
			streams := make(chan struct{})
			admin := &http.Server{Addr: "127.0.0.1:0"}
			s := Sequence{
				Log: slog.New(slog.DiscardHandler), Grace: time.Second,
				Unready: func() {
					select {
					case <-streams:
						t.Error("streams ended before /ready turned 503")
					default:
					}
					steps = append(steps, "unready")
				},
				Streams:  streams,
				GRPC:     grpc.NewServer(),
				Webhooks: []*http.Server{{}},
				Admin:    admin,
				Background: func() {
					// A server already shut down refuses to serve at once.
					if errors.Is(admin.ListenAndServe(), http.ErrServerClosed) {
						steps = append(steps, "admin closed")
					}
					steps = append(steps, "background")
				},
				Wait: func() { steps = append(steps, "wait") },
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			tc.end(cancel, errc)
			if err := s.Run(ctx, errc); !errors.Is(err, tc.want) {
				t.Fatalf("Run = %v, want %v", err, tc.want)
			}
			if want := []string{"unready", "admin closed", "background", "wait"}; !slices.Equal(steps, want) {
				t.Fatalf("steps %v, want %v", steps, want)
			}
			select {
			case <-streams:
			default:
				t.Fatal("streams not ended")
			}
		})
	}
}

// A client that never hangs up does not hold the stop beyond the grace.
func TestSequenceHardStopAfterGrace(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Watch is a stream the server never ends by itself.
	w, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stopped := make(chan struct{})
	go func() {
		Sequence{Log: slog.New(slog.DiscardHandler), Grace: 100 * time.Millisecond, GRPC: srv}.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Logf("stopped %v after the grace of 100ms began", time.Since(start))
	case <-time.After(30 * time.Second):
		t.Fatal("stop waited for a stream that never ends")
	}
	if _, err := w.Recv(); err == nil {
		t.Fatal("stream still open after the stop")
	}
}
