// Package ca keeps the controller's certificate authority: the issuer that
// signs workload certificates and the trust bundle proxies verify against,
// loaded from files (a local-mode state directory or a mounted
// kubernetes.io/tls Secret) and reloaded when they change, plus the
// controller's own serving certificate issued from them.
package ca

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/filewatch"
)

// Files of a local-mode state directory.
const (
	AnchorCertFile = "anchor.crt"
	AnchorKeyFile  = "anchor.key"
	IssuerCertFile = "issuer.crt"
	IssuerKeyFile  = "issuer.key"
	// BundleFile, when present, is the trust bundle (one or more anchors);
	// otherwise AnchorCertFile alone is.
	BundleFile = "bundle.crt"
)

// Files of an issuer directory: a kubernetes.io/tls Secret as cert-manager
// writes it, mounted as a volume.
const (
	SecretCertFile = "tls.crt" // the issuer, optionally followed by intermediates
	SecretKeyFile  = "tls.key"
	SecretCAFile   = "ca.crt" // the trust bundle, unless Options.TrustAnchorsFile is set
)

// Timings of the file watcher.
const (
	// PollInterval is the fallback re-read period, for file systems where
	// change events are missing.
	PollInterval = 2 * time.Second
	// settle: files that do not form a valid CA are read again after this
	// before the reload is refused, so a writer replacing the key and the
	// certificate one after the other is not reported as an error.
	settle = 500 * time.Millisecond
	// invalidLogEvery spaces the loud logs of an issuer that cannot sign.
	invalidLogEvery = time.Minute
	healthEvery     = time.Second
	// renewEvery: how often a running controller with --auto-renew-issuer
	// checks whether its issuer is due (IssuerRenewBefore is days, so an
	// hour is early enough and costs two small file reads).
	renewEvery = time.Hour
)

// errSettling is returned by Reload for invalid files seen once: they are
// re-read after settle before being refused.
var errSettling = errors.New("CA files changed to an invalid state; reading them again before refusing")

// layout says which files of a directory hold the CA.
type layout struct {
	kind                          string // "state dir" or "issuer dir", for messages
	dir                           string
	certFile, keyFile, bundleFile string
	// bundleDir, when set, holds bundleFile instead of dir (a trust
	// anchors file apart from the issuer, e.g. a mounted ConfigMap).
	bundleDir      string
	fallbackBundle string // read when bundleFile is missing; "" means bundleFile is required
	tightenKeys    bool   // restrict loose key files to 0600 (not on read-only Secret mounts)
	autoRenew      bool   // state dir with --auto-renew-issuer: Run renews a due issuer
	hint           string // what to do when the issuer is not valid
}

func stateDirLayout(dir string, autoRenew bool) layout {
	hint := fmt.Sprintf("write a valid %s and %s into %s (picked up without a restart)", IssuerCertFile, IssuerKeyFile, dir)
	if autoRenew {
		hint += ", or provide " + AnchorKeyFile + ": with --auto-renew-issuer the controller signs a new issuer with it (checked hourly and at start)"
	}
	return layout{
		kind: "state dir", dir: dir,
		certFile: IssuerCertFile, keyFile: IssuerKeyFile, bundleFile: BundleFile,
		fallbackBundle: AnchorCertFile, tightenKeys: true, autoRenew: autoRenew, hint: hint,
	}
}

func issuerDirLayout(dir, anchorsFile string) layout {
	l := layout{
		kind: "issuer dir", dir: dir,
		certFile: SecretCertFile, keyFile: SecretKeyFile, bundleFile: SecretCAFile,
		hint: fmt.Sprintf("update the Secret mounted at %s with a valid %s and %s (picked up without a restart)", dir, SecretCertFile, SecretKeyFile),
	}
	if anchorsFile != "" {
		l.bundleDir, l.bundleFile = filepath.Dir(anchorsFile), filepath.Base(anchorsFile)
	}
	return l
}

// bundleDirectory is the directory holding bundleFile.
func (l layout) bundleDirectory() string {
	if l.bundleDir != "" {
		return l.bundleDir
	}
	return l.dir
}

