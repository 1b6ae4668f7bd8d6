package policycmd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/storepolicy"
)

// validateDoc is the -o json|yaml document of policy validate.
type validateDoc struct {
	Files []validatedFile `json:"files"`
}

type validatedFile struct {
	File string `json:"file"`
	storepolicy.Checked
}

func newValidate() *cobra.Command {
	var (
		files []string
		out   output.Flag
	)
	cmd := &cobra.Command{
		Use:   "validate -f FILE [-f FILE...]",
		Short: "Check policy manifests offline and report every problem at once",
		Long: `Check the Servers, AuthorizationPolicies, RateLimits and HTTPRoutes of
manifests before applying them, without a cluster: every unknown field
(a typo such as "identitees") and every bad value (an identity that is not
a SPIFFE ID, a CIDR, a protocol, an access policy, a target kind), each
named with its object and field. Other kinds are skipped.

The API server refuses such an object too, but reports only the first
unknown field and none of the other errors until it is fixed; this
reports them all. Targets are not looked up (they may exist on the
cluster already). Exit 1 when there is any problem.`,
		Example: `  # Before kubectl apply
  trellis policy validate -f policies.yaml && kubectl apply --server-side -f policies.yaml

  # What suggest writes, as JSON
  trellis policy suggest -n shop | trellis policy validate -f - -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return errors.New("-f FILE is required (- for standard input)")
			}
			doc, problems, err := validateFiles(files, cmd.InOrStdin())
			if err != nil {
				return err
			}
			if err := out.Print(cmd.OutOrStdout(), doc, func(w io.Writer) error { return writeValidation(w, doc) }); err != nil {
				return err
			}
			if problems > 0 {
				// The document (or the text) already lists them.
				return output.Reported{Err: fmt.Errorf("%d problem(s) in %d file(s)", problems, len(files))}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file (YAML or JSON, several documents allowed); - for standard input (repeatable)")
	out.Register(cmd, output.Text, output.JSON, output.YAML)
	return cmd
}

func validateFiles(files []string, stdin io.Reader) (validateDoc, int, error) {
	doc := validateDoc{Files: []validatedFile{}}
	problems := 0
	for _, name := range files {
		r := stdin
		if name != "-" {
			data, err := os.ReadFile(name)
			if err != nil {
				return doc, 0, err
			}
			r = bytes.NewReader(data)
		}
		c, err := storepolicy.ValidateManifests(r)
		if err != nil {
			return doc, 0, fmt.Errorf("%s: %w", name, err)
		}
		problems += len(c.Problems)
		doc.Files = append(doc.Files, validatedFile{File: name, Checked: c})
	}
	return doc, problems, nil
}

func writeValidation(w io.Writer, doc validateDoc) error {
	for _, f := range doc.Files {
		for _, p := range f.Problems {
			fmt.Fprintf(w, "%s: document %d (%s): %s\n", f.File, p.Document, p.Object, p.Message)
		}
		for _, s := range f.Skipped {
			fmt.Fprintf(w, "%s: %s: skipped (not a policy object)\n", f.File, s)
		}
		if len(f.Problems) == 0 {
			fmt.Fprintf(w, "%s: %d policy object(s), no problem\n", f.File, f.Objects)
		} else {
			fmt.Fprintf(w, "%s: %d problem(s) in %d policy object(s)\n", f.File, len(f.Problems), f.Objects)
		}
	}
	return nil
}
