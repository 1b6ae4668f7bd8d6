package procs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func start(t *testing.T, s *Supervisor, name, script string) *Proc {
	t.Helper()
	p, err := s.Start(Spec{
		Name:    name,
		Path:    "/bin/sh",
		Args:    []string{"-c", script},
		LogPath: filepath.Join(t.TempDir(), name+".log"),
	})
	if err != nil {
		t.Fatalf("Start(%s): %v", name, err)
	}
	return p
}

// alive reports whether a process id still exists (and is not a zombie
// waiting for us, which Stop reaps).
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

func TestDyingChildIsReported(t *testing.T) {
	s := New(nil)
	defer s.Stop(time.Second)
	start(t, s, "sleeper", "exec sleep 60")
	start(t, s, "crasher", "echo starting; echo 'boom: bad config' >&2; exit 3")

	select {
	case e := <-s.Exited():
		if e.Name != "crasher" {
			t.Errorf("exited %q, want crasher", e.Name)
		}
		if e.Status != "exit status 3" {
			t.Errorf("status %q, want exit status 3", e.Status)
		}
		if len(e.Tail) != 2 || e.Tail[1] != "boom: bad config" {
			t.Errorf("tail %q, want the two log lines", e.Tail)
		}
		msg := e.Error()
		for _, want := range []string{"crasher", "exit status 3", "boom: bad config"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message %q lacks %q", msg, want)
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit reported")
	}
}

func TestSignaledChildIsReported(t *testing.T) {
	s := New(nil)
	defer s.Stop(time.Second)
	p := start(t, s, "victim", "exec sleep 60")
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-s.Exited():
		if !strings.Contains(e.Status, "killed") {
			t.Errorf("status %q, want killed by signal", e.Status)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit reported")
	}
}

func TestStopLeavesNothingBehind(t *testing.T) {
	s := New(nil)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "grandchild.pid")
	trapFile := filepath.Join(dir, "trapped")
	// A polite child, a child that ignores SIGTERM, and a child that
	// leaves a grandchild in its group.
	polite := start(t, s, "polite", "exec sleep 60")
	stubborn := start(t, s, "stubborn", fmt.Sprintf("trap '' TERM; echo > %s; while :; do sleep 0.1; done", trapFile))
	parent := start(t, s, "parent", fmt.Sprintf("sleep 60 & echo $! > %s; wait", pidFile))

	// The trap must be installed before Stop signals, or the stubborn child
	// would die on SIGTERM and prove nothing.
	var grandchild int
	trapped := false
	for end := time.Now().Add(30 * time.Second); (grandchild == 0 || !trapped) && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(pidFile)
		if err == nil && strings.HasSuffix(string(b), "\n") {
			grandchild, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		_, err = os.Stat(trapFile)
		trapped = err == nil
	}
	if grandchild == 0 || !trapped {
		t.Fatal("children never got going")
	}

	s.Stop(500 * time.Millisecond)

	for _, p := range []*Proc{polite, stubborn, parent} {
		select {
		case <-p.Done():
		default:
			t.Errorf("%s not done after Stop", p.Name)
		}
	}
	// Reaped children are gone; the grandchild was reparented, so poll
	// until init reaps it.
	for _, pid := range []int{polite.Pid(), stubborn.Pid(), parent.Pid(), grandchild} {
		gone := false
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if !alive(pid) {
				gone = true
				break
			}
		}
		if !gone {
			t.Errorf("process %d still alive after Stop", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	select {
	case e := <-s.Exited():
		t.Errorf("Stop reported an unexpected exit: %v", e)
	default:
	}
	if _, err := s.Start(Spec{Name: "late", Path: "/bin/true", LogPath: filepath.Join(t.TempDir(), "l")}); err == nil {
		t.Error("Start after Stop succeeded")
	}
}

func TestStartMissingBinary(t *testing.T) {
	s := New(nil)
	defer s.Stop(time.Second)
	_, err := s.Start(Spec{Name: "ghost", Path: filepath.Join(t.TempDir(), "nope"), LogPath: filepath.Join(t.TempDir(), "g.log")})
	if err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("err = %v, want one naming ghost", err)
	}
}

func TestWaitReadyHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	s := New(nil)
	defer s.Stop(time.Second)
	// The process only has to stay alive; the test serves /ready on its
	// behalf a little later, so the first polls are refused.
	p := start(t, s, "server", "exec sleep 60")

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			http.NotFound(w, r)
		}
	})}
	go func() {
		time.Sleep(300 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		_ = srv.Serve(l)
	}()
	defer srv.Close()

	if err := WaitReady(context.Background(), p, 30*time.Second, HTTPReady("http://"+addr+"/ready")); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
}

func TestWaitReadyTimeoutAndDeath(t *testing.T) {
	s := New(nil)
	defer s.Stop(time.Second)
	never := func(context.Context) error { return errors.New("connection refused") }

	p := start(t, s, "slow", "exec sleep 60")
	err := WaitReady(context.Background(), p, 300*time.Millisecond, never)
	if err == nil || !strings.Contains(err.Error(), "slow not ready after 300ms") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("timeout err = %v", err)
	}

	d := start(t, s, "dies", "echo fatal: no config >&2; exit 2")
	err = WaitReady(context.Background(), d, 30*time.Second, never)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Status != "exit status 2" || len(ee.Tail) != 1 {
		t.Errorf("death err = %#v", err)
	}
}

func TestTail(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	long := strings.Repeat("x", 70<<10) + "\nlast\n"
	tests := []struct {
		name, content string
		n             int
		want          []string
	}{
		{"empty", "", 5, nil},
		{"fewer lines", "a\nb\n", 5, []string{"a", "b"}},
		{"no final newline", "a\nb", 5, []string{"a", "b"}},
		{"more lines", "1\n2\n3\n4\n", 2, []string{"3", "4"}},
		{"huge first line is cut", long, 5, []string{"last"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Tail(write(tt.name, tt.content), tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Tail = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := Tail(filepath.Join(dir, "missing"), 3); err == nil {
		t.Error("Tail of a missing file succeeded")
	}
}
