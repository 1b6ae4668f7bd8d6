package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseProcessMetrics(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		rss, g  float64
		wantErr bool
	}{
		{"both", "# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 42\nprocess_resident_memory_bytes 1.2345e+07\n", 1.2345e7, 42, false},
		{"labelled look-alikes ignored", "go_goroutines_total 1\ngo_goroutines{a=\"b\"} 9\ngo_goroutines 3\nprocess_resident_memory_bytes 10\n", 10, 3, false},
		{"missing rss", "go_goroutines 3\n", 0, 0, true},
		{"empty", "", 0, 0, true},
		{"bad value", "go_goroutines x\nprocess_resident_memory_bytes 10\n", 0, 0, true},
	}
	for _, tt := range tests {
		rss, g, err := parseProcessMetrics(strings.NewReader(tt.in))
		if (err != nil) != tt.wantErr || rss != tt.rss || g != tt.g {
			t.Errorf("%s: got %v, %v, %v; want %v, %v, error %v", tt.name, rss, g, err, tt.rss, tt.g, tt.wantErr)
		}
	}
}

func TestLeastSquaresSlope(t *testing.T) {
	if got := leastSquaresSlope([]float64{0, 1, 2, 3}, []float64{5, 7, 9, 11}); got != 2 {
		t.Errorf("slope of y=5+2x = %v, want 2", got)
	}
	if got := leastSquaresSlope([]float64{1, 1}, []float64{1, 9}); got != 0 {
		t.Errorf("degenerate x: slope %v, want 0", got)
	}
}

// soakRun builds samples every 10 s whose client RSS and goroutines
// follow the given functions of the sample index.
func soakRun(n int, rssMiB func(i int) float64, goroutines func(i int) float64) []soakSample {
	var out []soakSample
	for i := range n {
		out = append(out, soakSample{at: time.Duration(i+1) * 10 * time.Second, requests: 100,
			rss: [2]float64{rssMiB(i) * (1 << 20), 20 << 20}, goroutines: [2]float64{goroutines(i), 22}})
	}
	return out
}

func TestCheckSoak(t *testing.T) {
	o := soakOptions{warmup: 15 * time.Second, slopeMiBPerHour: 1, noiseMiB: 2, maxGoroutineGrowth: 10}
	flat := func(int) float64 { return 20 }
	tests := []struct {
		name    string
		samples []soakSample
		want    string // "" passes
	}{
		{"flat", soakRun(6, func(i int) float64 { return 20 + float64(i%2) }, flat), ""},
		{"warm-up growth ignored", soakRun(6, func(i int) float64 { return []float64{5, 20, 20, 20, 20, 20}[i] }, flat), ""},
		{"rss leak", soakRun(6, func(i int) float64 { return 20 + float64(i) }, flat), "client-proxy RSS rose"},
		{"goroutine leak", soakRun(6, flat, func(i int) float64 { return 40 + 5*float64(i) }), "client-proxy goroutines grew"},
		{"too short", soakRun(2, flat, flat), "only 1 samples"},
	}
	for _, tt := range tests {
		err := checkSoak(io.Discard, o, tt.samples)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestParseSoakFlags(t *testing.T) {
	o, err := parseSoakFlags([]string{"-duration", "60s"}, io.Discard)
	if err != nil || o.warmup != 15*time.Second || o.rate != 2000 {
		t.Errorf("-duration 60s: %+v, %v; want warm-up 15s and rate 2000", o, err)
	}
	for _, bad := range [][]string{{"-duration", "20s"}, {"-rate", "0"}, {"-interval", "0s"}, {"extra"}} {
		if _, err := parseSoakFlags(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseKinds(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"all", allKinds, false},
		{"idle, http", []string{kindHTTP, kindIdle}, false},
		{"churn", []string{kindChurnHTTP, kindChurnTCP}, false},
		{"", nil, true},
		{"bulk", nil, true},
	}
	for _, tt := range tests {
		got, err := parseKinds(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parseKinds(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
