package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// Lifetimes of the generated CA certificates.
const (
	AnchorValidity = 10 * 365 * 24 * time.Hour
	IssuerValidity = 365 * 24 * time.Hour
	// IssuerRenewBefore: with Options.AutoRenewIssuer, an issuer this close
	// to expiry (or past it) is replaced at start by a new one signed by
	// anchor.key.
	IssuerRenewBefore = 7 * 24 * time.Hour
)

// Common names of the generated certificates.
const (
	AnchorCommonName = "trellis-anchor"
	IssuerCommonName = "trellis-issuer"
)

// LoadOrCreate loads the CA of a local-mode state directory, or generates
// one when dir holds none of its files. Partial, corrupt or inconsistent
// state is refused, never silently replaced: a new anchor would make every
// proxy's trust anchor file stale.
//
// Required: anchor.crt (the anchor that signs new issuers), issuer.crt and
// issuer.key. Optional: anchor.key (needed only to renew the issuer) and
// bundle.crt (the trust bundle; anchor.crt alone when absent).
func LoadOrCreate(dir string, now time.Time, opts Options) (*CA, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := prepareDir(dir, log); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	dir = abs
	present := map[string]bool{}
	for _, n := range []string{AnchorCertFile, AnchorKeyFile, IssuerCertFile, IssuerKeyFile, BundleFile} {
		_, err := os.Lstat(filepath.Join(dir, n))
		switch {
		case err == nil:
			present[n] = true
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	if len(present) == 0 {
		anchor, err := create(dir, now)
		if err != nil {
			return nil, err
		}
		log.Info("generated a new trust anchor and issuer", "dir", dir, "anchor_expiry", anchor.NotAfter.UTC().Format(time.RFC3339),
			"anchor_fingerprint", pki.Fingerprint([]*x509.Certificate{anchor}))
	} else {
		var have, missing []string
		for _, n := range []string{AnchorCertFile, AnchorKeyFile, IssuerCertFile, IssuerKeyFile, BundleFile} {
			if present[n] {
				have = append(have, n)
			}
		}
		for _, n := range []string{AnchorCertFile, IssuerCertFile, IssuerKeyFile} {
			if !present[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("state dir %s has %v but is missing %v: restore the missing files, or empty the directory to generate a new CA (every proxy then needs the new %s)", dir, have, missing, AnchorCertFile)
		}
		if err := checkAnchor(dir, now, opts.AutoRenewIssuer, log); err != nil {
			return nil, fmt.Errorf("state dir %s: %w", dir, err)
		}
	}
	c := newCA(stateDirLayout(dir, opts.AutoRenewIssuer), opts)
	if err := c.loadFirst(now); err != nil {
		return nil, err
	}
	return c, nil
}

// prepareDir makes dir with mode 0700, or tightens an existing one.
func prepareDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("state dir %s is not a directory", dir)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if st.Mode()&fs.ModeSticky != 0 {
			return fmt.Errorf("state dir %s is a shared directory (mode %s); use a dedicated one for the CA keys", dir, st.Mode())
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("state dir: restrict to 0700: %w", err)
		}
		log.Warn("state dir was accessible to other users; restricted it to 0700", "dir", dir, "was", st.Mode().Perm().String())
	}
	return nil
}

func create(dir string, now time.Time) (*x509.Certificate, error) {
	anchor, anchorKey, err := pki.NewRoot(AnchorCommonName, AnchorValidity, now)
	if err != nil {
		return nil, err
	}
	issuer, err := pki.NewIssuer(anchor, anchorKey, IssuerCommonName, IssuerValidity, now)
	if err != nil {
		return nil, err
	}
	ak, err := pki.EncodeKeyPEM(anchorKey)
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, AnchorKeyFile), ak, 0o600); err != nil {
		return nil, err
	}
	if err := writeIssuer(dir, issuer); err != nil {
		return nil, err
	}
	// The anchor certificate is written last: its presence tells a waiting
	// `trellis demo` that the whole CA is on disk.
	if err := pki.WriteFileAtomic(filepath.Join(dir, AnchorCertFile), pki.EncodeCertsPEM(anchor), 0o600); err != nil {
		return nil, err
	}
	return anchor, nil
}

