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

func TestVersionClient(t *testing.T) {
	out, err := run(t, "version", "--client")
	if err != nil || !strings.HasPrefix(out, "Client version: "+version.Version+" (") || strings.Contains(out, "Control plane") {
		t.Errorf("version --client = %q, %v", out, err)
	}
	out, err = run(t, "version", "--client", "--short")
	if err != nil || out != version.Version+"\n" {
		t.Errorf("version --client --short = %q, %v", out, err)
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

// TestOutputConvention: every command with -o offers text (or its
// table) and json, and its shell completion lists the values. The
// commands that print data are listed so one cannot lose its -o.
func TestOutputConvention(t *testing.T) {
	mustHave := map[string]bool{"trellis version": true, "trellis check": true, "trellis identity inspect": true, "trellis identity bundle list": true,
		"trellis demo": true, "trellis identity verify": true, "trellis identity rotate": true, "trellis edges": true,
		"trellis top": true, "trellis diagnostics proxy-metrics": true, "trellis diagnostics controller-metrics": true,
		"trellis diagnostics endpoints": true, "trellis diagnostics policy": true}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		f := c.Flags().Lookup("output")
		if f == nil {
			if mustHave[c.CommandPath()] {
				t.Errorf("%s has no -o", c.CommandPath())
			}
			return
		}
		if f.Shorthand != "o" {
			t.Errorf("%s: --output has shorthand %q, want o", c.CommandPath(), f.Shorthand)
		}
		if c.CommandPath() == "trellis identity create-anchor" || c.CommandPath() == "trellis identity create-issuer" {
			return // -o picks what is written, not a format of printed data
		}
		comp, _ := c.GetFlagCompletionFunc("output")
		if comp == nil {
			t.Errorf("%s: no completion for -o", c.CommandPath())
			return
		}
		vals, _ := comp(c, nil, "")
		if got := strings.Join(vals, " "); !strings.Contains(got, "json") || !strings.Contains(got, "yaml") {
			t.Errorf("%s: -o completes to %q", c.CommandPath(), got)
		}
	}
	walk(NewRootCommand())
}

// TestClusterNameCompletion: every command taking -n completes namespaces
// (create-issuer's --namespace names a Secret it prints, and run's a local
// mesh's: no cluster to ask), and the commands taking a workload complete it.
func TestClusterNameCompletion(t *testing.T) {
	offline := map[string]bool{"trellis identity create-issuer": true, "trellis run": true}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.Flags().Lookup("namespace") == nil || offline[c.CommandPath()] {
			return
		}
		if comp, _ := c.GetFlagCompletionFunc("namespace"); comp == nil {
			t.Errorf("%s: no completion for --namespace", c.CommandPath())
		}
	}
	root := NewRootCommand()
	walk(root)
	authz, _, err := root.Find([]string{"authz"})
	if err != nil || authz.ValidArgsFunction == nil {
		t.Errorf("trellis authz: no completion of WORKLOAD (%v)", err)
	}
	explain, _, err := root.Find([]string{"policy", "explain"})
	if err != nil {
		t.Fatal(err)
	}
	if comp, _ := explain.GetFlagCompletionFunc("to"); comp == nil {
		t.Error("trellis policy explain: no completion of --to")
	}
}
