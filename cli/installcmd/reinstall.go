package installcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/trellis-mesh/trellis/install"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Files of a pending anchor in --anchor-dir, as `trellis identity rotate
// --kubernetes` reads them (cli/identitycmd).
const (
	nextAnchorCertFile = "anchor.next.crt"
	nextAnchorKeyFile  = "anchor.next.key"
)

// identityFlags are install's choices about a cluster that already runs
// Trellis (docs/install.md, "Installing again").
type identityFlags struct {
	newIdentity bool
	anchorDir   string
	timeout     time.Duration
}

func (f *identityFlags) add(fs *pflag.FlagSet) {
	fs.BoolVar(&f.newIdentity, "new-identity", false, "deliberately start a new trust anchor; on a cluster that runs Trellis this renders the first stage of the staged rotation (bundle = installed anchors + the new one, issuer unchanged) and writes the new anchor to --anchor-dir for \"trellis identity rotate --kubernetes\"")
	fs.StringVar(&f.anchorDir, "anchor-dir", "", "with --new-identity on a cluster that runs Trellis: directory (created 0700) for the new anchor's certificate and key (anchor.next.crt/key), the --anchor-dir of \"trellis identity rotate --kubernetes\"")
	fs.DurationVar(&f.timeout, "cluster-timeout", 15*time.Second, "how long to wait for the cluster when looking for an existing install")
}

// material is what install renders: identity and webhook.
type material struct {
	id      install.Identity
	webhook install.WebhookTLS
}

// installMaterial decides the identity of `trellis install`: the
// cluster's when it already runs Trellis (so re-running install, e.g.
// with --ha, never replaces a running mesh's anchor), fresh otherwise.
func installMaterial(ctx context.Context, r *renderFlags, f *identityFlags, client func() (kubernetes.Interface, error), td string, now time.Time, warn io.Writer) (material, error) {
	supplied, ok, err := r.suppliedIdentity(now, warn)
	if err != nil {
		return material{}, err
	}
	if ok && f.newIdentity {
		return material{}, errors.New("--new-identity generates the new anchor: it excludes --identity-* files")
	}
	ex, err := detectInstall(ctx, f, client, warn)
	if err != nil {
		return material{}, err
	}
	if ex == nil {
		return freshMaterial(r, supplied, ok, td, now)
	}
	return reuseMaterial(r, f, ex, supplied, ok, now, warn)
}

// detectInstall returns the cluster's install, nil when there is none or
// no cluster to ask (said on warn). Any other failure is an error: a
// cluster that answers but cannot be read might run Trellis.
func detectInstall(ctx context.Context, f *identityFlags, client func() (kubernetes.Interface, error), warn io.Writer) (*install.Existing, error) {
	const fresh = "rendering a NEW trust anchor and issuer. If the cluster you apply this to already runs Trellis, use \"trellis upgrade\" (or point --kubeconfig at it) instead: a new anchor breaks every meshed connection"
	c, err := client()
	if err != nil {
		if noKubeconfig(err) {
			fmt.Fprintln(warn, "note: no kubeconfig found ($KUBECONFIG, ~/.kube/config):", fresh)
			return nil, nil
		}
		return nil, fmt.Errorf("looking for an existing install: %w (use --kubeconfig/--context)", err)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	ex, err := install.DetectExisting(ctx, c)
	switch {
	case err != nil && install.IsUnreachable(err):
		fmt.Fprintf(warn, "note: the cluster could not be reached (%v): %s\n", err, fresh)
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("looking for an existing install: %w (fix it, or remove the leftovers with \"trellis uninstall\")", err)
	case ex == nil:
		fmt.Fprintln(warn, "note: no Trellis install in the cluster: generating a new trust anchor and issuer")
	}
	return ex, nil
}

// noKubeconfig: no kubeconfig anywhere, so no cluster to protect.
func noKubeconfig(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if clientcmd.IsEmptyConfig(e) {
			return true
		}
	}
	return false
}

func freshMaterial(r *renderFlags, supplied install.Identity, ok bool, td string, now time.Time) (material, error) {
	var m material
	var err error
	m.id = supplied
	if !ok {
		if m.id, err = install.GenerateIdentity(td, r.anchorValidity, r.issuerValidity, now); err != nil {
			return m, err
		}
	}
	m.webhook, err = install.GenerateWebhookTLS(install.Namespace, r.webhookValidity, now)
	return m, err
}

