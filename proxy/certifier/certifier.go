// Package certifier obtains and renews the proxy's workload certificate from
// the control plane's Identity service. The private key is generated once,
// in memory, and never leaves the process: only a CSR is sent.
package certifier

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
)

// Config configures Run.
type Config struct {
	Identity   identity.ID
	TokenFile  string // re-read on every call (projected tokens rotate)
	Client     apiv1.IdentityClient
	Store      *meshtls.Store
	Registerer prometheus.Registerer // trellis_identity_* and trellis_control_plane_connected; nil: not registered
	Logger     *slog.Logger
	// AnchorsCache, when set, receives the trust bundle after the first
	// successful Certify and whenever it changes, so a restarted proxy
	// starts from it (BootstrapAnchors). nil: no cache.
	AnchorsCache *AnchorsCache
	// ExternalWorkload, when set, makes this an external workload's
	// proxy (a VM's): TokenFile holds a single-use bootstrap token, and
	// renewals prove the current certificate instead (ewcred.go).
	ExternalWorkload *ExternalWorkload

	// Optional tuning; zero values take the defaults below.
	CallTimeout    time.Duration // per Certify call; default 10s
	MinBackoff     time.Duration // first retry delay after a failure; default 500ms
	MaxBackoff     time.Duration // default 30s
	RenewFraction  float64       // of the lifetime; default 0.7
	MinRenewPeriod time.Duration // floor between successful renewals; default 100ms
}

const (
	defaultCallTimeout    = 10 * time.Second
	defaultMinBackoff     = 500 * time.Millisecond
	defaultMaxBackoff     = 30 * time.Second
	defaultRenewFraction  = 0.7
	defaultMinRenewPeriod = 100 * time.Millisecond
	jitter                = 0.25
	maxTokenBytes         = 64 << 10
)

// Run certifies, installs the certificate and trust anchors in the Store,
// and renews at RenewFraction of the certificate's lifetime until ctx is
// done. A failure is retried with jittered exponential backoff and never
// removes the current certificate. It returns nil when ctx is done, and an
// error only for an invalid Config.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Identity.Validate(); err != nil {
		return fmt.Errorf("certifier: identity: %w", err)
	}
	if cfg.Client == nil || cfg.Store == nil || cfg.TokenFile == "" {
		return errors.New("certifier: Client, Store and TokenFile are required")
	}
	if cfg.Store.LocalIdentity() != cfg.Identity {
		return fmt.Errorf("certifier: store holds %s, config asks for %s", cfg.Store.LocalIdentity(), cfg.Identity)
	}
	if err := cfg.ExternalWorkload.check(cfg.Identity); err != nil {
		return fmt.Errorf("certifier: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.CallTimeout = orDefault(cfg.CallTimeout, defaultCallTimeout)
	cfg.MinBackoff = orDefault(cfg.MinBackoff, defaultMinBackoff)
	cfg.MaxBackoff = orDefault(cfg.MaxBackoff, defaultMaxBackoff)
	cfg.MinRenewPeriod = orDefault(cfg.MinRenewPeriod, defaultMinRenewPeriod)
	if cfg.RenewFraction <= 0 || cfg.RenewFraction >= 1 {
		cfg.RenewFraction = defaultRenewFraction
	}
	m, err := newMetrics(cfg.Registerer, cfg.Store)
	if err != nil {
		return fmt.Errorf("certifier: %w", err)
	}

	c := &certifier{cfg: cfg, m: m, log: cfg.Logger.With("identity", cfg.Identity.String())}
	c.key, err = pki.GenerateKey()
	if err != nil {
		return fmt.Errorf("certifier: %w", err)
	}
	c.csr, err = pki.NewCSR(c.key, cfg.Identity)
	if err != nil {
		return fmt.Errorf("certifier: %w", err)
	}
	m.setBundle(cfg.Store.BundleFingerprint())
	if ew := cfg.ExternalWorkload; ew != nil {
		c.log.Info("external workload: a new key was made; the first certificate needs an unused bootstrap token in the token file, renewals then use the certificate",
			"externalworkload", ew.ref(), "token_file", cfg.TokenFile, "mint", ew.mintHint())
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.watchExpiry(ctx, time.Second, expiredLogInterval)
	}()
	c.loop(ctx)
	<-done
	return nil
}

// expiredLogInterval rate-limits the log line of an expired certificate.
const expiredLogInterval = time.Minute

// watchExpiry says clearly, once per interval, that the certificate has
// expired and mesh traffic is refused (meshtls hands out no expired
// certificate), with the last renewal error; and once when it is valid
// again. Before the first certificate nothing is logged: "certify failed"
// already says why there is none.
func (c *certifier) watchExpiry(ctx context.Context, tick, interval time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	var expired bool
	var lastLog time.Time
	var refusedAtLog uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := c.cfg.Store
		exp := st.Expiry()
		if exp.IsZero() {
			continue
		}
		now := time.Now()
		if st.Ready() {
			if expired {
				c.log.Info("workload certificate valid again: accepting mesh traffic", "not_after", exp)
				expired = false
			}
			continue
		}
		if !expired || now.Sub(lastLog) >= interval {
			refused := st.RefusedHandshakes()
			c.log.Error("WORKLOAD CERTIFICATE EXPIRED: refusing mesh traffic until it is renewed",
				"expired_at", exp, "expired_for", now.Sub(exp).Round(time.Second),
				"refused_handshakes", refused-refusedAtLog, "last_certify_error", c.lastError())
			expired, lastLog, refusedAtLog = true, now, refused
		}
	}
}

