package main

import (
	"errors"
	"testing"
)

func TestRuntimeEnvWins(t *testing.T) {
	// With every variable "set", apply must not fail even on a bad flag
	// value it does not use.
	env := map[string]string{"GOMAXPROCS": "2", "GOMEMLIMIT": "1GiB", "GOGC": "100"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := (runtimeConfig{maxProcs: 1, memoryLimit: "bogus", gcPercent: 50}).apply(lookup); err != nil {
		t.Fatalf("apply with env set: %v", err)
	}
	none := func(string) (string, bool) { return "", false }
	if err := (runtimeConfig{memoryLimit: "bogus"}).apply(none); err == nil {
		t.Fatal("bad --memory-limit accepted")
	}
}

func TestSoftMemoryLimit(t *testing.T) {
	cgroup := func(content string) func(string) ([]byte, error) {
		return func(f string) ([]byte, error) {
			if content == "" || f != "/sys/fs/cgroup/memory.max" {
				return nil, errors.New("no such file")
			}
			return []byte(content), nil
		}
	}
	for _, tc := range []struct {
		flag, cgroup string
		want         int64
		ok           bool
	}{
		{"auto", "67108864\n", 60397977, true}, // 90 % of the injector's 64Mi
		{"auto", "max\n", 0, true},
		{"auto", "", 0, true}, // no cgroup: none
		{"", "67108864", 60397977, true},
		{"off", "67108864", 0, true},
		{"0", "67108864", 0, true},
		{"48MiB", "67108864", 48 << 20, true},
		{"bogus", "", 0, false},
	} {
		got, err := runtimeConfig{memoryLimit: tc.flag, readFile: cgroup(tc.cgroup)}.softMemoryLimit()
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("--memory-limit %q, cgroup %q: %d, %v; want %d, ok=%v", tc.flag, tc.cgroup, got, err, tc.want, tc.ok)
		}
	}
}
