package main

import (
	"io"
	"slices"
	"testing"
	"time"
)

func TestParseRates(t *testing.T) {
	tests := []struct {
		in      string
		want    []float64
		wantErr bool
	}{
		{"1000,4000", []float64{1000, 4000}, false},
		{" 1000 , 2500.5 ", []float64{1000, 2500.5}, false},
		{"", nil, false},
		{"1000,,4000", []float64{1000, 4000}, false},
		{"0", nil, true},
		{"-5", nil, true},
		{"1e7", nil, true},
		{"NaN", nil, true},
		{"fast", nil, true},
	}
	for _, tt := range tests {
		got, err := parseRates(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseRates(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("parseRates(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParsePaths(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"direct,mesh,nginx", []string{"direct", "mesh", "nginx"}, false},
		{"nginx, direct", []string{"direct", "nginx"}, false}, // canonical order
		{"mesh,mesh", []string{"mesh"}, false},
		{"", nil, true},
		{"direct,envoy", nil, true},
	}
	for _, tt := range tests {
		got, err := parsePaths(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parsePaths(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("parsePaths(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name         string
		args         []string
		wantDuration time.Duration
		wantWarmup   time.Duration
		wantErr      bool
	}{
		{"defaults", nil, 20 * time.Second, 5 * time.Second, false},
		{"quick", []string{"-quick"}, 2 * time.Second, time.Second, false},
		{"quick keeps explicit duration", []string{"-quick", "-duration", "7s"}, 7 * time.Second, time.Second, false},
		{"zero duration", []string{"-duration", "0s"}, 0, 0, true},
		{"no passes", []string{"-passes", "0"}, 0, 0, true},
		{"bad path", []string{"-paths", "istio"}, 0, 0, true},
		{"stray argument", []string{"now"}, 0, 0, true},
		{"zero gomaxprocs", []string{"-proxy-gomaxprocs", "0"}, 0, 0, true},
		{"unknown scenario", []string{"-scenarios", "bulk"}, 0, 0, true},
		{"zero churn rate", []string{"-churn-rate", "0"}, 0, 0, true},
		{"zero idle conns", []string{"-idle-conns", "0"}, 0, 0, true},
		{"zero extra duration", []string{"-extra-duration", "0s"}, 0, 0, true},
	}
	for _, tt := range tests {
		o, err := parseFlags(tt.args, io.Discard)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err = %v, wantErr %v", tt.name, err, tt.wantErr)
			continue
		}
		if err == nil && (o.duration != tt.wantDuration || o.warmup != tt.wantWarmup) {
			t.Errorf("%s: duration %v warmup %v, want %v and %v", tt.name, o.duration, o.warmup, tt.wantDuration, tt.wantWarmup)
		}
	}
}

func TestQuickShortensExtraCells(t *testing.T) {
	o, err := parseFlags([]string{"-quick", "-scenarios", "churn"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.extraDuration != 2*time.Second || o.extraWarmup != time.Second || !slices.Equal(o.kinds, []string{kindChurnHTTP, kindChurnTCP}) {
		t.Errorf("-quick -scenarios churn: extra %v/%v, kinds %v; want 2s/1s and both churn kinds", o.extraDuration, o.extraWarmup, o.kinds)
	}
	o, err = parseFlags(nil, io.Discard)
	if err != nil || o.extraDuration != 8*time.Second || !slices.Equal(o.kinds, allKinds) {
		t.Errorf("defaults: extra %v, kinds %v, err %v; want 8s and every kind", o.extraDuration, o.kinds, err)
	}
	if got := len(scenarios(o)); got != 8 {
		t.Errorf("default run: %d scenarios, want 8 (http x2, grpc, big, opaque, churn x2, idle)", got)
	}
}

func FuzzParseRates(f *testing.F) {
	f.Add("1000,4000")
	f.Add("1e3, 2.5")
	f.Add(",,,")
	f.Fuzz(func(t *testing.T, s string) {
		rates, err := parseRates(s)
		if err != nil {
			return
		}
		for _, r := range rates {
			if !(r > 0 && r <= 1e6) {
				t.Fatalf("parseRates(%q) accepted %v", s, r)
			}
		}
	})
}

func FuzzParsePaths(f *testing.F) {
	f.Add("direct,mesh,nginx")
	f.Add("nginx")
	f.Fuzz(func(t *testing.T, s string) {
		paths, err := parsePaths(s)
		if err == nil && len(paths) == 0 {
			t.Fatalf("parsePaths(%q) returned no path and no error", s)
		}
	})
}
