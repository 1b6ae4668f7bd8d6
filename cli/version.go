package cli

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/check"
	"github.com/trellis-mesh/trellis/cli/checkcmd"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/version"
)

// versionDoc is the -o json|yaml document of `trellis version`.
type versionDoc struct {
	Client       clientVersion           `json:"client"`
	ControlPlane *check.ControlPlaneInfo `json:"controlPlane,omitempty"`
	// ControlPlaneError says why the control plane's version is unknown
	// (no cluster, no installation); the command still succeeds, as the
	// client's version is known.
	ControlPlaneError string `json:"controlPlaneError,omitempty"`
}

type clientVersion struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// controlPlaneTimeout bounds the lookup of the controller Deployment.
const controlPlaneTimeout = 10 * time.Second

func newVersionCommand(build checkcmd.EnvFunc) *cobra.Command {
	var (
		short, client       bool
		kubeconfig, context string
		out                 output.Flag
	)
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the versions of trellis and of the control plane",
		Long: `Print the version of this trellis binary (with the Go version and platform
it was built for) and of the control plane installed in the cluster of the
kubeconfig (the tag of the trellis-controller Deployment's image).
When the cluster cannot be read the client's version is printed all the
same, with the reason.`,
		Example: `  trellis version
  trellis version --client --short
  trellis version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc := versionDoc{Client: clientVersion{version.Version, runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}}
			if !client {
				cp, err := controlPlaneVersion(cmd.Context(), build, kubeconfig, context)
				if err != nil {
					doc.ControlPlaneError = err.Error()
				} else {
					doc.ControlPlane = &cp
				}
			}
			return out.Print(cmd.OutOrStdout(), doc, func(w io.Writer) error { return writeVersion(w, doc, short, client) })
		},
	}
	f := cmd.Flags()
	f.BoolVar(&short, "short", false, "print only the version numbers")
	f.BoolVar(&client, "client", false, "print only the client's version (no cluster is read)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "path to the kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&context, "context", "", "kubeconfig context to use (default the current context)")
	out.Register(cmd, output.Text, output.JSON, output.YAML)
	return cmd
}

func controlPlaneVersion(ctx context.Context, build checkcmd.EnvFunc, kubeconfig, kubeContext string) (check.ControlPlaneInfo, error) {
	env, err := build(kubeconfig, kubeContext)
	if err != nil {
		return check.ControlPlaneInfo{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, controlPlaneTimeout)
	defer cancel()
	return check.ControlPlane(ctx, env)
}

func writeVersion(w io.Writer, doc versionDoc, short, client bool) error {
	c := doc.Client
	if short && client {
		_, err := fmt.Fprintln(w, c.Version)
		return err
	}
	if short {
		fmt.Fprintf(w, "Client: %s\n", c.Version)
	} else {
		fmt.Fprintf(w, "Client version: %s (%s, %s)\n", c.Version, c.GoVersion, c.Platform)
	}
	if client {
		return nil
	}
	label := "Control plane version: "
	if short {
		label = "Control plane: "
	}
	var err error
	switch cp := doc.ControlPlane; {
	case cp != nil && short:
		_, err = fmt.Fprintf(w, "%s%s\n", label, cp.Version)
	case cp != nil:
		_, err = fmt.Fprintf(w, "%s%s (%s in %s, %d of %d replicas ready)\n", label, cp.Version, cp.Image, cp.Namespace, cp.Ready, cp.Replicas)
	default:
		_, err = fmt.Fprintf(w, "%sunavailable: %s\n", label, doc.ControlPlaneError)
	}
	return err
}
