package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/loadgen"
)

// binary builds trellis-demo-app into a temporary directory.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "trellis-demo-app")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestProcess(t *testing.T) {
	bin := binary(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	t.Run("exit codes", func(t *testing.T) {
		tests := []struct {
			name     string
			args     []string
			wantCode int
			wantErr  string
		}{
			{"no role", []string{"--listen", "127.0.0.1:0"}, 2, "--role"},
			{"unknown flag", []string{"--role", "echo", "--bogus"}, 2, "bogus"},
			{"missing listen", []string{"--role", "echo"}, 2, "--listen is required"},
			{"fail rate", []string{"--role", "echo", "--listen", "127.0.0.1:0", "--fail-rate", "2"}, 2, "--fail-rate"},
			{"fail for", []string{"--role", "echo", "--listen", "127.0.0.1:0", "--fail-for", "-1s"}, 2, "--fail-for"},
			{"slow start delay", []string{"--role", "echo", "--listen", "127.0.0.1:0", "--slow-start-for", "20s", "--slow-start-delay", "2h"}, 2, "--slow-start-delay"},
			{"log level", []string{"--role", "echo", "--listen", "127.0.0.1:0", "--log-level", "loud"}, 2, "--log-level"},
			{"extra args", []string{"--role", "echo", "--listen", "127.0.0.1:0", "extra"}, 2, "unexpected arguments"},
			{"port in use", []string{"--role", "echo", "--listen", busy.Addr().String()}, 1, "address already in use"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				var stderr bytes.Buffer
				cmd := exec.CommandContext(ctx, bin, tt.args...)
				cmd.Stderr = &stderr
				err := cmd.Run()
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != tt.wantCode {
					t.Fatalf("run: %v, want exit code %d; stderr:\n%s", err, tt.wantCode, stderr.String())
				}
				if !strings.Contains(stderr.String(), tt.wantErr) {
					t.Errorf("stderr %q, want it to mention %q", stderr.String(), tt.wantErr)
				}
			})
		}
	})

	t.Run("loadgen prints counts on SIGTERM", func(t *testing.T) {
		seen := make(chan struct{}, 1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case seen <- struct{}{}:
			default:
			}
		}))
		defer srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, "--role", "loadgen", "--target", srv.Listener.Addr().String(), "--rps", "50", "--path", "/")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-seen:
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("no request arrived; stderr:\n%s", stderr.String())
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("exit: %v; stderr:\n%s", err, stderr.String())
		}
		var res loadgen.Result
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			t.Fatalf("stdout %q: %v", stdout.String(), err)
		}
		if res.Sent == 0 || res.Succeeded == 0 || res.Sent != res.Succeeded+res.Failed+res.Cancelled {
			t.Errorf("result %+v", res)
		}
	})
}
