package identitycmd

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// File names written by create-anchor and create-issuer.
const (
	anchorCertFile = "anchor.crt"
	anchorKeyFile  = "anchor.key"
	issuerCertFile = "issuer.crt"
	issuerKeyFile  = "issuer.key"
	caCertFile     = "ca.crt"
)

// Defaults, matching the controller's generated CA.
const (
	defaultAnchorValidity = 10 * 365 * 24 * time.Hour
	defaultIssuerValidity = 365 * 24 * time.Hour
	defaultAnchorName     = "trellis-anchor"
	defaultIssuerName     = "trellis-issuer"
)

func newCreateAnchorCommand(now func() time.Time) *cobra.Command {
	var (
		outDir   string
		validity time.Duration
		name     string
		force    bool
	)
	cmd := &cobra.Command{
		Use:   "create-anchor",
		Short: "Create a trust anchor (self-signed root CA)",
		Long: `Create a trust anchor: a self-signed ECDSA P-256 root CA that may sign one
level of issuers. Writes DIR/anchor.crt and DIR/anchor.key (mode 0600,
atomically, key first). Existing files are not overwritten unless --force.

Keep anchor.key offline if you can: it is needed only to sign issuers.`,
		Example: `  # A 10-year anchor in ./ca
  trellis identity create-anchor --out-dir ./ca

  # A 5-year anchor with another common name
  trellis identity create-anchor --out-dir ./ca --validity 43800h --name acme-mesh-root-2025`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if validity <= 0 {
				return fmt.Errorf("--validity %s: must be positive", validity)
			}
			if name == "" {
				return errors.New("--name must not be empty")
			}
			if err := makeOutDir(outDir); err != nil {
				return err
			}
			certPath, keyPath := join(outDir, anchorCertFile), join(outDir, anchorKeyFile)
			if err := refuseOverwrite(force, certPath, keyPath); err != nil {
				return err
			}
			cert, key, err := pki.NewRoot(name, validity, now())
			if err != nil {
				return err
			}
			if err := writeKeyAndCert(keyPath, certPath, key, cert); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s\n  anchor %q, SHA-256 %s, valid until %s\n",
				certPath, keyPath, cert.Subject.CommonName, pki.CertFingerprint(cert), cert.NotAfter.UTC().Format(time.RFC3339))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&outDir, "out-dir", "", "directory to write anchor.crt and anchor.key to (created 0700) (required)")
	f.DurationVar(&validity, "validity", defaultAnchorValidity, "how long the anchor is valid")
	f.StringVar(&name, "name", defaultAnchorName, "common name of the anchor")
	f.BoolVar(&force, "force", false, "overwrite existing files")
	_ = cmd.MarkFlagRequired("out-dir")
	return cmd
}

