// Package ca keeps the local-mode certificate authority: a trust anchor
// (root) and an issuer (intermediate) stored in the state directory, and
// the controller's own serving certificate issued from them.
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
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// Files in the state directory.
const (
	AnchorCertFile = "anchor.crt"
	AnchorKeyFile  = "anchor.key"
	IssuerCertFile = "issuer.crt"
	IssuerKeyFile  = "issuer.key"
)

// Lifetimes of the generated CA certificates.
const (
	AnchorValidity = 10 * 365 * 24 * time.Hour
	IssuerValidity = 365 * 24 * time.Hour
	// IssuerRenewBefore: an issuer this close to expiry (or past it) is
	// replaced by a new one from the anchor when the controller starts.
	// Proxies trust the anchor, so this is invisible to them.
	IssuerRenewBefore = 7 * 24 * time.Hour
)

// Common names of the generated certificates.
const (
	AnchorCommonName = "trellis-anchor"
	IssuerCommonName = "trellis-issuer"
)

// CA is the anchor and the issuer in use.
type CA struct {
	dir       string
	anchor    *x509.Certificate
	anchorKey crypto.Signer
	pool      *x509.CertPool

	mu     sync.RWMutex
	issuer *pki.Issuer
}

// LoadOrCreate loads the CA from dir, or generates it when dir holds none
// of its files. Partial, corrupt or inconsistent state is refused, never
// silently replaced: a new anchor would make every proxy's trust anchor
// file stale.
func LoadOrCreate(dir string, now time.Time, log *slog.Logger) (*CA, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := prepareDir(dir, log); err != nil {
		return nil, err
	}
	names := []string{AnchorCertFile, AnchorKeyFile, IssuerCertFile, IssuerKeyFile}
	var present, missing []string
	for _, n := range names {
		_, err := os.Lstat(filepath.Join(dir, n))
		switch {
		case err == nil:
			present = append(present, n)
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, n)
		default:
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	switch {
	case len(present) == 0:
		c, err := create(dir, now)
		if err != nil {
			return nil, err
		}
		log.Info("generated a new trust anchor and issuer", "dir", dir,
			"anchor_expiry", c.anchor.NotAfter.Format(time.RFC3339), "issuer_expiry", c.issuer.Cert.NotAfter.Format(time.RFC3339),
			"anchor_fingerprint", pki.Fingerprint([]*x509.Certificate{c.anchor}))
		return c, nil
	case len(missing) > 0:
		return nil, fmt.Errorf("state dir %s has %v but is missing %v: restore the missing files, or empty the directory to generate a new CA (every proxy then needs the new %s)", dir, present, missing, AnchorCertFile)
	}
	c, err := load(dir, now, log)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
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

func create(dir string, now time.Time) (*CA, error) {
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
	return newCA(dir, anchor, anchorKey, issuer), nil
}

func writeIssuer(dir string, is *pki.Issuer) error {
	ik, err := pki.EncodeKeyPEM(is.Key)
	if err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, IssuerKeyFile), ik, 0o600); err != nil {
		return err
	}
	return pki.WriteFileAtomic(filepath.Join(dir, IssuerCertFile), pki.EncodeCertsPEM(is.Cert), 0o600)
}

func newCA(dir string, anchor *x509.Certificate, anchorKey crypto.Signer, is *pki.Issuer) *CA {
	pool := x509.NewCertPool()
	pool.AddCert(anchor)
	return &CA{dir: dir, anchor: anchor, anchorKey: anchorKey, pool: pool, issuer: is}
}

