package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/redirect"
)

func TestDryRunIPv6(t *testing.T) {
	for mode, want := range map[string]bool{"false": false, "auto": true, "true": true} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"--dry-run", "--ipv6", mode}, redirect.Exec{}, &out, &errb); code != 0 {
			t.Fatalf("--ipv6 %s: exit %d: %s", mode, code, errb.String())
		}
		if got := strings.Contains(out.String(), "-d ::1/128"); got != want {
			t.Errorf("--ipv6 %s: ipv6 rules rendered = %v, want %v", mode, got, want)
		}
	}
}

func TestRunFlags(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"dry run", []string{"--dry-run", "--skip-outbound-ports", "25", "--ipv6", "false"}, 0,
			"-A TRELLIS_OUTPUT -p tcp -m tcp --dport 25 -j RETURN", ""},
		{"bad skip list", []string{"--skip-inbound-ports", "4143,x"}, 2, "", "--skip-inbound-ports"},
		{"port out of range", []string{"--outbound-port", "70000"}, 2, "", "1-65535"},
		{"same ports", []string{"--outbound-port", "4143"}, 2, "", "both 4143"},
		{"dry run and check", []string{"--dry-run", "--check"}, 2, "", "exclude"},
		{"bad check method", []string{"--check", "--check-method", "guess"}, 2, "", "check-method"},
		{"stray argument", []string{"now"}, 2, "", "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, redirect.Exec{}, &out, &errb)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.wantCode, errb.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout %q lacks %q", out.String(), tt.wantOut)
			}
			if !strings.Contains(errb.String(), tt.wantErr) {
				t.Errorf("stderr %q lacks %q", errb.String(), tt.wantErr)
			}
		})
	}
}
