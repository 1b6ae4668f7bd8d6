// Package procs supervises the child processes of a command such as
// `trellis demo`: it starts them in their own process groups with their
// output in log files, waits for them to become ready, reports the first
// one that dies unexpectedly with the tail of its log, and stops them all,
// leaving nothing behind.
package procs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TailLines is how many log lines an ExitError carries.
const TailLines = 20

// Spec describes one child process.
type Spec struct {
	// Name identifies the process in messages, e.g. "trellis-proxy (web)".
	Name string
	Path string
	Args []string
	// Env is added to the supervisor's own environment.
	Env []string
	// LogPath receives the child's stdout and stderr.
	LogPath string
}

// Proc is a started child.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	state   *os.ProcessState
	waitErr error
}

// Pid is the child's process id, which is also its process group id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the child has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// ExitError reports a child that exited while it was expected to run.
type ExitError struct {
	Name    string
	Status  string
	LogPath string
	Tail    []string
}

func (e *ExitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s exited unexpectedly: %s", e.Name, e.Status)
	if len(e.Tail) > 0 {
		fmt.Fprintf(&b, "; last lines of %s:\n", e.LogPath)
		for _, l := range e.Tail {
			b.WriteString("    ")
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// Supervisor owns a set of children. Its zero value is not usable; use New.
type Supervisor struct {
	log *slog.Logger

	mu       sync.Mutex
	procs    []*Proc
	stopping bool

	// exited receives the first unexpected exit; buffered so the waiting
	// goroutine never blocks.
	exited chan *ExitError
}

// New returns an empty supervisor. A nil logger discards.
func New(log *slog.Logger) *Supervisor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{log: log, exited: make(chan *ExitError, 1)}
}

// Exited delivers the first child that exits before Stop is called.
func (s *Supervisor) Exited() <-chan *ExitError { return s.exited }

// Start launches a child in its own process group (so a Ctrl-C on the
// terminal reaches only the supervisor, which then stops the children in
// order) and, where the platform has it, with a parent-death signal so no
// child outlives a supervisor that was killed.
func (s *Supervisor) Start(spec Spec) (*Proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil, fmt.Errorf("start %s: supervisor is stopping", spec.Name)
	}
	logFile, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", spec.Name, err)
	}
	defer logFile.Close() // the child has its own descriptor once started

	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	p := &Proc{Name: spec.Name, LogPath: spec.LogPath, cmd: cmd, done: make(chan struct{})}
	s.procs = append(s.procs, p)
	s.log.Debug("started", "name", spec.Name, "pid", cmd.Process.Pid, "log", spec.LogPath)
	go s.wait(p)
	return p, nil
}

func (s *Supervisor) wait(p *Proc) {
	p.waitErr = p.cmd.Wait()
	p.state = p.cmd.ProcessState
	// Whatever the leader left in its group goes with it.
	killGroup(p.Pid(), syscall.SIGKILL)
	close(p.done)

	s.mu.Lock()
	stopping := s.stopping
	s.mu.Unlock()
	if stopping {
		return
	}
	tail, _ := Tail(p.LogPath, TailLines)
	e := &ExitError{Name: p.Name, Status: describe(p.state, p.waitErr), LogPath: p.LogPath, Tail: tail}
	s.log.Debug("exited", "name", p.Name, "status", e.Status)
	select {
	case s.exited <- e:
	default: // only the first death matters; the rest follow from Stop
	}
}

func describe(st *os.ProcessState, err error) string {
	if st == nil {
		if err != nil {
			return err.Error()
		}
		return "unknown status"
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("killed by signal %s", ws.Signal())
	}
	return fmt.Sprintf("exit status %d", st.ExitCode())
}

// Stop ends every child: SIGTERM to each process group (in reverse start
// order, so clients go before what they depend on), then SIGKILL to those
// still running after grace. It returns when every child has been reaped.
func (s *Supervisor) Stop(grace time.Duration) {
	s.mu.Lock()
	s.stopping = true
	procs := append([]*Proc(nil), s.procs...)
	s.mu.Unlock()

	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		select {
		case <-p.done:
		default:
			killGroup(p.Pid(), syscall.SIGTERM)
		}
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for _, p := range procs {
		select {
		case <-p.done:
			continue
		case <-timer.C:
		}
		// Past the grace period: force this one and every later one.
		for _, q := range procs {
			select {
			case <-q.done:
			default:
				s.log.Warn("did not stop in time; killing", "name", q.Name, "grace", grace)
				killGroup(q.Pid(), syscall.SIGKILL)
			}
		}
		break
	}
	for _, p := range procs {
		<-p.done
	}
}

// WaitReady polls check every interval until it returns nil, the process
// exits, ctx ends or timeout passes. The error says which, with the last
// check error.
func WaitReady(ctx context.Context, p *Proc, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	const interval = 100 * time.Millisecond
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.Done():
			tail, _ := Tail(p.LogPath, TailLines)
			return &ExitError{Name: p.Name, Status: describe(p.state, p.waitErr), LogPath: p.LogPath, Tail: tail}
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				msg := fmt.Sprintf("%s not ready after %s", p.Name, timeout)
				if tail, _ := Tail(p.LogPath, TailLines); len(tail) > 0 {
					msg += fmt.Sprintf(" (last lines of %s:\n    %s\n)", p.LogPath, strings.Join(tail, "\n    "))
				}
				return fmt.Errorf("%s: %w", msg, last)
			}
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// Tail returns the last n lines of a file, reading at most its last 64 KiB.
func Tail(path string, n int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	const maxRead = 64 << 10
	off := max(st.Size()-maxRead, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if off > 0 && len(lines) > 0 {
		lines = lines[1:] // probably cut in the middle
	}
	if len(lines) == 1 && lines[0] == "" {
		return nil, nil
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}

// HTTPReady is a readiness check that wants 200 from GET url.
func HTTPReady(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}
