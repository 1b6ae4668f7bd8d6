//go:build linux

// Package netns holds integration tests that need Linux network namespaces
// and iptables: SO_ORIGINAL_DST behind a real REDIRECT rule, and the
// transparent-mode mesh between two namespaces. They need root and the
// `ip` and `iptables` commands, and skip with a message otherwise.
package netns

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-mesh/trellis/internal/syncbuf"
)

// requirePrivileges skips the test unless it can create namespaces and
// program netfilter.
func requirePrivileges(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and iptables rules")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %q not found in PATH (install iproute2 and iptables)", tool)
		}
	}
}

// uniq makes names unique per test run, so parallel runs do not collide.
func uniq(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, os.Getpid()%1_000_000)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// Netns is a named network namespace (ip netns) for the life of a test.
type Netns struct {
	Name string
}

// newNetns creates a namespace with loopback up; t.Cleanup deletes it, which
// also removes its interfaces and iptables rules.
func newNetns(t *testing.T, name string) *Netns {
	t.Helper()
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("Operation not permitted")) || bytes.Contains(out, []byte("Permission denied")) {
			t.Skipf("skipping: cannot create network namespaces here: %s", bytes.TrimSpace(out))
		}
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	n := &Netns{Name: name}
	n.Run(t, "ip", "link", "set", "lo", "up")
	return n
}

// Run runs a command inside the namespace and fails the test on error.
func (n *Netns) Run(t *testing.T, name string, args ...string) {
	t.Helper()
	run(t, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Do runs f on an OS thread that has joined the namespace. Sockets created
// and processes started by f live in the namespace. The thread is thrown
// away afterwards (the goroutine exits still locked), so the namespace never
// leaks into the rest of the test process.
func (n *Netns) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the runtime then terminates this thread.
		fd, err := unix.Open(filepath.Join("/run/netns", n.Name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("opening netns %s: %w", n.Name, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("joining netns %s: %w", n.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Listen opens a TCP listener inside the namespace.
func (n *Netns) Listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// DialContext dials from inside the namespace (usable as an
// http.Transport's DialContext: the socket is created in the namespace, the
// rest of the connection's life does not care which thread runs it).
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Proc is a child process started inside a namespace.
type Proc struct {
	Name   string
	Output *syncbuf.Buffer
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
}

// Exited reports whether the process has exited, and its error.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Start runs a command in the namespace, optionally as another user.
// t.Cleanup stops it (SIGTERM, then SIGKILL) and, if the test failed, logs
// its output.
func (n *Netns) Start(t *testing.T, name string, cred *syscall.Credential, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, Output: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = p.Output
	p.cmd.Stderr = p.Output
	// No Pdeathsig: it fires when the forking thread exits, and the thread
	// that joined the namespace is discarded right after Start.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := n.Do(p.cmd.Start); err != nil {
		t.Fatalf("starting %s in %s: %v", name, n.Name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("---- output of %s ----\n%s", name, p.Output.String())
		}
	})
	return p
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// buildBinaries builds trellis-proxy and trellis-controller once per test
// binary into a world-readable directory (the proxy runs as another uid).
// TRELLIS_BIN_DIR, when set, names a directory holding prebuilt binaries.
func buildBinaries(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TRELLIS_BIN_DIR"); d != "" {
		return d
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "trellis-netns-bin-")
		if buildErr != nil {
			return
		}
		if buildErr = os.Chmod(binDir, 0o755); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+string(os.PathSeparator),
			"github.com/trellis-mesh/trellis/cmd/trellis-proxy",
			"github.com/trellis-mesh/trellis/cmd/trellis-controller")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building binaries: %v", buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
