package certifier

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// AnchorsCache is the file where the proxy keeps the trust bundle it last
// learned from the control plane (--trust-anchors-cache). Its bootstrap
// bundle (--trust-anchors) is fixed when the pod is created; after an
// anchor rotation it no longer verifies the controller, so a proxy that
// restarts must start from what it learned instead. The file holds only
// certificates: anchors are public, keys never go there.
type AnchorsCache struct {
	path string
	errs *prometheus.CounterVec
}

// maxAnchorsCacheBytes bounds what Load reads: a bundle is a few KiB.
const maxAnchorsCacheBytes = 1 << 20

// Values of the op label of trellis_identity_trust_anchors_cache_errors_total.
const (
	CacheOpRead  = "read"
	CacheOpWrite = "write"
)

// NewAnchorsCache returns the cache at path. Its failures are counted in
// trellis_identity_trust_anchors_cache_errors_total{op} on reg (nil: not
// registered).
func NewAnchorsCache(path string, reg prometheus.Registerer) (*AnchorsCache, error) {
	if path == "" {
		return nil, errors.New("trust anchors cache: empty path")
	}
	errs, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_identity_trust_anchors_cache_errors_total",
		Help: "Failures to read (at start: the bootstrap trust anchors are used instead) or write (after a Certify) the --trust-anchors-cache file.",
	}, []string{"op"}))
	if err != nil {
		return nil, err
	}
	errs.WithLabelValues(CacheOpRead)
	errs.WithLabelValues(CacheOpWrite)
	return &AnchorsCache{path: path, errs: errs}, nil
}

// Path is the cache file.
func (c *AnchorsCache) Path() string { return c.path }

// Load returns the cached bundle. A missing file (nothing learned yet)
// returns an error wrapping fs.ErrNotExist and is not counted; any other
// failure (unreadable, empty, not PEM certificates, a certificate that is
// not a CA) is counted as op="read".
func (c *AnchorsCache) Load() ([]*x509.Certificate, error) {
	anchors, err := readAnchors(c.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.errs.WithLabelValues(CacheOpRead).Inc()
	}
	return anchors, err
}

func readAnchors(path string) ([]*x509.Certificate, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxAnchorsCacheBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxAnchorsCacheBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxAnchorsCacheBytes)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%s: empty", path)
	}
	anchors, err := pki.ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, a := range anchors {
		// meshtls.Store refuses such a bundle; say so now, so the proxy
		// falls back rather than fails to start.
		if !a.IsCA || !a.BasicConstraintsValid {
			return nil, fmt.Errorf("%s: %q is not a CA certificate", path, a.Subject.CommonName)
		}
	}
	return anchors, nil
}

// Save writes anchors as PEM, atomically (a reader never sees half a
// bundle), mode 0644. A failure is counted as op="write".
func (c *AnchorsCache) Save(anchors []*x509.Certificate) error {
	err := errors.New("no anchors")
	if len(anchors) > 0 {
		err = pki.WriteFileAtomic(c.path, pki.EncodeCertsPEM(anchors...), 0o644)
	}
	if err != nil {
		c.errs.WithLabelValues(CacheOpWrite).Inc()
		return fmt.Errorf("trust anchors cache: %w", err)
	}
	return nil
}

// BootstrapAnchors returns the trust anchors to start with and the file
// they came from: the cache's when it holds a usable bundle (learned from
// the control plane over a verified connection after the bootstrap file
// was made, so never older), else the bootstrap file's. An unusable cache
// is a warning and a fallback, never a failure; only an unreadable
// bootstrap file (when it is needed) is an error. cache may be nil.
func BootstrapAnchors(bootstrap string, cache *AnchorsCache, log *slog.Logger) ([]*x509.Certificate, string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cache != nil {
		anchors, err := cache.Load()
		switch {
		case err == nil:
			log.Info("trust anchors from the cache", "file", cache.Path(), "fingerprint", pki.Fingerprint(anchors),
				"anchors", len(anchors), "instead_of", bootstrap)
			return anchors, cache.Path(), nil
		case errors.Is(err, fs.ErrNotExist):
			log.Info("no trust anchors cached yet: starting from --trust-anchors", "cache", cache.Path())
		default:
			log.Warn("trust anchors cache unusable: starting from --trust-anchors", "cache", cache.Path(), "err", err)
		}
	}
	data, err := os.ReadFile(bootstrap)
	if err != nil {
		return nil, "", fmt.Errorf("--trust-anchors: %w", err)
	}
	anchors, err := pki.ParseCertsPEM(data)
	if err != nil {
		return nil, "", fmt.Errorf("--trust-anchors %s: %w", bootstrap, err)
	}
	log.Info("trust anchors from --trust-anchors", "file", bootstrap, "fingerprint", pki.Fingerprint(anchors), "anchors", len(anchors))
	return anchors, bootstrap, nil
}