// writeIssuer writes the key first and the certificate last; a reload that
// reads between the two sees a mismatch and reads again (settle).
func writeIssuer(dir string, is *pki.Issuer) error {
	ik, err := pki.EncodeKeyPEM(is.Key)
	if err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, IssuerKeyFile), ik, 0o600); err != nil {
		return err
	}
	return pki.WriteFileAtomic(filepath.Join(dir, IssuerCertFile), pki.EncodeCertsPEM(append([]*x509.Certificate{is.Cert}, is.Chain...)...), 0o600)
}

// checkAnchor validates anchor.crt (and anchor.key when present) and, with
// autoRenew, replaces an issuer that expired or is about to with a new one
// signed by anchor.key.
func checkAnchor(dir string, now time.Time, autoRenew bool, log *slog.Logger) error {
	data, err := readFile(dir, AnchorCertFile, false, log)
	if err != nil {
		return err
	}
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		return fmt.Errorf("%s: %w", AnchorCertFile, err)
	}
	if len(certs) != 1 {
		return fmt.Errorf("%s holds %d certificates, want exactly one (a trust bundle of several anchors goes in %s)", AnchorCertFile, len(certs), BundleFile)
	}
	anchor := certs[0]
	if !anchor.IsCA || !anchor.BasicConstraintsValid {
		return fmt.Errorf("%s is not a CA certificate", AnchorCertFile)
	}
	if err := anchor.CheckSignatureFrom(anchor); err != nil {
		return fmt.Errorf("%s is not a self-signed root: %w", AnchorCertFile, err)
	}
	if now.After(anchor.NotAfter) {
		return fmt.Errorf("%s expired at %s: empty the state dir to generate a new CA, and give every proxy the new %s", AnchorCertFile, anchor.NotAfter.UTC().Format(time.RFC3339), AnchorCertFile)
	}
	data, err = readFile(dir, AnchorKeyFile, true, log)
	if errors.Is(err, fs.ErrNotExist) {
		if autoRenew {
			log.Info("no anchor key in the state dir: the issuer will not be renewed automatically", "dir", dir)
		}
		return nil
	}
	if err != nil {
		return err
	}
	key, err := pki.ParseKeyPEM(data)
	if err != nil {
		return fmt.Errorf("%s: %w", AnchorKeyFile, err)
	}
	if pub, ok := key.Public().(publicKeyEqualer); !ok || !pub.Equal(anchor.PublicKey) {
		return fmt.Errorf("%s does not match the public key of %s", AnchorKeyFile, AnchorCertFile)
	}
	if autoRenew {
		return renewIssuer(dir, anchor, key, now, log)
	}
	return nil
}

// renewIssuer replaces issuer.crt/key when they are valid but expired or
// expire within IssuerRenewBefore. Files that are invalid for another
// reason are left for loadFirst to refuse: renewing would hide the damage.
func renewIssuer(dir string, anchor *x509.Certificate, anchorKey crypto.Signer, now time.Time, log *slog.Logger) error {
	l := stateDirLayout(dir, true)
	m, err := l.read(log)
	if err != nil {
		return nil
	}
	st, err := parseMaterial(m, now)
	if err != nil {
		return nil
	}
	if st.Check(now) == nil && now.Add(IssuerRenewBefore).Before(st.ValidUntil()) {
		return nil
	}
	fresh, err := pki.NewIssuer(anchor, anchorKey, IssuerCommonName, IssuerValidity, now)
	if err != nil {
		return err
	}
	// The new issuer must be trusted by the bundle proxies have.
	ik, err := pki.EncodeKeyPEM(fresh.Key)
	if err != nil {
		return err
	}
	m.cert, m.key = pki.EncodeCertsPEM(fresh.Cert), ik
	if _, err := parseMaterial(m, now); err != nil {
		log.Warn("issuer expired or about to, but a new one from anchor.key would not be trusted by the bundle; not renewing it",
			"bundle", m.bundleName, "err", err)
		return nil
	}
	if err := writeIssuer(dir, fresh); err != nil {
		return err
	}
	log.Warn("issuer expired or about to; replaced it with a new one signed by the anchor (--auto-renew-issuer)",
		"old_expiry", st.Issuer.Cert.NotAfter.UTC().Format(time.RFC3339), "new_expiry", fresh.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
