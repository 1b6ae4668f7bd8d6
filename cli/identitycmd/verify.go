package identitycmd

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/pki"
)

func newVerifyCommand(now func() time.Time) *cobra.Command {
	var (
		bundlePath, issuerPath, keyPath string
		out                             output.Flag
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that an issuer chains to the trust bundle and can sign now",
		Long: `Check an issuer before installing it: it must be a CA allowed to sign
certificates, chain to one of the anchors of the bundle proxies trust, be
valid now, and (with --issuer-key) its private key must match it.

It warns (exit 0, on stderr; under -o json|yaml in "warnings") when the issuer expires within 7 days or its anchor
within 30 days, and fails (exit 1, with the reason) otherwise.

--issuer may also be a kubernetes.io/tls Secret manifest: its tls.crt is the
issuer, its tls.key the key and its ca.crt the bundle, unless --bundle or
--issuer-key say otherwise.`,
		Example: `  # Files as written by create-issuer
  trellis identity verify --bundle ./ca/ca.crt --issuer ./ca/issuer.crt --issuer-key ./ca/issuer.key

  # A local controller's state dir against the bundle it serves
  trellis identity verify --bundle ./state/bundle.crt --issuer ./state/issuer.crt --issuer-key ./state/issuer.key

  # The issuer Secret of a cluster (a cert-manager Certificate, for example)
  kubectl -n trellis-system get secret trellis-identity-issuer -o yaml | trellis identity verify --issuer -

  # For a script: a JSON document (on failure {"error": {...}} and exit 1)
  trellis identity verify --bundle ./ca/ca.crt --issuer ./ca/issuer.crt -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := readInput(issuerPath, cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("--issuer: %w", err)
			}
			issuer, key, anchors, err := issuerInput(data)
			if err != nil {
				return fmt.Errorf("--issuer %s: %w", issuerPath, err)
			}
			if bundlePath != "" {
				if anchors, err = readCerts(bundlePath); err != nil {
					return fmt.Errorf("--bundle: %w", err)
				}
			}
			if len(anchors) == 0 {
				return errors.New("--bundle is required (the trust anchors proxies use)")
			}
			if keyPath != "" {
				if key, err = readKey(keyPath); err != nil {
					return fmt.Errorf("--issuer-key: %w", err)
				}
			}
			res, err := pki.CheckIssuer(issuer, key, anchors, now())
			if err != nil {
				return fmt.Errorf("verify failed: %w", err)
			}
			doc := verifyDoc{OK: true, KeyChecked: key != nil, BundleAnchors: len(anchors), Warnings: res.Warnings}
			if doc.Warnings == nil {
				doc.Warnings = []string{}
			}
			infos := pki.Describe([]*x509.Certificate{issuer, res.Anchor}, now())
			doc.Issuer, doc.Anchor = infos[0], infos[1]
			return out.Print(cmd.OutOrStdout(), doc, func(w io.Writer) error {
				printVerify(w, doc)
				for _, msg := range res.Warnings {
					fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: %s\n", msg)
				}
				return nil
			})
		},
	}
	out.Register(cmd, output.Text, output.JSON, output.YAML)
	f := cmd.Flags()
	f.StringVar(&bundlePath, "bundle", "", "PEM file of the trust anchors proxies use")
	f.StringVar(&issuerPath, "issuer", "", "PEM file of the issuer certificate (first certificate), or a Secret manifest; - for stdin (required)")
	f.StringVar(&keyPath, "issuer-key", "", "PEM file of the issuer's private key, to check it matches")
	_ = cmd.MarkFlagRequired("issuer")
	return cmd
}

// issuerInput reads the issuer from PEM (the first certificate) or from a
// Secret manifest (tls.crt, tls.key and ca.crt).
func issuerInput(data []byte) (*x509.Certificate, crypto.Signer, []*x509.Certificate, error) {
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN ")) {
		certs, err := pki.ParseCertsPEM(data)
		if err != nil {
			return nil, nil, nil, err
		}
		return certs[0], nil, nil, nil
	}
	s, err := pki.ParseTLSSecret(data)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("neither PEM nor a Secret manifest: %w", err)
	}
	if len(s.Cert) == 0 {
		return nil, nil, nil, fmt.Errorf("secret has no %s", pki.SecretCertKey)
	}
	certs, err := pki.ParseCertsPEM(s.Cert)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", pki.SecretCertKey, err)
	}
	var key crypto.Signer
	if len(s.Key) > 0 {
		if key, err = pki.ParseKeyPEM(s.Key); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", pki.SecretKeyKey, err)
		}
	}
	var anchors []*x509.Certificate
	if len(s.CA) > 0 {
		if anchors, err = pki.ParseCertsPEM(s.CA); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", pki.SecretCAKey, err)
		}
	}
	return certs[0], key, anchors, nil
}

// verifyDoc is the -o json|yaml document of verify (a failure is the
// error document instead).
type verifyDoc struct {
	OK            bool         `json:"ok"`
	Issuer        pki.CertInfo `json:"issuer"`
	Anchor        pki.CertInfo `json:"anchor"`
	BundleAnchors int          `json:"bundleAnchors"`
	KeyChecked    bool         `json:"keyChecked"`
	Warnings      []string     `json:"warnings"`
}

func printVerify(w io.Writer, d verifyDoc) {
	fmt.Fprintf(w, "OK: issuer %q (SHA-256 %s)\n", d.Issuer.Subject, shortFP(d.Issuer.Fingerprint))
	fmt.Fprintf(w, "  chains to anchor %q (SHA-256 %s), one of %d in the bundle\n", d.Anchor.Subject, shortFP(d.Anchor.Fingerprint), d.BundleAnchors)
	for _, c := range []struct {
		role string
		info pki.CertInfo
	}{{"issuer", d.Issuer}, {"anchor", d.Anchor}} {
		fmt.Fprintf(w, "  %s valid until %s (%s left)\n", c.role, c.info.NotAfter.UTC().Format(time.RFC3339), human(time.Duration(c.info.SecondsLeft)*time.Second))
	}
	if d.KeyChecked {
		fmt.Fprintln(w, "  private key matches the issuer certificate")
	} else {
		fmt.Fprintln(w, "  private key not checked (no --issuer-key)")
	}
}
