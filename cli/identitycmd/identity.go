// Package identitycmd is `trellis identity`: create, inspect and verify the
// mesh's trust anchors and issuers, manage trust bundles, and walk an
// anchor rotation in stages. The certificate work is in internal/pki; this
// package reads and writes files and talks to humans.
package identitycmd

import (
	"time"

	"github.com/spf13/cobra"
)

// New returns the `trellis identity` command tree.
func New() *cobra.Command {
	return newCommand(time.Now)
}

// newCommand takes the clock so tests can look at the tree from another
// instant (an expired issuer) without faking certificates.
func newCommand(now func() time.Time) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Create, inspect, verify and rotate the mesh's trust anchors and issuers",
		Long: `Manage the certificates behind Trellis mTLS.

The model: proxies trust a bundle of one or more root anchors; an issuer
(intermediate CA) signed by one of them signs short-lived (24 h by default)
workload certificates whose only URI SAN is the SPIFFE ID
spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.

All keys are ECDSA P-256. Files are written atomically with mode 0600 and
existing files are never overwritten without --force. See docs/identity.md.`,
		Example: `  # A new anchor and an issuer signed by it
  trellis identity create-anchor --out-dir ./ca
  trellis identity create-issuer --anchor-cert ./ca/anchor.crt --anchor-key ./ca/anchor.key --out-dir ./ca

  # Look at any certificate, bundle or Secret
  trellis identity inspect ./ca/issuer.crt

  # Check an issuer against the bundle proxies trust
  trellis identity verify --bundle ./ca/ca.crt --issuer ./ca/issuer.crt --issuer-key ./ca/issuer.key

  # Walk an anchor rotation of a local controller
  trellis identity rotate --state-dir ./state --status`,
	}
	cmd.AddCommand(
		newCreateAnchorCommand(now),
		newCreateIssuerCommand(now),
		newInspectCommand(now),
		newVerifyCommand(now),
		newBundleCommand(now),
		newRotateCommand(now),
	)
	return cmd
}
