package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procs starts child processes in their own process groups and kills every
// group on Stop, so nothing outlives the bench: not on success, not on an
// error, not on Ctrl-C (the deferred Stop runs once the context is done).
type procs struct {
	dir string // where each process's log goes
	log *slog.Logger

	mu   sync.Mutex
	list []*proc
}

type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // valid after done
}

// start runs bin with args; stdout and stderr go to DIR/name.log unless
// stdout is given.
func (p *procs) start(name string, env []string, stdout *os.File, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(p.dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file for %s: %w", name, err)
	}
	defer lf.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	// Own process group, so Stop reaches grandchildren (nginx workers) too;
	// Pdeathsig is a backstop should this process die without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	pr := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		pr.err = cmd.Wait()
		close(pr.done)
	}()
	p.mu.Lock()
	p.list = append(p.list, pr)
	p.mu.Unlock()
	p.log.Debug("started", "name", name, "pid", cmd.Process.Pid, "cmd", bin, "args", strings.Join(args, " "))
	return pr, nil
}

func (pr *proc) pid() int { return pr.cmd.Process.Pid }

// exited reports whether the process has ended, with its wait error.
func (pr *proc) exited() (bool, error) {
	select {
	case <-pr.done:
		if pr.err == nil {
			return true, errors.New("exited with status 0")
		}
		return true, pr.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (pr *proc) stop(grace time.Duration) {
	pgid := pr.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-pr.done:
	case <-time.After(grace):
	}
	// Also after a clean exit: the group may still hold children.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-pr.done
}

// Stop kills every started process group, newest first.
func (p *procs) Stop() {
	p.mu.Lock()
	list := p.list
	p.list = nil
	p.mu.Unlock()
	var wg sync.WaitGroup
	for i := len(list) - 1; i >= 0; i-- {
		wg.Add(1)
		go func(pr *proc) {
			defer wg.Done()
			pr.stop(3 * time.Second)
		}(list[i])
	}
	wg.Wait()
}

// tail returns the last n lines of the process's log.
func (pr *proc) tail(n int) string {
	b, err := os.ReadFile(pr.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// failure wraps err with the process's name and the tail of its log.
func (pr *proc) failure(err error) error {
	return fmt.Errorf("%s: %w\n  last lines of %s:\n%s", pr.name, err, pr.logPath, pr.tail(20))
}

// waitFor polls check every 50 ms until it returns nil, the process exits,
// the timeout passes or ctx ends; the error names the process and shows
// the tail of its log.
func (pr *proc) waitFor(ctx context.Context, what string, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		if gone, err := pr.exited(); gone {
			return pr.failure(fmt.Errorf("exited while waiting for %s: %w", what, err))
		}
		select {
		case <-ctx.Done():
			return pr.failure(fmt.Errorf("not %s after %v: %w", what, timeout, last))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// reservePorts finds n free loopback ports by listening on 127.0.0.1:0. The
// listeners are closed before the ports are handed to nginx and the proxies
// (which take addresses, not sockets); another process could take one in
// between, which would show as a clear bind error at start.
func reservePorts(n int) ([]string, error) {
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	addrs := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a port: %w", err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

func tcpCheck(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// httpCheck GETs url (with an optional Host) and wants a 200.
func httpCheck(url, host string) func(context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if host != "" {
			req.Host = host
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		_, _ = body.ReadFrom(io.LimitReader(resp.Body, 512))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, strings.TrimSpace(body.String()))
		}
		return nil
	}
}
