package kubeconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const validKubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`

// TestErrorsNameTheFileAndTheVariable: each way of not finding a cluster
// names the file tried and where its name came from.
func TestErrorsNameTheFileAndTheVariable(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte(validKubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("clusters: [oops"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	home := filepath.Join(dir, "home") // no .kube/config in it
	for _, tt := range []struct {
		name, flag, env string
		want            []string // substrings; nil: no error
	}{
		{"flag, missing file", missing, "", []string{missing, "does not exist", "--kubeconfig"}},
		{"$KUBECONFIG, missing file", "", missing, []string{missing, "does not exist", "$KUBECONFIG"}},
		{"default, missing file", "", "", []string{filepath.Join(home, ".kube", "config"), "neither --kubeconfig nor $KUBECONFIG"}},
		{"a directory", dir, "", []string{dir, "--kubeconfig"}},
		{"not YAML", garbage, "", []string{garbage, "--kubeconfig"}},
		{"$KUBECONFIG with one good file of two", "", missing + string(filepath.ListSeparator) + good, nil},
		{"flag, good", good, "", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HOME", home)
			t.Setenv(EnvVar, tt.env)
			cfg, err := Load(tt.flag, "")
			if tt.want == nil {
				if err != nil || cfg.Host != "https://127.0.0.1:6443" {
					t.Fatalf("Load = %v, %v", cfg, err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "KUBERNETES_MASTER") {
				t.Errorf("error %q speaks of KUBERNETES_MASTER", err)
			}
		})
	}
}
