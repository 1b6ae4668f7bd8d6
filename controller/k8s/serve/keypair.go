package serve

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Names of the key pair files in a mounted kubernetes.io/tls Secret.
const (
	TLSCertFile = "tls.crt"
	TLSKeyFile  = "tls.key"
)

// maxKeyPairFile bounds what is read from the directory.
const maxKeyPairFile = 1 << 20

// KeyPairDir serves the key pair of a mounted kubernetes.io/tls Secret as a
// tls.Config.GetCertificate. Each handshake stats the two files (following
// the kubelet's ..data symlink swap) and re-parses them only when one
// changed, so a renewed Secret is served from the next handshake on, with
// no watcher to keep alive. A bad pair is refused once per change, counted,
// and the last good pair keeps serving.
type KeyPairDir struct {
	dir    string
	log    *slog.Logger
	errors prometheus.Counter

	mu    sync.Mutex
	stamp [2]fileStamp // of the files behind cert
	bad   [2]fileStamp // of the last refused pair, not to re-parse it
	cert  *tls.Certificate
}

// fileStamp identifies a file's content cheaply: a Secret update writes
// new files in a new directory and swaps the ..data symlink, so the inode
// changes even when the size and second-resolution mtime do not.
type fileStamp struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path) // follows the symlinks of a Secret volume
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(sys.Dev), sys.Ino
	}
	return st, nil
}

// LoadKeyPairDir reads dir/tls.crt and dir/tls.key; it fails when they do
// not form a valid pair, so a misconfigured controller stops at once.
// errs, when set, counts refused reloads.
func LoadKeyPairDir(dir string, log *slog.Logger, errs prometheus.Counter) (*KeyPairDir, error) {
	k := &KeyPairDir{dir: dir, log: log, errors: errs}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	stamp, err := k.stamps()
	if err != nil {
		return nil, err
	}
	cert, err := k.parse()
	if err != nil {
		return nil, err
	}
	k.stamp, k.cert = stamp, cert
	return k, nil
}

func (k *KeyPairDir) stamps() ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, name := range []string{TLSCertFile, TLSKeyFile} {
		st, err := stampOf(filepath.Join(k.dir, name))
		if err != nil {
			return out, fmt.Errorf("webhook key pair: %w", err)
		}
		out[i] = st
	}
	return out, nil
}

func (k *KeyPairDir) parse() (*tls.Certificate, error) {
	var data [2][]byte
	for i, name := range []string{TLSCertFile, TLSKeyFile} {
		b, err := readLimited(filepath.Join(k.dir, name))
		if err != nil {
			return nil, fmt.Errorf("webhook key pair: %w", err)
		}
		data[i] = b
	}
	cert, err := tls.X509KeyPair(data[0], data[1])
	if err != nil {
		return nil, fmt.Errorf("webhook key pair in %s: %w", k.dir, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("webhook certificate in %s: %w", k.dir, err)
		}
	}
	return &cert, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyPairFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyPairFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxKeyPairFile)
	}
	return b, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (k *KeyPairDir) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	stamp, err := k.stamps()
	if err != nil || stamp == k.stamp || stamp == k.bad {
		// Mid-swap or unchanged: serve what we have.
		return k.cert, nil
	}
	cert, err := k.parse()
	if err != nil {
		// A half-written pair (key and cert from different updates) is
		// refused until the files change again.
		k.bad = stamp
		if k.errors != nil {
			k.errors.Inc()
		}
		k.log.Warn("webhook key pair changed but is not valid; serving the previous one", "dir", k.dir, "err", err)
		return k.cert, nil
	}
	k.stamp, k.cert = stamp, cert
	k.log.Info("webhook key pair reloaded", "dir", k.dir, "expiry", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return cert, nil
}

// Leaf returns the certificate being served.
func (k *KeyPairDir) Leaf() *x509.Certificate {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cert.Leaf
}
