package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Component processes run detached (own session, output to run/logs) so
// they outlive this command; run/pids/<name>.pid records "pid starttime" so
// a recycled pid is never mistaken for ours.

func (h *harness) spawn(name, bin string, args []string, extraEnv ...string) error {
	logs := h.runDir("logs")
	pids := h.runDir("pids")
	for _, d := range []string{logs, pids} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(filepath.Join(logs, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.Dir = h.runDir()
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	st, err := procStart(pid)
	if err != nil {
		return fmt.Errorf("%s exited at once: see %s", name, filepath.Join(logs, name+".log"))
	}
	// Not waited for: it must outlive us. init reaps it after `down`.
	if err := cmd.Process.Release(); err != nil {
		return err
	}
	h.log.Debug("started", "component", name, "pid", pid)
	return os.WriteFile(filepath.Join(pids, name+".pid"), fmt.Appendf(nil, "%d %s\n", pid, st), 0o644)
}

// procStart is field 22 of /proc/PID/stat: the start time in clock ticks.
func procStart(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", errors.New("bad stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", errors.New("bad stat")
	}
	if f[0] == "Z" {
		return "", errors.New("zombie")
	}
	return f[19], nil
}

// pidOf returns the live pid of component name, or 0.
func (h *harness) pidOf(name string) int {
	b, err := os.ReadFile(h.runDir("pids", name+".pid"))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 1 {
		return 0
	}
	st, err := procStart(pid)
	if err != nil || st != f[1] {
		return 0
	}
	return pid
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs.
func (h *harness) stop(ctx context.Context, name string, grace time.Duration) {
	pid := h.pidOf(name)
	if pid == 0 {
		os.Remove(h.runDir("pids", name+".pid"))
		return
	}
	h.log.Debug("stopping", "component", name, "pid", pid)
	killWait(ctx, pid, grace)
	os.Remove(h.runDir("pids", name+".pid"))
}

func killWait(ctx context.Context, pid int, grace time.Duration) {
	st, err := procStart(pid)
	if err != nil {
		return
	}
	alive := func() bool {
		s, err := procStart(pid)
		return err == nil && s == st
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for alive() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	if alive() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 50 && alive(); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// processesMatching returns the processes whose command line holds every
// needle, never this one nor any of its ancestors: a caller's shell may
// name the harness's paths (make e2e-mc passes kubeconfigs under run/),
// and the harness may run several levels below it (nsenter).
func processesMatching(needles ...string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	skip := ancestors()
	skip[os.Getpid()] = true
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || skip[pid] {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cl := strings.ReplaceAll(string(b), "\x00", " ")
		ok := true
		for _, n := range needles {
			if !strings.Contains(cl, n) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, pid)
		}
	}
	return out
}

// ancestors are the pids above this process, up to init.
func ancestors() map[int]bool {
	out := map[int]bool{}
	for pid := os.Getppid(); pid > 1 && !out[pid]; {
		out[pid] = true
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			break
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if i < 0 || len(f) < 2 {
			break
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			break
		}
	}
	return out
}
