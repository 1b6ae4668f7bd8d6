package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The machine-wide settings go back to their values from before the first
// cluster only when the last cluster leaves, in whichever order they go.
func TestMachineRecordRestoresAfterTheLastCluster(t *testing.T) {
	for _, order := range [][]string{{"a", "b"}, {"b", "a"}} {
		t.Run(strings.Join(order, "-then-"), func(t *testing.T) {
			dir := t.TempDir()
			sys := filepath.Join(dir, "sys")
			set := func(k, v string) {
				t.Helper()
				if err := os.MkdirAll(filepath.Dir(filepath.Join(sys, k)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(sys, k), []byte(v+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			get := func(k string) string {
				b, err := os.ReadFile(filepath.Join(sys, k))
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(b))
			}
			set("vm/overcommit_memory", "0")
			set("kernel/panic", "0")
			m := machineSettings{file: filepath.Join(dir, "clusters.json"), keys: []string{"vm/overcommit_memory", "kernel/panic", "kernel/absent"}, procSys: sys}

			if err := m.join("a"); err != nil {
				t.Fatal(err)
			}
			set("vm/overcommit_memory", "1") // what a's kubelet does
			set("kernel/panic", "10")
			if err := m.join("b"); err != nil { // b must not record a's values
				t.Fatal(err)
			}
			if err := m.leave(order[0]); err != nil {
				t.Fatal(err)
			}
			if got := get("vm/overcommit_memory"); got != "1" {
				t.Fatalf("after %s left with %s still up: overcommit_memory %s, want it left at 1", order[0], order[1], got)
			}
			if _, err := os.Stat(m.file); err != nil {
				t.Fatalf("record gone while %s is up: %v", order[1], err)
			}
			if err := m.leave(order[1]); err != nil {
				t.Fatal(err)
			}
			if got, want := get("vm/overcommit_memory")+","+get("kernel/panic"), "0,0"; got != want {
				t.Fatalf("after both left: %s, want the values from before the first: %s", got, want)
			}
			if _, err := os.Stat(m.file); !os.IsNotExist(err) {
				t.Fatalf("record left behind: %v", err)
			}
			if _, err := os.Stat(filepath.Join(sys, "kernel/absent")); !os.IsNotExist(err) {
				t.Fatalf("a setting that did not exist was written: %v", err)
			}
		})
	}
}

// A cluster leaving twice (down after a failed up, then down again) does
// not restore while another is up.
func TestMachineRecordLeaveIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys")
	if err := os.MkdirAll(filepath.Join(sys, "vm"), 0o755); err != nil {
		t.Fatal(err)
	}
	k := filepath.Join(sys, "vm", "panic_on_oom")
	if err := os.WriteFile(k, []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := machineSettings{file: filepath.Join(dir, "clusters.json"), keys: []string{"vm/panic_on_oom"}, procSys: sys}
	for _, step := range []func() error{func() error { return m.join("a") }, func() error { return m.join("b") }} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(k, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := m.leave("a"); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(k); strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("restored to %q while b is up", b)
	}
}
