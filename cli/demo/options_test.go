package demo

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseFail(t *testing.T) {
	tests := []struct {
		in      string
		svc     string
		rate    float64
		wantErr string
	}{
		{"books=0.3", "books", 0.3, ""},
		{" web = 1 ", "web", 1, ""},
		{"authors=0", "authors", 0, ""},
		{"books=30%", "books", 0.3, ""},
		{"books=100%", "books", 1, ""},
		{"books", "", 0, "want SERVICE=RATE"},
		{"=0.3", "", 0, "not a DNS label"},
		{"Books=0.3", "", 0, "not a DNS label"},
		{"books=", "", 0, "not a number"},
		{"books=abc", "", 0, "not a number"},
		{"books=NaN", "", 0, "not a number"},
		{"books=Inf", "", 0, "not a number"},
		{"books=1.5", "", 0, "between 0 and 1"},
		{"books=-0.1", "", 0, "between 0 and 1"},
		{"books=101%", "", 0, "between 0 and 1"},
		{"books=0.3=0.4", "", 0, "not a number"},
	}
	for _, tt := range tests {
		svc, rate, err := ParseFail(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseFail(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || svc != tt.svc || math.Abs(rate-tt.rate) > 1e-12 {
			t.Errorf("ParseFail(%q) = %q, %v, %v; want %q, %v", tt.in, svc, rate, err, tt.svc, tt.rate)
		}
	}
}

func TestParseFails(t *testing.T) {
	got, err := ParseFails([]string{"books=0.3", "authors=0.1"})
	if err != nil || len(got) != 2 || got["books"] != 0.3 || got["authors"] != 0.1 {
		t.Errorf("ParseFails = %v, %v", got, err)
	}
	if _, err := ParseFails([]string{"books=0.3", "books=0.1"}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := ParseFails([]string{"db=0.3"}); err == nil || !strings.Contains(err.Error(), "unknown service") {
		t.Errorf("unknown: %v", err)
	}
}

func FuzzParseFail(f *testing.F) {
	for _, s := range []string{"books=0.3", "web=100%", "x=", "=", "a=1e308", "a=0x1p-2", "a=-0", "books=30%%", "\xff=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		svc, rate, err := ParseFail(s)
		if err != nil {
			if svc != "" || rate != 0 {
				t.Errorf("error with a result: %q %v", svc, rate)
			}
			return
		}
		if !dnsLabel.MatchString(svc) {
			t.Errorf("accepted service %q", svc)
		}
		if math.IsNaN(rate) || rate < 0 || rate > 1 {
			t.Errorf("accepted rate %v", rate)
		}
	})
}

func writeExe(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFindBinaries(t *testing.T) {
	all := []string{ControllerBinary, ProxyBinary, AppBinary}

	beside := t.TempDir()
	self := writeExe(t, beside, "trellis")
	for _, n := range all {
		writeExe(t, beside, n)
	}
	onPath := t.TempDir()
	for _, n := range all {
		writeExe(t, onPath, n)
	}
	explicit := t.TempDir()
	t.Setenv("PATH", onPath)

	got, err := FindBinaries("", self)
	if err != nil || got[ProxyBinary] != filepath.Join(beside, ProxyBinary) {
		t.Errorf("beside self: %v, %v", got, err)
	}
	got, err = FindBinaries("", filepath.Join(t.TempDir(), "trellis"))
	if err != nil || got[AppBinary] != filepath.Join(onPath, AppBinary) {
		t.Errorf("from $PATH: %v, %v", got, err)
	}

	// --bin-dir is the only place looked at when given.
	writeExe(t, explicit, ControllerBinary)
	if err := os.WriteFile(filepath.Join(explicit, ProxyBinary), []byte("not executable"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = FindBinaries(explicit, self)
	if err == nil {
		t.Fatal("incomplete --bin-dir accepted")
	}
	for _, want := range []string{ProxyBinary, AppBinary, "make build", "--bin-dir " + explicit} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), ControllerBinary) {
		t.Errorf("error %q names a binary that was found", err)
	}

	t.Setenv("PATH", t.TempDir())
	_, err = FindBinaries("", filepath.Join(t.TempDir(), "trellis"))
	if err == nil || !strings.Contains(err.Error(), "$PATH") || !strings.Contains(err.Error(), ControllerBinary) {
		t.Errorf("nothing anywhere: %v", err)
	}
}
