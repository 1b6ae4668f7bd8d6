package identitycmd

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// fileMode is used for every file written: keys must be private, and the
// certificates beside them are kept the same so a directory is uniform
// (the controller's state dir does the same).
const fileMode = 0o600

// readInput reads path, or standard input for "-", bounded in size.
func readInput(path string, stdin io.Reader) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, pki.MaxInputLength+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > pki.MaxInputLength {
		return nil, fmt.Errorf("read %s: more than %d bytes; not a certificate file", path, pki.MaxInputLength)
	}
	return data, nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := readInput(path, nil)
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// readCert reads a file that must hold exactly one certificate.
func readCert(path string) (*x509.Certificate, error) {
	certs, err := readCerts(path)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s: holds %d certificates, want exactly one", path, len(certs))
	}
	return certs[0], nil
}

func readKey(path string) (crypto.Signer, error) {
	data, err := readInput(path, nil)
	if err != nil {
		return nil, err
	}
	k, err := pki.ParseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// refuseOverwrite fails when any of paths exists, before anything is
// written, so a refused run changes nothing.
func refuseOverwrite(force bool, paths ...string) error {
	if force {
		return nil
	}
	var exist []string
	for _, p := range paths {
		_, err := os.Lstat(p)
		switch {
		case err == nil:
			exist = append(exist, p)
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
	}
	if len(exist) > 0 {
		return fmt.Errorf("%s already exist(s); refusing to overwrite (use --force to replace)", strings.Join(exist, ", "))
	}
	return nil
}

func makeOutDir(dir string) error {
	if dir == "" {
		return errors.New("--out-dir is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}

// writeKeyAndCert writes the key first and the certificate last, so a
// present certificate means its key is on disk too.
func writeKeyAndCert(keyPath, certPath string, key crypto.Signer, certs ...*x509.Certificate) error {
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(keyPath, keyPEM, fileMode); err != nil {
		return err
	}
	return pki.WriteFileAtomic(certPath, pki.EncodeCertsPEM(certs...), fileMode)
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

func join(dir, name string) string { return filepath.Join(dir, name) }

// human prints a duration in days and hours, coarse enough to read.
func human(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d >= 48*time.Hour:
		s = fmt.Sprintf("%dd %dh", d/(24*time.Hour), (d%(24*time.Hour))/time.Hour)
	case d >= time.Hour:
		s = fmt.Sprintf("%dh %dm", d/time.Hour, (d%time.Hour)/time.Minute)
	case d >= time.Minute:
		s = fmt.Sprintf("%dm %ds", d/time.Minute, (d%time.Minute)/time.Second)
	default:
		s = fmt.Sprintf("%ds", d/time.Second)
	}
	if neg {
		return "-" + s
	}
	return s
}

func shortFP(fp string) string {
	if len(fp) > 16 {
		return fp[:16]
	}
	return fp
}
