// Package output is the one -o convention of every trellis command that
// prints data (kubectl's and Linkerd's model): text for people, json and
// yaml of the same document for programs, wide for tables with more
// columns; and, with -o json or yaml, an error is a document on stdout too
// ({"error": {...}}), so a script never reads nothing.
//
// A command adopts it in three lines:
//
//	var out output.Flag
//	out.Register(cmd, output.Text, output.JSON, output.YAML) // -o, its completion and validation
//	...
//	return out.Print(cmd.OutOrStdout(), doc, func(w io.Writer) error { return printText(w, doc) })
//
// and main reports a failure with output.ReportError, which finds the -o of
// the command that failed.
package output

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// Format is a value of -o.
type Format string

// The formats. Text is the default; Wide is a Text table with more columns.
const (
	Text Format = "text"
	Wide Format = "wide"
	JSON Format = "json"
	YAML Format = "yaml"
)

// FlagName is the long name of the flag ("o" is its shorthand).
const FlagName = "output"

// Flag is a command's -o value with the formats the command offers.
type Flag struct {
	value   string
	formats []Format
	aliases map[string]Format
}

// Alias accepts old as another name of format to (an earlier spelling
// scripts may use); it is not offered by completion.
func (f *Flag) Alias(old string, to Format) {
	if f.aliases == nil {
		f.aliases = map[string]Format{}
	}
	f.aliases[old] = to
}

// Register adds -o/--output to cmd with the given formats (the first is
// the default), completion of those values, and a check before the command
// runs that the value is one of them.
func (f *Flag) Register(cmd *cobra.Command, formats ...Format) {
	if len(formats) == 0 {
		formats = []Format{Text, JSON, YAML}
	}
	f.formats = formats
	names := f.names()
	cmd.Flags().StringVarP(&f.value, FlagName, "o", string(formats[0]), "output format: "+strings.Join(names, ", "))
	_ = cmd.RegisterFlagCompletionFunc(FlagName, func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if err := f.Validate(); err != nil {
			return err
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

// Validate says which values are allowed when -o is not one of them.
func (f *Flag) Validate() error {
	if to, ok := f.aliases[f.value]; ok {
		f.value = string(to)
	}
	if slices.Contains(f.formats, Format(f.value)) {
		return nil
	}
	return fmt.Errorf("-o %q: want one of %s", f.value, strings.Join(f.names(), ", "))
}

// Format returns the chosen format.
func (f *Flag) Format() Format { return Format(f.value) }

// Structured is true for json and yaml.
func (f *Flag) Structured() bool { return IsStructured(f.Format()) }

// Print writes doc as JSON or YAML, or calls text for text and wide.
func (f *Flag) Print(w io.Writer, doc any, text func(io.Writer) error) error {
	return Write(w, f.Format(), doc, text)
}

func (f *Flag) names() []string {
	names := make([]string, len(f.formats))
	for i, v := range f.formats {
		names[i] = string(v)
	}
	return names
}

// IsStructured is true for the formats meant for programs.
func IsStructured(f Format) bool { return f == JSON || f == YAML }

// Write writes doc in format f; text and wide call text.
func Write(w io.Writer, f Format, doc any, text func(io.Writer) error) error {
	switch f {
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			return fmt.Errorf("write json: %w", err)
		}
		return nil
	case YAML:
		data, err := yaml.Marshal(doc)
		if err != nil {
			return fmt.Errorf("write yaml: %w", err)
		}
		_, err = w.Write(data)
		return err
	default:
		return text(w)
	}
}

// ErrorDoc is the document printed on stdout for a failure under -o json
// or yaml.
type ErrorDoc struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody names the command that failed and says why.
type ErrorBody struct {
	Command string `json:"command"`
	Message string `json:"message"`
}

// Reported marks an error whose command already printed a document that
// says why (a failed check): ReportError then prints no second document.
type Reported struct{ Err error }

func (r Reported) Error() string { return r.Err.Error() }
func (r Reported) Unwrap() error { return r.Err }

// ReportError prints err for the command that failed: always one line on
// stderr, and with -o json or yaml also an ErrorDoc on stdout, unless the
// command already printed its own document (Reported).
func ReportError(cmd *cobra.Command, err error, stdout, stderr io.Writer) {
	fmt.Fprintf(stderr, "trellis: %v\n", err)
	if cmd == nil || errors.As(err, new(Reported)) {
		return
	}
	fl := cmd.Flags().Lookup(FlagName)
	if fl == nil || !IsStructured(Format(fl.Value.String())) {
		return
	}
	doc := ErrorDoc{Error: ErrorBody{Command: cmd.CommandPath(), Message: err.Error()}}
	_ = Write(stdout, Format(fl.Value.String()), doc, nil)
}
