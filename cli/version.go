package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/version"
)

func newVersionCommand() *cobra.Command {
	var short bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of trellis",
		Long:  "Print the version of this trellis binary, with the Go version and platform it was built for.",
		Example: `  trellis version
  trellis version --short`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if short {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), version.Version)
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "trellis %s\n", version.String())
			return err
		},
	}
	cmd.Flags().BoolVar(&short, "short", false, "print only the version")
	return cmd
}
