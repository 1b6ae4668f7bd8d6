package main

import "testing"

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
