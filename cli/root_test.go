package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/version"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := NewRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestEveryCommandHasHelpWithExamples(t *testing.T) {
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" || c.HasParent() && c.Parent().Name() == "completion" {
			return
		}
		if c.Short == "" || c.Example == "" {
			t.Errorf("%q lacks Short or Example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(NewRootCommand())

	out, err := run(t, "--help")
	if err != nil || !strings.Contains(out, "service mesh") || !strings.Contains(out, "trellis demo") {
		t.Errorf("root help = %q, %v", out, err)
	}
	out, err = run(t, "demo", "--help")
	if err != nil || !strings.Contains(out, "--fail") || !strings.Contains(out, "books=0.3") {
		t.Errorf("demo help = %q, %v", out, err)
	}
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "trellis "+version.Version+" (") {
		t.Errorf("version = %q, %v", out, err)
	}
	out, err = run(t, "version", "--short")
	if err != nil || out != version.Version+"\n" {
		t.Errorf("version --short = %q, %v", out, err)
	}
	if _, err := run(t, "version", "extra"); err == nil {
		t.Error("version accepted an argument")
	}
}

func TestDemoRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"demo", "--fail", "books"},
		{"demo", "--fail", "db=0.1"},
		{"demo", "--rps", "0"},
		{"demo", "-o", "yaml", "--bin-dir", "/nonexistent"},
	} {
		if _, err := run(t, args...); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