// Options configure a CA.
type Options struct {
	Logger *slog.Logger
	// AutoRenewIssuer lets LoadOrCreate replace an expired or nearly expired
	// issuer with a new one signed by anchor.key, at start. State dir only.
	AutoRenewIssuer bool
	// OnReload is called after each reload of changed files that was
	// installed (nil) or refused (the reason), for metrics.
	OnReload func(err error)
	// OnInstall is called with every State installed, the first included.
	OnInstall func(*State)
	// TrustAnchorsFile, issuer dir only: the trust bundle is read from
	// this file (e.g. a mounted ConfigMap, watched and reloaded like the
	// Secret) instead of ca.crt, which external CAs such as cert-manager
	// overwrite with the single CA that signed the issuer. The issuer must
	// chain to one of its anchors.
	TrustAnchorsFile string
}

// CA holds the current State and replaces it when its files change.
type CA struct {
	layout layout
	log    *slog.Logger
	opts   Options

	reloadMu sync.Mutex // serializes Reload

	mu      sync.Mutex
	cur     *State
	changed chan struct{}
	// pending is the digest of invalid content seen once (settling);
	// refused is the digest of the last invalid content reported, so it is
	// not reported again on every poll.
	pending, refused       [32]byte
	hasPending, hasRefused bool

	// Owned by loadFirst, then by Run.
	invalidSince, lastInvalidLog time.Time
}

func newCA(l layout, opts Options) *CA {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnReload == nil {
		opts.OnReload = func(error) {}
	}
	if opts.OnInstall == nil {
		opts.OnInstall = func(*State) {}
	}
	return &CA{layout: l, log: opts.Logger, opts: opts, changed: make(chan struct{})}
}

