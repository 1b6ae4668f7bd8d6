package identitycmd

import (
	"crypto/x509"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// inspectReport is the -o json document of inspect.
type inspectReport struct {
	Certificates []pki.CertInfo `json:"certificates"`
}

func newInspectCommand(now func() time.Time) *cobra.Command {
	var out output.Flag
	cmd := &cobra.Command{
		Use:   "inspect FILE|- [FILE...]",
		Short: "Show certificates, bundles and Secrets: identity, chain, expiry",
		Long: `Show every certificate in the given files: PEM certificates, chains and
bundles, or a Secret manifest in YAML or JSON (kubectl get secret -o yaml)
holding tls.crt and/or ca.crt. "-" reads standard input. Private keys in a
Secret are never read or shown.

For each certificate: its role (anchor, issuer or workload), subject,
issuer, serial, SANs with the SPIFFE ID on its own line, key type, whether
it is a CA, validity with time left (or EXPIRED), SHA-256 fingerprint and
which certificate among all the given ones signed it.`,
		Example: `  # A certificate, a chain or a bundle
  trellis identity inspect ./state/issuer.crt

  # The issuer Secret of a cluster
  kubectl -n trellis-system get secret trellis-identity-issuer -o yaml | trellis identity inspect -

  # Several files at once: "signed by" is looked up across all of them
  trellis identity inspect ./state/bundle.crt ./state/issuer.crt -o json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				all     []*x509.Certificate
				sources []string
			)
			for _, path := range args {
				data, err := readInput(path, cmd.InOrStdin())
				if err != nil {
					return err
				}
				srcs, err := pki.ParseCertInput(data)
				if err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				for _, s := range srcs {
					for _, c := range s.Certs {
						all = append(all, c)
						sources = append(sources, path+" ("+s.Name+")")
					}
				}
			}
			infos := pki.Describe(all, now())
			for i := range infos {
				infos[i].Source = sources[i]
			}
			return out.Print(cmd.OutOrStdout(), inspectReport{Certificates: infos}, func(w io.Writer) error {
				return printInfos(w, infos)
			})
		},
	}
	out.Register(cmd, output.Text, output.JSON, output.YAML)
	return cmd
}

func printInfos(w io.Writer, infos []pki.CertInfo) error {
	index := make(map[string]int, len(infos))
	for i, in := range infos {
		if _, ok := index[in.Fingerprint]; !ok {
			index[in.Fingerprint] = i + 1
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, in := range infos {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		ca := "no"
		if in.IsCA {
			ca = "yes"
		}
		fmt.Fprintf(tw, "Certificate %d of %d\t%s\n", i+1, len(infos), in.Source)
		fmt.Fprintf(tw, "  Role:\t%s\n", in.Role)
		if in.SPIFFEID != "" {
			fmt.Fprintf(tw, "  SPIFFE ID:\t>> %s <<\n", in.SPIFFEID)
		}
		if in.IdentityErr != "" {
			fmt.Fprintf(tw, "  Identity:\tNOT A VALID TRELLIS IDENTITY: %s\n", in.IdentityErr)
		}
		fmt.Fprintf(tw, "  Subject:\t%s\n", orNone(in.Subject))
		fmt.Fprintf(tw, "  Issuer:\t%s\n", orNone(in.Issuer))
		fmt.Fprintf(tw, "  Serial:\t%s\n", in.Serial)
		fmt.Fprintf(tw, "  SANs:\t%s\n", orNone(sans(in)))
		if len(in.PermittedURIDomains) > 0 {
			fmt.Fprintf(tw, "  May sign for:\t%s\n", strings.Join(in.PermittedURIDomains, ", "))
		}
		fmt.Fprintf(tw, "  Key:\t%s\n", in.KeyType)
		fmt.Fprintf(tw, "  CA:\t%s\n", ca)
		fmt.Fprintf(tw, "  Not before:\t%s\n", in.NotBefore.Format(time.RFC3339))
		fmt.Fprintf(tw, "  Not after:\t%s (%s)\n", in.NotAfter.Format(time.RFC3339), timeLeft(in))
		fmt.Fprintf(tw, "  SHA-256:\t%s\n", in.Fingerprint)
		var by string
		switch {
		case in.SignedBy == "self":
			by = "itself (self-signed)"
		case in.SignedBy != "":
			by = fmt.Sprintf("certificate %d (%s, SHA-256 %s)", index[in.SignedBy], in.SignedBySubject, shortFP(in.SignedBy))
		default:
			by = "not among the given certificates"
		}
		fmt.Fprintf(tw, "  Signed by:\t%s\n", by)
	}
	return tw.Flush()
}

func timeLeft(in pki.CertInfo) string {
	left := time.Duration(in.SecondsLeft) * time.Second
	switch {
	case in.Expired:
		return "EXPIRED " + human(-left) + " ago"
	case in.NotYetValid:
		return "NOT YET VALID, " + human(left) + " left"
	default:
		return human(left) + " left"
	}
}

func sans(in pki.CertInfo) string {
	var s []string
	for _, u := range in.URIs {
		s = append(s, "URI:"+u)
	}
	for _, d := range in.DNSNames {
		s = append(s, "DNS:"+d)
	}
	for _, ip := range in.IPAddresses {
		s = append(s, "IP:"+ip)
	}
	for _, e := range in.Emails {
		s = append(s, "email:"+e)
	}
	return strings.Join(s, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
