package policycmd

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestCompleteWorkloadsLocal: with --config, `authz -n NS <TAB>` and
// `policy explain --to <TAB>` offer the store file's service accounts of NS,
// through cobra's real completion request.
func TestCompleteWorkloadsLocal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(path, []byte(store), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"authz", "-n", "demo", "--config", path, ""},
		{"policy", "explain", "-n", "demo", "--config", path, "--to", ""},
	} {
		root := &cobra.Command{Use: "trellis"}
		root.AddCommand(NewAuthz(), NewPolicy())
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(append([]string{cobra.ShellCompRequestCmd}, args...))
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(out.String()); len(got) < 2 || got[0] != "authors" || got[1] != "books" {
			t.Errorf("%v: completion %q, want authors books", args, out.String())
		}
	}
}