// OpenIssuerDir loads the issuer and bundle from a mounted kubernetes.io/tls
// Secret: tls.crt, tls.key and ca.crt, or the bundle from
// opts.TrustAnchorsFile when set. Files that do not form a valid CA
// are an error; an issuer that is merely expired is loaded, and Check says
// it cannot sign until a valid one replaces it.
func OpenIssuerDir(dir string, now time.Time, opts Options) (*CA, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("issuer dir: %w", err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("issuer dir: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("issuer dir %s is not a directory", abs)
	}
	anchors := opts.TrustAnchorsFile
	if anchors != "" {
		if anchors, err = filepath.Abs(anchors); err != nil {
			return nil, fmt.Errorf("trust anchors file: %w", err)
		}
	}
	c := newCA(issuerDirLayout(abs, anchors), opts)
	if err := c.loadFirst(now); err != nil {
		return nil, err
	}
	return c, nil
}

// loadFirst reads and installs the files at start; any error is fatal.
func (c *CA) loadFirst(now time.Time) error {
	m, err := c.layout.read(c.log)
	if err != nil {
		return fmt.Errorf("%s %s: %w", c.layout.kind, c.layout.dir, err)
	}
	st, err := c.validate(m, now)
	if err != nil {
		return fmt.Errorf("%s %s: %w", c.layout.kind, c.layout.dir, err)
	}
	c.install(st)
	c.logHealth(now)
	return nil
}

func (c *CA) validate(m material, now time.Time) (*State, error) {
	st, err := parseMaterial(m, now)
	if errors.Is(err, errNotChained) && c.layout.bundleDir != "" {
		return nil, fmt.Errorf("%w; add the new issuer's anchor to the trust anchors file first (trellis identity rotate --kubernetes add-anchor), then switch the issuer", err)
	}
	if err != nil {
		return nil, err
	}
	st.Source = c.layout.dir
	st.hint = c.layout.hint
	return st, nil
}

func (c *CA) install(st *State) {
	c.mu.Lock()
	c.cur = st
	close(c.changed)
	c.changed = make(chan struct{})
	c.hasPending, c.hasRefused = false, false
	c.mu.Unlock()
	c.opts.OnInstall(st)
}

// State returns the current State.
func (c *CA) State() *State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// Current returns the current State and a channel closed when it is
// replaced.
func (c *CA) Current() (*State, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur, c.changed
}

// Check returns nil when the current issuer may sign at now.
func (c *CA) Check(now time.Time) error { return c.State().Check(now) }

// Dir is the directory the CA files are read from.
func (c *CA) Dir() string { return c.layout.dir }

// BundlePath is the file holding the trust bundle in use: the file to give
// proxies as --trust-anchors.
func (c *CA) BundlePath() string {
	p := filepath.Join(c.layout.bundleDirectory(), c.layout.bundleFile)
	if c.layout.fallbackBundle != "" {
		if _, err := os.Stat(p); err != nil {
			return filepath.Join(c.layout.dir, c.layout.fallbackBundle)
		}
	}
	return p
}

// Reload re-reads the files and installs them when they changed and form a
// valid CA. It returns nil when nothing changed or the new files were
// installed. Invalid files are refused, the current State keeps serving:
// an invalid content is re-read once after settle before it is reported
// (logged and passed to OnReload), and reported only once.
func (c *CA) Reload(now time.Time) error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	m, readErr := c.layout.read(c.log)
	var d [32]byte
	if readErr == nil {
		d = m.digest()
	} else {
		d = material{bundleName: "read error: " + readErr.Error()}.digest()
	}
	c.mu.Lock()
	cur := c.cur
	switch {
	case readErr == nil && d == cur.digest:
		c.hasPending = false
		c.mu.Unlock()
		return nil
	case c.hasRefused && d == c.refused:
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()

	err := readErr
	var st *State
	if err == nil {
		st, err = c.validate(m, now)
	}
	if err == nil {
		if cerr := st.Check(now); cerr != nil && cur.Check(now) == nil {
			// Never trade an issuer that can sign for one that cannot.
			err = fmt.Errorf("the new issuer cannot sign now, keeping the current one (valid until %s): %w",
				cur.ValidUntil().UTC().Format(time.RFC3339), cerr)
		}
	}
	if err == nil {
		// Count the reload before announcing it, so whoever wakes on the
		// announcement sees a count that already includes it.
		c.opts.OnReload(nil)
		c.install(st)
		c.log.Info("issuer and trust bundle reloaded", "dir", c.layout.dir, "bundle_file", c.BundlePath(),
			"issuer", st.Issuer.Cert.Subject.String(), "issuer_expiry", st.Issuer.Cert.NotAfter.UTC().Format(time.RFC3339),
			"anchors", len(st.Anchors), "bundle_fingerprint", st.Fingerprint,
			"issuer_changed", !st.Issuer.Cert.Equal(cur.Issuer.Cert), "bundle_changed", st.Fingerprint != cur.Fingerprint)
		return nil
	}

	c.mu.Lock()
	if !c.hasPending || c.pending != d {
		c.pending, c.hasPending = d, true
		c.mu.Unlock()
		c.log.Debug("CA files changed but are not valid yet; reading them again shortly", "dir", c.layout.dir, "err", err)
		return errSettling
	}
	c.hasPending = false
	c.refused, c.hasRefused = d, true
	c.mu.Unlock()
	c.log.Error("ISSUER RELOAD REFUSED: the changed CA files are not valid; the previous issuer keeps serving",
		"dir", c.layout.dir, "bundle_file", c.BundlePath(), "err", err,
		"serving_issuer", cur.Issuer.Cert.Subject.String(), "serving_issuer_expiry", cur.Issuer.Cert.NotAfter.UTC().Format(time.RFC3339))
	c.opts.OnReload(err)
	return err
}

// Run watches the directory until ctx is done, reloading on change. It
// watches the directory itself, so files renamed into place and the
// `..data` symlink swap of Kubernetes Secret volumes are seen; a slow poll
// covers missed events. It also logs, loudly and once a minute, while the
// issuer cannot sign.
func (c *CA) Run(ctx context.Context) {
	names := []string{c.layout.certFile, c.layout.keyFile}
	if c.layout.bundleDir == "" {
		names = append(names, c.layout.bundleFile)
	}
	if c.layout.fallbackBundle != "" {
		names = append(names, c.layout.fallbackBundle)
	}
	w := filewatch.Start(ctx, filewatch.Options{Dir: c.layout.dir, Names: names, Poll: PollInterval, Logger: c.log, What: "the CA files"})
	defer w.Stop()
	// A trust anchors file elsewhere has a watch of its own; without one,
	// bundleC stays nil and never fires.
	var bundleC <-chan struct{}
	if c.layout.bundleDir != "" {
		bw := filewatch.Start(ctx, filewatch.Options{Dir: c.layout.bundleDir, Names: []string{c.layout.bundleFile},
			Poll: PollInterval, Logger: c.log, What: "the trust anchors file"})
		defer bw.Stop()
		bundleC = bw.C()
	}
	health := time.NewTicker(healthEvery)
	defer health.Stop()
	// A long-running controller renews its own issuer too, not only at
	// start; without auto-renewal renewC stays nil and never fires.
	var renewC <-chan time.Time
	if c.layout.autoRenew {
		renew := time.NewTicker(renewEvery)
		defer renew.Stop()
		renewC = renew.C
	}
	// again re-reads files seen invalid once, after settle.
	again := time.NewTimer(time.Hour)
	again.Stop()
	defer again.Stop()
	reload := func() {
		if errors.Is(c.Reload(time.Now()), errSettling) {
			again.Reset(settle)
		}
		c.logHealth(time.Now())
	}
	c.logHealth(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.C():
			reload()
		case <-bundleC:
			reload()
		case <-again.C:
			reload()
		case <-health.C:
			c.logHealth(time.Now())
		case <-renewC:
			switch err := c.RenewIfDue(time.Now()); {
			case errors.Is(err, errSettling):
				again.Reset(settle)
			case err != nil:
				c.log.Error("automatic issuer renewal failed; the current issuer keeps serving", "dir", c.layout.dir, "err", err)
			}
			c.logHealth(time.Now())
		}
	}
}

