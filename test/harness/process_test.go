package harness

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestProcessKillsGroupAndKeepsLog(t *testing.T) {
	dir := t.TempDir()
	// The shell starts a child in the same group: killing the group must
	// end both, or Kill would hang on the inherited output file.
	p := StartProcess(t, "sh", dir, "/bin/sh", "-c", "echo started; sleep 30 & wait")
	if err := waitFor(5*time.Second, func() bool { return strings.Contains(p.LogTail(5), "started") }); err != nil {
		t.Fatalf("log: %q", p.LogTail(5))
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited, err := p.Wait(5 * time.Second)
	if !exited {
		t.Fatal("process group not ended by SIGTERM")
	}
	if err == nil {
		t.Error("a process killed by a signal reported success")
	}
	p.Kill() // idempotent after exit
	if !p.Exited() {
		t.Error("Exited false after Wait")
	}
}

func TestWaitReadyReportsExit(t *testing.T) {
	p := StartProcess(t, "false", t.TempDir(), "/bin/sh", "-c", "exit 3")
	var ps Ports
	err := WaitReady(p, ps.Addr(t), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitReady = %v, want an exit error", err)
	}
}

func waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

var errTimeout = errors.New("timed out")
