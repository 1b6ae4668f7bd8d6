package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCAFlagErrors: the CA flags are checked before anything starts.
func TestCAFlagErrors(t *testing.T) {
	dir := t.TempDir()
	meshPath := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(meshPath, []byte(mesh), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"neither", nil, "at least one of the flags in the group [state-dir issuer-dir] is required"},
		{"both", []string{"--state-dir", dir, "--issuer-dir", dir}, "none of the others can be"},
		{"auto-renew with issuer dir", []string{"--issuer-dir", dir, "--auto-renew-issuer"}, "--state-dir only"},
		{"issuer dir without the Secret files", []string{"--issuer-dir", dir}, "tls.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newRootCmd()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(append([]string{"local", "--config", meshPath, "--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, tt.args...))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