// RenewIfDue, in a state dir with Options.AutoRenewIssuer, replaces an
// issuer that has expired or expires within IssuerRenewBefore with a new
// one signed by anchor.key (when present and chaining to the bundle), and
// installs it at once. Run calls it every renewEvery; it does nothing in
// other layouts or when the issuer is not due.
func (c *CA) RenewIfDue(now time.Time) error {
	if !c.layout.autoRenew {
		return nil
	}
	if err := checkAnchor(c.layout.dir, now, true, c.log); err != nil {
		return err
	}
	return c.Reload(now)
}

// logHealth logs an issuer that cannot sign at once, then every
// invalidLogEvery, and its recovery.
func (c *CA) logHealth(now time.Time) {
	err := c.Check(now)
	switch {
	case err != nil && (c.invalidSince.IsZero() || now.Sub(c.lastInvalidLog) >= invalidLogEvery):
		if c.invalidSince.IsZero() {
			c.invalidSince = now
		}
		c.lastInvalidLog = now
		c.log.Error("ISSUER CANNOT SIGN: Certify is refused and /ready fails until a valid issuer is installed", "err", err,
			"since", c.invalidSince.UTC().Format(time.RFC3339))
	case err == nil && !c.invalidSince.IsZero():
		c.log.Info("issuer valid again: signing resumed", "after", now.Sub(c.invalidSince).Round(time.Second).String())
		c.invalidSince = time.Time{}
	}
}

// read reads the files of the layout. A key file open to other users is
// restricted to 0600 when the layout allows it.
func (l layout) read(log *slog.Logger) (material, error) {
	m := material{certName: l.certFile, keyName: l.keyFile, bundleName: l.bundleFile}
	var err error
	if m.cert, err = readFile(l.dir, l.certFile, false, log); err != nil {
		return m, err
	}
	if m.key, err = readFile(l.dir, l.keyFile, l.tightenKeys, log); err != nil {
		return m, err
	}
	if l.bundleDir != "" {
		m.bundleName = filepath.Join(l.bundleDir, l.bundleFile)
		m.bundle, err = readFile(l.bundleDir, l.bundleFile, false, log)
		if err != nil {
			return m, fmt.Errorf("trust anchors file %s: %w", l.bundleDir, err)
		}
		return m, nil
	}
	m.bundle, err = readFile(l.dir, l.bundleFile, false, log)
	if errors.Is(err, fs.ErrNotExist) && l.fallbackBundle != "" {
		m.bundleName = l.fallbackBundle
		m.bundle, err = readFile(l.dir, l.fallbackBundle, false, log)
	}
	if err != nil {
		return m, err
	}
	return m, nil
}

// readFile reads dir/name (following symlinks, as Secret volumes use),
// bounded in size.
func readFile(dir, name string, tighten bool, log *slog.Logger) ([]byte, error) {
	path := filepath.Join(dir, name)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	if tighten && st.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			return nil, fmt.Errorf("%s: restrict to 0600: %w", name, err)
		}
		log.Warn("key file was accessible to other users; restricted it to 0600", "file", path, "was", st.Mode().Perm().String())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a certificate or key file", name, maxFileSize)
	}
	return data, nil
}
