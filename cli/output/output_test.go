package output

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

type doc struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// command is a small command using Flag as the real ones do; it fails
// with fail when set.
func command(fail error, formats ...Format) (*cobra.Command, *bytes.Buffer) {
	var out Flag
	var buf bytes.Buffer
	cmd := &cobra.Command{Use: "thing", SilenceUsage: true, RunE: func(cmd *cobra.Command, _ []string) error {
		if fail != nil {
			return fail
		}
		return out.Print(cmd.OutOrStdout(), doc{"a", 2}, func(w io.Writer) error {
			_, err := io.WriteString(w, "a has 2 ("+string(out.Format())+")\n")
			return err
		})
	}}
	out.Register(cmd, formats...)
	cmd.SetOut(&buf)
	cmd.SetErr(io.Discard)
	return cmd, &buf
}

func TestFormats(t *testing.T) {
	for _, tt := range []struct {
		args  []string
		check func(string) error
	}{
		{nil, want("a has 2 (text)\n")},
		{[]string{"-o", "wide"}, want("a has 2 (wide)\n")},
		{[]string{"-o", "json"}, func(s string) error {
			var d doc
			if err := json.Unmarshal([]byte(s), &d); err != nil || d != (doc{"a", 2}) {
				return errors.New("bad json: " + s)
			}
			return nil
		}},
		{[]string{"--output=yaml"}, func(s string) error {
			var d doc
			if err := yaml.UnmarshalStrict([]byte(s), &d); err != nil || d != (doc{"a", 2}) || strings.HasPrefix(s, "{") {
				return errors.New("bad yaml: " + s)
			}
			return nil
		}},
	} {
		cmd, buf := command(nil, Text, Wide, JSON, YAML)
		cmd.SetArgs(tt.args)
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if err := tt.check(buf.String()); err != nil {
			t.Errorf("%v: %v", tt.args, err)
		}
	}
}

func want(s string) func(string) error {
	return func(got string) error {
		if got != s {
			return errors.New("got " + got)
		}
		return nil
	}
}

func TestUnofferedFormatRefused(t *testing.T) {
	cmd, buf := command(nil, Text, JSON)
	cmd.SetArgs([]string{"-o", "wide"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "want one of text, json") || buf.Len() != 0 {
		t.Fatalf("err = %v, out %q", err, buf)
	}
}

func TestCompletionOffersTheFormats(t *testing.T) {
	cmd, buf := command(nil, Text, Wide, JSON, YAML)
	root := &cobra.Command{Use: "trellis"}
	root.AddCommand(cmd)
	root.SetArgs([]string{cobra.ShellCompRequestCmd, "thing", "-o", ""})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(buf.String()); len(got) < 4 || strings.Join(got[:4], " ") != "text wide json yaml" {
		t.Errorf("completion = %q", buf.String())
	}
}

func TestReportError(t *testing.T) {
	boom := errors.New("cluster unreachable")
	for _, tt := range []struct {
		name, format string
		err          error
		wantDoc      bool
	}{
		{"text: stderr only", "text", boom, false},
		{"json: a document on stdout", "json", boom, true},
		{"yaml: a document on stdout", "yaml", boom, true},
		{"reported: no second document", "json", Reported{boom}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd, _ := command(tt.err)
			root := &cobra.Command{Use: "trellis", SilenceErrors: true, SilenceUsage: true}
			root.AddCommand(cmd)
			root.SetArgs([]string{"thing", "-o", tt.format})
			failed, err := root.ExecuteC()
			var stdout, stderr bytes.Buffer
			ReportError(failed, err, &stdout, &stderr)
			if stderr.String() != "trellis: cluster unreachable\n" {
				t.Errorf("stderr = %q", stderr.String())
			}
			if !tt.wantDoc {
				if stdout.Len() != 0 {
					t.Errorf("stdout = %q, want nothing", stdout.String())
				}
				return
			}
			var d ErrorDoc
			if err := yaml.UnmarshalStrict(stdout.Bytes(), &d); err != nil {
				t.Fatalf("stdout %q: %v", stdout.String(), err)
			}
			if d.Error.Command != "trellis thing" || d.Error.Message != "cluster unreachable" {
				t.Errorf("doc = %+v", d)
			}
		})
	}
}

func TestAliasIsTheFormatItNames(t *testing.T) {
	var out Flag
	var got Format
	cmd := &cobra.Command{Use: "thing", RunE: func(*cobra.Command, []string) error { got = out.Format(); return nil }}
	out.Register(cmd, Text, JSON)
	out.Alias("table", Text)
	cmd.SetArgs([]string{"-o", "table"})
	if err := cmd.Execute(); err != nil || got != Text {
		t.Fatalf("-o table: %v, format %q, want text", err, got)
	}
	comp, _ := cmd.GetFlagCompletionFunc(FlagName)
	if vals, _ := comp(cmd, nil, ""); strings.Contains(strings.Join(vals, " "), "table") {
		t.Errorf("the alias is offered: %q", vals)
	}
}
