// Package harness starts the mesh's binaries as real processes on loopback
// for end-to-end tests: it builds them, allocates ports, writes the local
// store file and token files, waits for readiness, and reads /metrics.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binaries holds the paths of the built mesh binaries.
type Binaries struct {
	Controller string
	Proxy      string
	CLI        string // trellis (e.g. trellis identity rotate)
}

// Build compiles trellis-controller, trellis-proxy and trellis into dir. race builds
// them with the race detector, so that e2e runs under -race also check the
// processes.
func Build(ctx context.Context, dir string, race bool) (Binaries, error) {
	b := Binaries{
		Controller: filepath.Join(dir, "trellis-controller"),
		Proxy:      filepath.Join(dir, "trellis-proxy"),
		CLI:        filepath.Join(dir, "trellis"),
	}
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	if race {
		args = append(args, "-race")
	}
	args = append(args,
		"github.com/trellis-mesh/trellis/cmd/trellis-controller",
		"github.com/trellis-mesh/trellis/cmd/trellis-proxy",
		"github.com/trellis-mesh/trellis/cmd/trellis")
	cmd := exec.CommandContext(ctx, "go", args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return Binaries{}, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return b, nil
}

// Process is a child process in its own process group, with its output in a
// log file.
type Process struct {
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// StartProcess starts path with args. The process is killed (SIGKILL to its
// group) and reaped when the test ends; when the test failed, the tail of
// its log is printed.
func StartProcess(t testing.TB, name, logDir, path string, args ...string) *Process {
	t.Helper()
	p, err := startProcess(name, logDir, path, args...)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- last lines of %s (%s) ---\n%s", p.Name, p.LogPath, p.LogTail(40))
		}
	})
	return p
}

func startProcess(name, logDir, path string, args ...string) (*Process, error) {
	// Several runs of one process (restarts) append to one log.
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	fmt.Fprintf(f, "=== %s %s %s\n", time.Now().Format(time.RFC3339Nano), path, strings.Join(args, " "))
	cmd := exec.Command(path, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Env = os.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("exec %s: %w", path, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return errors.New("process already exited")
	}
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Kill sends SIGKILL to the process group and waits for the process to be
// reaped.
func (p *Process) Kill() {
	if !p.Exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
}

// Wait waits at most d for the process to exit and returns its exit error.
func (p *Process) Wait(d time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	case <-time.After(d):
		return false, nil
	}
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// LogTail returns the last n lines of the process log.
func (p *Process) LogTail(n int) string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Ports hands out free loopback ports, never the same one twice in a run.
type Ports struct {
	mu   sync.Mutex
	seen map[int]bool
}

// Addr returns "127.0.0.1:port" for a port that was free a moment ago.
func (ps *Ports) Addr(t testing.TB) string {
	t.Helper()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.seen == nil {
		ps.seen = make(map[int]bool)
	}
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("allocate port: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !ps.seen[port] {
			ps.seen[port] = true
			return fmt.Sprintf("127.0.0.1:%d", port)
		}
	}
	t.Fatal("allocate port: no fresh port after 100 tries")
	return ""
}

// HTTPStatus GETs url and returns the status code and body (at most 64 KiB).
func HTTPStatus(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, b.String(), nil
}

// WaitReady polls http://addr/ready until it answers 200, the process exits,
// or timeout passes.
func WaitReady(p *Process, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		if p != nil && p.Exited() {
			_, err := p.Wait(0)
			return fmt.Errorf("%s exited before ready: %v", p.Name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		code, body, err := HTTPStatus(ctx, "http://"+addr+"/ready")
		cancel()
		if err == nil && code == http.StatusOK {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %s", code, strings.TrimSpace(body))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s after %s: %s", p.Name, addr, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