func newCreateIssuerCommand(now func() time.Time) *cobra.Command {
	var (
		anchorCert, anchorKey string
		outDir                string
		validity              time.Duration
		trustDomain           string
		commonName            string
		output                string
		namespace, name       string
		force                 bool
	)
	cmd := &cobra.Command{
		Use:   "create-issuer",
		Short: "Create an issuer (intermediate CA) signed by an anchor",
		Long: `Create an issuer: an ECDSA P-256 intermediate CA signed by the anchor, which
the identity service uses to sign workload certificates. It carries the
trust domain's SPIFFE ID (spiffe://<trust-domain>) and a name constraint
that lets it sign identities of that trust domain only. Its validity is cut
to the anchor's.

With --out-dir it writes DIR/issuer.crt, DIR/issuer.key and DIR/ca.crt (a
copy of the anchor), the three parts of cert-manager's kubernetes.io/tls
Secret (tls.crt, tls.key, ca.crt). With -o secret it prints that Secret as
a YAML manifest on standard output (it contains the private key: pipe it to
kubectl, do not paste it around); --out-dir is then optional.`,
		Example: `  # A 1-year issuer for cluster.local, as files
  trellis identity create-issuer --anchor-cert ./ca/anchor.crt --anchor-key ./ca/anchor.key --out-dir ./ca

  # Straight into the cluster as the Secret the identity service loads
  trellis identity create-issuer --anchor-cert ./ca/anchor.crt --anchor-key ./ca/anchor.key \
    --trust-domain cluster.local -o secret --namespace trellis-system --name trellis-identity-issuer \
    | kubectl apply --server-side -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if validity <= 0 {
				return fmt.Errorf("--validity %s: must be positive", validity)
			}
			if output != "files" && output != "secret" {
				return fmt.Errorf("-o %q: want files or secret", output)
			}
			if output == "files" && outDir == "" {
				return errors.New("--out-dir is required (or -o secret to print a Secret manifest)")
			}
			if output == "secret" {
				if _, err := identity.New("cluster.local", namespace, "x"); err != nil {
					return fmt.Errorf("--namespace: %w", err)
				}
				if name == "" {
					return errors.New("--name (the Secret's name) must not be empty")
				}
			}
			anchor, err := readCert(anchorCert)
			if err != nil {
				return fmt.Errorf("--anchor-cert: %w", err)
			}
			key, err := readKey(anchorKey)
			if err != nil {
				return fmt.Errorf("--anchor-key: %w", err)
			}
			if err := pki.KeyMatchesCert(key, anchor); err != nil {
				return fmt.Errorf("--anchor-key does not belong to --anchor-cert: %w", err)
			}
			if !anchor.IsCA {
				return fmt.Errorf("--anchor-cert %s is not a CA certificate", anchorCert)
			}
			t := now()
			if t.After(anchor.NotAfter) {
				return fmt.Errorf("--anchor-cert %s expired at %s", anchorCert, anchor.NotAfter.UTC().Format(time.RFC3339))
			}
			var certPath, keyPath, caPath string
			if outDir != "" {
				if err := makeOutDir(outDir); err != nil {
					return err
				}
				certPath, keyPath, caPath = join(outDir, issuerCertFile), join(outDir, issuerKeyFile), join(outDir, caCertFile)
				if err := refuseOverwrite(force, certPath, keyPath, caPath); err != nil {
					return err
				}
			}
			is, err := pki.NewTrustDomainIssuer(anchor, key, commonName, trustDomain, validity, t)
			if err != nil {
				return err
			}
			if is.Cert.NotAfter.Before(t.Add(validity).Add(-time.Second)) { // DER times have whole seconds
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: issuer validity cut to the anchor's expiry, %s\n", is.Cert.NotAfter.UTC().Format(time.RFC3339))
			}
			if outDir != "" {
				if err := pki.WriteFileAtomic(caPath, pki.EncodeCertsPEM(anchor), fileMode); err != nil {
					return err
				}
				if err := writeKeyAndCert(keyPath, certPath, is.Key, is.Cert); err != nil {
					return err
				}
				// Status goes to stderr when stdout carries the manifest.
				status := cmd.OutOrStdout()
				if output == "secret" {
					status = cmd.ErrOrStderr()
				}
				fmt.Fprintf(status, "wrote %s, %s and %s\n  issuer %q for trust domain %s, SHA-256 %s, valid until %s\n",
					certPath, keyPath, caPath, is.Cert.Subject.CommonName, trustDomain, pki.CertFingerprint(is.Cert), is.Cert.NotAfter.UTC().Format(time.RFC3339))
			}
			if output == "secret" {
				return writeSecret(cmd.OutOrStdout(), is, anchor, namespace, name)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&anchorCert, "anchor-cert", "", "PEM file of the anchor that signs the issuer (required)")
	f.StringVar(&anchorKey, "anchor-key", "", "PEM file of the anchor's private key (required)")
	f.StringVar(&outDir, "out-dir", "", "directory to write issuer.crt, issuer.key and ca.crt to (created 0700)")
	f.DurationVar(&validity, "validity", defaultIssuerValidity, "how long the issuer is valid (cut to the anchor's expiry)")
	f.StringVar(&trustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain the issuer may sign identities in")
	f.StringVar(&commonName, "common-name", defaultIssuerName, "common name of the issuer")
	f.StringVarP(&output, "output", "o", "files", "files, or secret to print a kubernetes.io/tls Secret manifest")
	f.StringVar(&namespace, "namespace", "trellis-system", "namespace of the Secret (-o secret)")
	f.StringVar(&name, "name", "trellis-identity-issuer", "name of the Secret (-o secret)")
	f.BoolVar(&force, "force", false, "overwrite existing files")
	_ = cmd.MarkFlagRequired("anchor-cert")
	_ = cmd.MarkFlagRequired("anchor-key")
	return cmd
}

func writeSecret(w io.Writer, is *pki.Issuer, anchor *x509.Certificate, namespace, name string) error {
	keyPEM, err := pki.EncodeKeyPEM(is.Key)
	if err != nil {
		return err
	}
	manifest, err := pki.TLSSecret{
		Name:      name,
		Namespace: namespace,
		Cert:      pki.EncodeCertsPEM(append([]*x509.Certificate{is.Cert}, is.Chain...)...),
		Key:       keyPEM,
		CA:        pki.EncodeCertsPEM(anchor),
	}.Manifest()
	if err != nil {
		return err
	}
	_, err = w.Write(manifest)
	return err
}
