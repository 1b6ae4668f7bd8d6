package main

import "testing"

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true},
		{"0", 0, true},
		{"12MiB", 12 << 20, true},
		{"512KiB", 512 << 10, true},
		{"1GiB", 1 << 30, true},
		{"4096", 4096, true},
		{"100B", 100, true},
		{" 8 MiB ", 8 << 20, true},
		{"-1", 0, false},
		{"12MB", 0, false},
		{"MiB", 0, false},
		{"99999999999GiB", 0, false},
	} {
		got, err := parseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"12MiB", "0", "", "1GiB", "-5KiB", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseBytes(s)
		if err == nil && n < 0 {
			t.Fatalf("parseBytes(%q) = %d", s, n)
		}
	})
}

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