func (c *certifier) setLastError(err error) {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	c.lastErr = err
}

func (c *certifier) lastError() string {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.lastErr == nil {
		return "none"
	}
	return c.lastErr.Error()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

type certifier struct {
	cfg Config
	m   *metrics
	log *slog.Logger
	key *ecdsa.PrivateKey // in memory only, never serialised
	csr []byte

	errMu   sync.Mutex
	lastErr error // of the last Certify; read by watchExpiry

	cachedFP string  // bundle last written to AnchorsCache; only loop uses it
	ew       ewState // only loop uses it
}

func (c *certifier) loop(ctx context.Context) {
	backoff := c.cfg.MinBackoff
	for {
		var wait time.Duration
		leaf, err := c.certify(ctx)
		if ctx.Err() != nil {
			return
		}
		c.setLastError(err)
		if err != nil {
			c.m.certify.WithLabelValues("error").Inc()
			c.m.connected.Set(0)
			wait = jittered(backoff)
			backoff = min(backoff*2, c.cfg.MaxBackoff)
			// Near expiry, retry often enough that a control plane coming
			// back is used before the certificate runs out.
			if rem := time.Until(c.cfg.Store.Expiry()); rem > 0 {
				wait = min(wait, max(rem/4, c.cfg.MinBackoff))
			}
			attrs := []any{"err", err, "retry_in", wait.Round(time.Millisecond)}
			if exp := c.cfg.Store.Expiry(); !exp.IsZero() {
				attrs = append(attrs, "current_cert_expires", exp)
			}
			c.log.Warn("certify failed", attrs...)
		} else {
			c.m.certify.WithLabelValues("ok").Inc()
			c.m.connected.Set(1)
			c.m.expiry.Set(float64(leaf.NotAfter.Unix()))
			c.m.setBundle(c.cfg.Store.BundleFingerprint())
			backoff = c.cfg.MinBackoff
			now := time.Now()
			wait = max(RenewAt(leaf.NotBefore, leaf.NotAfter, now, c.cfg.RenewFraction).Sub(now), c.cfg.MinRenewPeriod)
			c.log.Info("certificate installed", "not_after", leaf.NotAfter, "renew_in", wait.Round(time.Millisecond))
			c.cacheAnchors()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// cacheAnchors writes the bundle in use to the AnchorsCache after a
// successful Certify, when it differs from what was last written (always
// the first time). A failure is a warning: it is tried again after the
// next Certify, and the proxy keeps serving.
func (c *certifier) cacheAnchors() {
	cache := c.cfg.AnchorsCache
	fp := c.cfg.Store.BundleFingerprint()
	if cache == nil || fp == c.cachedFP {
		return
	}
	if err := cache.Save(c.cfg.Store.TrustAnchors()); err != nil {
		c.log.Warn("cannot cache the trust anchors: after a restart this proxy would start from --trust-anchors again", "err", err)
		return
	}
	c.cachedFP = fp
	c.log.Info("trust anchors cached", "file", cache.Path(), "fingerprint", fp)
}

// RenewAt returns when to renew a certificate valid from notBefore to
// notAfter: at fraction of its lifetime. Certificates are backdated for
// clock skew, so for a short-lived one that moment may already be past;
// then it is fraction of the validity remaining from now.
func RenewAt(notBefore, notAfter, now time.Time, fraction float64) time.Time {
	at := notBefore.Add(time.Duration(float64(notAfter.Sub(notBefore)) * fraction))
	if at.After(now) {
		return at
	}
	if rem := notAfter.Sub(now); rem > 0 {
		return now.Add(time.Duration(float64(rem) * fraction))
	}
	return now
}

// jittered spreads d by ±25 % so proxies restarted together do not call
// the controller in lockstep.
func jittered(d time.Duration) time.Duration {
	f := 1 + jitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

// certify performs one Certify call and installs its result.
func (c *certifier) certify(ctx context.Context) (*x509.Certificate, error) {
	client, token, err := c.credential()
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	resp, err := client.Certify(cctx, &apiv1.CertifyRequest{
		Identity:                  c.cfg.Identity.String(),
		Token:                     token,
		CertificateSigningRequest: c.csr,
	})
	if err != nil {
		return nil, fmt.Errorf("certify: %w", err)
	}
	return c.install(resp)
}

func readToken(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read token %s: %w", path, err)
	}
	if len(data) > maxTokenBytes {
		return nil, fmt.Errorf("read token %s: larger than %d bytes", path, maxTokenBytes)
	}
	tok := bytes.TrimSpace(data)
	if len(tok) == 0 {
		return nil, fmt.Errorf("read token %s: empty", path)
	}
	return tok, nil
}

// install validates the whole response before changing anything, then
// installs the anchors and the certificate.
func (c *certifier) install(resp *apiv1.CertifyResponse) (*x509.Certificate, error) {
	chain := resp.GetChain()
	if len(chain) == 0 {
		return nil, errors.New("certify response: empty chain")
	}
	certs := make([]*x509.Certificate, 0, len(chain))
	for i, der := range chain {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certify response: chain certificate %d: %w", i, err)
		}
		certs = append(certs, cert)
	}
	anchors := c.cfg.Store.TrustAnchors()
	if raw := resp.GetTrustAnchors(); len(raw) > 0 {
		anchors = anchors[:0:0]
		for i, der := range raw {
			a, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("certify response: trust anchor %d: %w", i, err)
			}
			anchors = append(anchors, a)
		}
	}
	pool := x509.NewCertPool()
	for _, a := range anchors {
		pool.AddCert(a)
	}
	if _, err := pki.VerifyCerts(certs, pool, x509.ExtKeyUsageServerAuth, c.cfg.Identity, time.Now()); err != nil {
		return nil, fmt.Errorf("certify response: issued certificate: %w", err)
	}
	if len(resp.GetTrustAnchors()) > 0 && pki.Fingerprint(anchors) != c.cfg.Store.BundleFingerprint() {
		if err := c.cfg.Store.SetTrustAnchors(anchors); err != nil {
			return nil, fmt.Errorf("certify response: %w", err)
		}
		c.log.Info("trust anchors updated", "fingerprint", c.cfg.Store.BundleFingerprint(), "anchors", len(anchors))
	}
	if err := c.cfg.Store.SetCertificate(chain, c.key); err != nil {
		return nil, fmt.Errorf("certify response: %w", err)
	}
	return certs[0], nil
}
