package browser

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Dashboard is a running `trellis dashboard` or `trellis demo
// --dashboard`.
type Dashboard struct {
	URL string
	Pid int

	cmd  *exec.Cmd
	out  *io.PipeWriter
	mu   sync.Mutex
	tail []string
	done bool
}

// RunDashboard starts cmd in its own process group, reads its output
// (stdout and stderr) until the line "Trellis dashboard: URL" and returns
// it running; at the test's end the group is killed unless Stop ran.
func RunDashboard(t *testing.T, cmd *exec.Cmd, ceiling time.Duration) *Dashboard {
	t.Helper()
	pr, pw := io.Pipe()
	d := &Dashboard{cmd: cmd, out: pw}
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.Pid = cmd.Process.Pid
	t.Cleanup(func() {
		if !d.done {
			_ = syscall.Kill(-d.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
			_ = pw.Close()
		}
	})
	found, exited := make(chan string, 1), make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			d.mu.Lock()
			d.tail = append(d.tail, sc.Text())
			if len(d.tail) > 200 {
				d.tail = d.tail[1:]
			}
			d.mu.Unlock()
			if _, u, ok := strings.Cut(sc.Text(), "Trellis dashboard: "); ok && len(strings.Fields(u)) > 0 {
				select {
				case found <- strings.Fields(u)[0]:
				default:
				}
			}
		}
	}()
	select {
	case d.URL = <-found:
		t.Logf("%s serves %s after %s", cmd.Args[0], d.URL, time.Since(start).Round(time.Millisecond))
		return d
	case <-exited:
		t.Fatalf("%s exited before serving the dashboard:\n%s", strings.Join(cmd.Args, " "), d.Tail())
	case <-time.After(ceiling):
		t.Fatalf("%s: no dashboard URL within %s:\n%s", strings.Join(cmd.Args, " "), ceiling, d.Tail())
	}
	return nil
}

// Tail is the last lines of the process's output.
func (d *Dashboard) Tail() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.tail, "\n")
}

// Stop sends SIGINT (Ctrl-C) and waits: a clean exit is nil.
func (d *Dashboard) Stop(grace time.Duration) error {
	d.done = true
	_ = syscall.Kill(d.Pid, syscall.SIGINT)
	waited := make(chan error, 1)
	go func() { waited <- d.cmd.Wait() }()
	var err error
	select {
	case err = <-waited:
	case <-time.After(grace):
		_ = syscall.Kill(-d.Pid, syscall.SIGKILL)
		err = errors.Join(fmt.Errorf("still running %s after SIGINT", grace), <-waited)
	}
	_ = d.out.Close()
	if err != nil {
		return fmt.Errorf("%w\n%s", err, d.Tail())
	}
	return nil
}