// reuseMaterial keeps the installed identity and webhook certificate,
// except for the changes that leave every proxy trusting its peers:
// supplied files that keep every installed anchor, or --new-identity's
// first rotation stage.
func reuseMaterial(r *renderFlags, f *identityFlags, ex *install.Existing, supplied install.Identity, ok bool, now time.Time, warn io.Writer) (material, error) {
	m := material{id: ex.Identity}
	fps := strings.Join(shortFPs(install.AnchorFingerprints(ex.Identity.TrustAnchorsPEM)), ", ")
	switch {
	case ok:
		if err := install.KeepsAnchors(ex.Identity.TrustAnchorsPEM, supplied.TrustAnchorsPEM); err != nil {
			return m, fmt.Errorf("the cluster already runs Trellis (trust anchors %s) and %w: applying it would break every meshed connection. Keep the installed anchors in --identity-trust-anchors, or start a new anchor with --new-identity --anchor-dir DIR (the staged rotation, docs/identity.md)", fps, err)
		}
		m.id = supplied
		fmt.Fprintf(warn, "note: the cluster already runs Trellis: using the supplied identity files, which keep its trust anchors %s\n", fps)
	case f.newIdentity:
		var err error
		if m.id, err = addAnchorStage(r, f, ex.Identity, now, warn); err != nil {
			return m, err
		}
	default:
		warnings, err := install.CheckIdentity(ex.Identity, now)
		if err != nil {
			return m, fmt.Errorf("the cluster runs Trellis, but its identity material is unusable: %w (replace it with the staged rotation: docs/identity.md)", err)
		}
		for _, w := range warnings {
			fmt.Fprintln(warn, "warning:", w)
		}
		fmt.Fprintf(warn, "note: the cluster already runs Trellis: keeping its trust anchors (%s) and issuer, as \"trellis upgrade\" does (--new-identity for a new anchor)\n", fps)
	}
	if ex.Webhook != nil && install.CheckWebhookTLS(*ex.Webhook, install.Namespace, now) == nil {
		m.webhook = *ex.Webhook
		return m, nil
	}
	fmt.Fprintln(warn, "note: generating a new webhook serving certificate (missing, invalid or expiring within 30 days)")
	var err error
	m.webhook, err = install.GenerateWebhookTLS(install.Namespace, r.webhookValidity, now)
	return m, err
}

// addAnchorStage makes a new anchor, writes it to --anchor-dir and
// returns the installed identity with the new anchor added to its bundle:
// the add-anchor stage of `trellis identity rotate --kubernetes`, which
// then continues with switch-issuer and remove-old.
func addAnchorStage(r *renderFlags, f *identityFlags, id install.Identity, now time.Time, warn io.Writer) (install.Identity, error) {
	if f.anchorDir == "" {
		return id, errors.New("--new-identity on a cluster that runs Trellis needs --anchor-dir DIR: the new anchor's key is written there, never to the cluster")
	}
	certPath, keyPath := filepath.Join(f.anchorDir, nextAnchorCertFile), filepath.Join(f.anchorDir, nextAnchorKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return id, fmt.Errorf("%s exists: a rotation is already pending; continue it with \"trellis identity rotate --kubernetes --anchor-dir %s --status\"", p, f.anchorDir)
		}
	}
	if err := os.MkdirAll(f.anchorDir, 0o700); err != nil {
		return id, fmt.Errorf("--anchor-dir: %w", err)
	}
	cert, key, err := pki.NewRoot("trellis-anchor-"+now.UTC().Format("20060102-150405"), r.anchorValidity, now)
	if err != nil {
		return id, err
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return id, err
	}
	// Key first: a present certificate means its key is on disk too.
	if err := pki.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return id, err
	}
	if err := pki.WriteFileAtomic(certPath, pki.EncodeCertsPEM(cert), 0o600); err != nil {
		return id, err
	}
	id.TrustAnchorsPEM = append(append([]byte{}, id.TrustAnchorsPEM...), pki.EncodeCertsPEM(cert)...)
	fmt.Fprintf(warn, `note: the cluster already runs Trellis: this manifest is the add-anchor stage of a rotation to the new anchor %s (written to %s).
Apply it, wait until every proxy has the new bundle, then:
  trellis identity rotate --kubernetes --anchor-dir %s --stage switch-issuer
  trellis identity rotate --kubernetes --anchor-dir %s --stage remove-old
`, shortFP(pki.CertFingerprint(cert)), f.anchorDir, f.anchorDir, f.anchorDir)
	return id, nil
}

func shortFPs(fps []string) []string {
	out := make([]string, len(fps))
	for i, fp := range fps {
		out[i] = shortFP(fp)
	}
	return out
}

func shortFP(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return fp
}
