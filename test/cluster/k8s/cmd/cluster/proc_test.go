package main

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

// processesMatching finds a process by its command line, and never this
// process or its ancestors, whatever their command lines say.
func TestProcessesMatching(t *testing.T) {
	needle := "trellis-proc-test-" + t.Name()
	child := exec.Command("sh", "-c", "sleep 30 # "+needle)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	if got := processesMatching(needle); !slices.Contains(got, child.Process.Pid) {
		t.Errorf("processesMatching(%q) = %v, want the child %d", needle, got, child.Process.Pid)
	}
	anc := ancestors()
	if !anc[os.Getppid()] || anc[os.Getpid()] {
		t.Errorf("ancestors() = %v: want the parent %d and not this process %d", anc, os.Getppid(), os.Getpid())
	}
	// This test binary's own path is on its command line and perhaps its
	// parent's (go test): neither may be listed.
	for _, pid := range processesMatching(os.Args[0]) {
		if pid == os.Getpid() || anc[pid] {
			t.Errorf("processesMatching listed %d, this process or an ancestor", pid)
		}
	}
}
