package identitycmd

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/pki"
)

func newBundleCommand(now func() time.Time) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Add, remove and list the anchors of a trust bundle file",
		Long: `A trust bundle is a PEM file of the root anchors proxies trust. During an
anchor rotation it holds the old and the new anchor. These commands edit it
safely: atomic writes, no duplicates (by SHA-256 fingerprint), only CA
certificates, never an empty bundle.

The bundle fingerprint printed by list is what proxies report in
trellis_identity_trust_bundle_info{fingerprint}.`,
		Example: `  trellis identity bundle add --bundle ./bundle.crt ./new/anchor.crt
  trellis identity bundle list --bundle ./bundle.crt
  trellis identity bundle remove --bundle ./bundle.crt ./old/anchor.crt`,
	}
	cmd.AddCommand(newBundleAddCommand(now), newBundleRemoveCommand(now), newBundleListCommand(now))
	return cmd
}

func newBundleAddCommand(now func() time.Time) *cobra.Command {
	var bundlePath string
	cmd := &cobra.Command{
		Use:   "add --bundle FILE CERT...",
		Short: "Add anchors to a trust bundle (created if missing)",
		Example: `  # Start a bundle, then add a second anchor
  trellis identity bundle add --bundle ./bundle.crt ./ca/anchor.crt
  trellis identity bundle add --bundle ./bundle.crt ./ca-2026/anchor.crt`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bundle, err := loadBundle(bundlePath, true)
			if err != nil {
				return err
			}
			var add []*x509.Certificate
			for _, p := range args {
				certs, err := readCerts(p)
				if err != nil {
					return err
				}
				for _, c := range certs {
					if !c.BasicConstraintsValid || !c.IsCA {
						return fmt.Errorf("%s: %q is not a CA certificate; a trust bundle holds anchors only", p, c.Subject.String())
					}
					if now().After(c.NotAfter) {
						fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s: %q expired at %s\n", p, c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339))
					}
				}
				add = append(add, certs...)
			}
			out, n := pki.AddToBundle(bundle, add)
			if n > 0 || len(bundle) != len(out) {
				if err := saveBundle(bundlePath, out); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "added %d, %d already present; %s holds %d anchor(s), bundle fingerprint %s\n",
				n, len(add)-n, bundlePath, len(out), pki.Fingerprint(out))
			return err
		},
	}
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "the trust bundle PEM file (required)")
	_ = cmd.MarkFlagRequired("bundle")
	return cmd
}

func newBundleRemoveCommand(_ func() time.Time) *cobra.Command {
	var bundlePath string
	cmd := &cobra.Command{
		Use:   "remove --bundle FILE CERT|FINGERPRINT...",
		Short: "Remove anchors from a trust bundle",
		Long: `Remove anchors from a trust bundle, named by a PEM file holding them or by
their SHA-256 fingerprint (as printed by list; a unique prefix of at least
8 hex digits is enough). The last anchor is never removed.`,
		Example: `  trellis identity bundle remove --bundle ./bundle.crt ./old/anchor.crt
  trellis identity bundle remove --bundle ./bundle.crt 3f2a9c01`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bundle, err := loadBundle(bundlePath, false)
			if err != nil {
				return err
			}
			var remove []*x509.Certificate
			for _, a := range args {
				certs, err := resolveCerts(a, bundle)
				if err != nil {
					return err
				}
				remove = append(remove, certs...)
			}
			out, n := pki.RemoveFromBundle(bundle, remove)
			if len(out) == 0 {
				return fmt.Errorf("refusing to remove every anchor of %s: proxies would trust nothing", bundlePath)
			}
			if n > 0 {
				if err := saveBundle(bundlePath, out); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "removed %d; %s holds %d anchor(s), bundle fingerprint %s\n",
				n, bundlePath, len(out), pki.Fingerprint(out))
			return err
		},
	}
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "the trust bundle PEM file (required)")
	_ = cmd.MarkFlagRequired("bundle")
	return cmd
}

func newBundleListCommand(now func() time.Time) *cobra.Command {
	var (
		bundlePath string
		out        output.Flag
	)
	cmd := &cobra.Command{
		Use:   "list --bundle FILE",
		Short: "List the anchors of a trust bundle",
		Example: `  trellis identity bundle list --bundle ./state/bundle.crt

  # With each anchor's serial and key type; or as YAML
  trellis identity bundle list --bundle ./state/bundle.crt -o wide
  trellis identity bundle list --bundle ./state/bundle.crt -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bundle, err := loadBundle(bundlePath, false)
			if err != nil {
				return err
			}
			doc := bundleDoc{Bundle: bundlePath, Fingerprint: pki.Fingerprint(bundle), Anchors: pki.Describe(bundle, now())}
			return out.Print(cmd.OutOrStdout(), doc, func(w io.Writer) error {
				return printBundle(w, doc, out.Format() == output.Wide)
			})
		},
	}
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "the trust bundle PEM file (required)")
	out.Register(cmd, output.Text, output.Wide, output.JSON, output.YAML)
	_ = cmd.MarkFlagRequired("bundle")
	return cmd
}

// loadBundle reads a bundle file; a missing file is an empty bundle when
// missingOK.
func loadBundle(path string, missingOK bool) ([]*x509.Certificate, error) {
	ok, err := exists(path)
	if err != nil {
		return nil, err
	}
	if !ok {
		if missingOK {
			return nil, nil
		}
		return nil, fmt.Errorf("bundle %s does not exist", path)
	}
	return readCerts(path)
}

func saveBundle(path string, certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return errors.New("refusing to write an empty bundle")
	}
	return pki.WriteFileAtomic(path, pki.EncodeCertsPEM(certs...), fileMode)
}

// resolveCerts names certificates by file or by fingerprint (prefix) in bundle.
func resolveCerts(arg string, bundle []*x509.Certificate) ([]*x509.Certificate, error) {
	fp := strings.ToLower(strings.ReplaceAll(arg, ":", ""))
	if isHex(fp) && len(fp) >= 8 && len(fp) <= 64 && !fileExists(arg) {
		var match []*x509.Certificate
		for _, c := range bundle {
			if strings.HasPrefix(pki.CertFingerprint(c), fp) {
				match = append(match, c)
			}
		}
		switch len(match) {
		case 0:
			return nil, fmt.Errorf("no anchor of the bundle has fingerprint %s", arg)
		case 1:
			return match, nil
		default:
			return nil, fmt.Errorf("fingerprint prefix %s matches %d anchors; give more digits", arg, len(match))
		}
	}
	return readCerts(arg)
}

func fileExists(p string) bool {
	ok, _ := exists(p)
	return ok
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// bundleDoc is the -o json|yaml document of bundle list.
type bundleDoc struct {
	Bundle      string         `json:"bundle"`
	Fingerprint string         `json:"fingerprint"`
	Anchors     []pki.CertInfo `json:"anchors"`
}

// printBundle is the table of bundle list; wide adds the serial and key.
func printBundle(w io.Writer, doc bundleDoc, wide bool) error {
	fmt.Fprintf(w, "%s: %d anchor(s), bundle fingerprint %s\n", doc.Bundle, len(doc.Anchors), doc.Fingerprint)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "#\tSHA-256\tSUBJECT\tNOT AFTER\tLEFT"
	if wide {
		head += "\tSERIAL\tKEY"
	}
	fmt.Fprintln(tw, head)
	for i, in := range doc.Anchors {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s", i+1, in.Fingerprint, in.Subject, in.NotAfter.Format(time.RFC3339), timeLeft(in))
		if wide {
			fmt.Fprintf(tw, "\t%s\t%s", in.Serial, in.KeyType)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