func load(dir string, now time.Time, log *slog.Logger) (*CA, error) {
	anchor, err := readCert(dir, AnchorCertFile, log)
	if err != nil {
		return nil, err
	}
	if !anchor.IsCA || !anchor.BasicConstraintsValid {
		return nil, fmt.Errorf("%s is not a CA certificate", AnchorCertFile)
	}
	if err := anchor.CheckSignatureFrom(anchor); err != nil {
		return nil, fmt.Errorf("%s is not a self-signed root: %w", AnchorCertFile, err)
	}
	if now.After(anchor.NotAfter) {
		return nil, fmt.Errorf("%s expired at %s: empty the state dir to generate a new CA, and give every proxy the new %s", AnchorCertFile, anchor.NotAfter.Format(time.RFC3339), AnchorCertFile)
	}
	anchorKey, err := readKey(dir, AnchorKeyFile, anchor, log)
	if err != nil {
		return nil, err
	}
	issuerCert, err := readCert(dir, IssuerCertFile, log)
	if err != nil {
		return nil, err
	}
	if !issuerCert.IsCA || !issuerCert.BasicConstraintsValid {
		return nil, fmt.Errorf("%s is not a CA certificate", IssuerCertFile)
	}
	if err := issuerCert.CheckSignatureFrom(anchor); err != nil {
		return nil, fmt.Errorf("%s is not signed by %s: %w", IssuerCertFile, AnchorCertFile, err)
	}
	issuerKey, err := readKey(dir, IssuerKeyFile, issuerCert, log)
	if err != nil {
		return nil, err
	}
	is := &pki.Issuer{Cert: issuerCert, Key: issuerKey}
	if now.Add(IssuerRenewBefore).After(issuerCert.NotAfter) {
		fresh, err := pki.NewIssuer(anchor, anchorKey, IssuerCommonName, IssuerValidity, now)
		if err != nil {
			return nil, err
		}
		if err := writeIssuer(dir, fresh); err != nil {
			return nil, err
		}
		log.Warn("issuer expired or about to; replaced it with a new one signed by the same anchor",
			"old_expiry", issuerCert.NotAfter.Format(time.RFC3339), "new_expiry", fresh.Cert.NotAfter.Format(time.RFC3339))
		is = fresh
	}
	return newCA(dir, anchor, anchorKey, is), nil
}

func readFile(dir, name string, log *slog.Logger) ([]byte, error) {
	path := filepath.Join(dir, name)
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("%s: restrict to 0600: %w", name, err)
		}
		log.Warn("CA file was accessible to other users; restricted it to 0600", "file", path, "was", st.Mode().Perm().String())
	}
	return os.ReadFile(path)
}

func readCert(dir, name string, log *slog.Logger) (*x509.Certificate, error) {
	data, err := readFile(dir, name, log)
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s holds %d certificates, want exactly one", name, len(certs))
	}
	return certs[0], nil
}

type publicKeyEqualer interface {
	Equal(crypto.PublicKey) bool
}

func readKey(dir, name string, cert *x509.Certificate, log *slog.Logger) (crypto.Signer, error) {
	data, err := readFile(dir, name, log)
	if err != nil {
		return nil, err
	}
	key, err := pki.ParseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	pub, ok := key.Public().(publicKeyEqualer)
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s does not match the certificate's public key", name)
	}
	return key, nil
}

// Anchor returns the trust anchor.
func (c *CA) Anchor() *x509.Certificate { return c.anchor }

// AnchorPool returns a pool holding the anchor.
func (c *CA) AnchorPool() *x509.CertPool { return c.pool }

// AnchorPath is the file proxies use as --trust-anchors.
func (c *CA) AnchorPath() string { return filepath.Join(c.dir, AnchorCertFile) }

// Issuer returns the issuer in use.
func (c *CA) Issuer() *pki.Issuer {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.issuer
}

// SetIssuer replaces the issuer in memory (used by tests to simulate an
// expired issuer, and by future rotation).
func (c *CA) SetIssuer(is *pki.Issuer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.issuer = is
}

// NewIssuer returns a new issuer signed by the anchor, valid from now for
// validity, without installing or writing it.
func (c *CA) NewIssuer(validity time.Duration, now time.Time) (*pki.Issuer, error) {
	return pki.NewIssuer(c.anchor, c.anchorKey, IssuerCommonName, validity, now)
}
