// Package meshtls holds the proxy's workload certificate and trust bundle,
// both swappable at run time, and builds the tls.Configs of mesh mTLS.
//
// Peer verification follows the SPIFFE pattern: Go's hostname-based
// verification is switched off (InsecureSkipVerify) and replaced by a
// VerifyConnection callback that verifies the full chain against the trust
// anchors current at handshake time, with the right extended key usage, and
// the peer's SPIFFE ID exactly. It is never weaker than the default
// verification: every config built here installs that callback.
package meshtls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// ErrNoLocalCertificate is returned by handshakes that need our certificate
// before the first one was installed.
var ErrNoLocalCertificate = errors.New("no workload certificate yet")

// ErrLocalCertificateExpired is returned by handshakes that need our
// certificate while it is expired (or not yet valid): mesh traffic is
// refused rather than presenting a certificate every peer would reject.
var ErrLocalCertificateExpired = errors.New("workload certificate expired")

// Store is goroutine-safe. The certificate and the trust bundle are
// immutable values swapped atomically, so readers never lock.
type Store struct {
	local   identity.ID
	cert    atomic.Pointer[tls.Certificate]
	anchors atomic.Pointer[bundle]
	now     func() time.Time

	// refused counts handshakes refused because our certificate was not
	// valid; the certifier reports it in its periodic log line.
	refused atomic.Uint64
	// issuer caches CertIssuer for one (certificate, bundle) pair.
	issuer atomic.Pointer[issuerCache]
	// accepted are the other trust domains whose peers the server side
	// accepts (AcceptTrustDomains); nil: the local one only.
	accepted atomic.Pointer[map[string]bool]
}

type issuerCache struct {
	cert   *tls.Certificate
	bundle *bundle
	issuer string
	anchor string
}

type bundle struct {
	certs       []*x509.Certificate
	pool        *x509.CertPool
	fingerprint string
}

// NewStore returns a Store for the local identity, trusting anchors, with
// no certificate yet.
func NewStore(local identity.ID, anchors []*x509.Certificate) (*Store, error) {
	if err := local.Validate(); err != nil {
		return nil, fmt.Errorf("local identity: %w", err)
	}
	s := &Store{local: local, now: time.Now}
	if err := s.SetTrustAnchors(anchors); err != nil {
		return nil, err
	}
	return s, nil
}

// AcceptTrustDomains sets the trust domains, besides the local one, whose
// peers a server accepts when their chain verifies to the anchors: other
// clusters sharing the trust anchor, each signing in its own domain
// (docs/multicluster.md). Authorization still decides what they may
// reach; cluster-authenticated keeps meaning the local domain. Without
// it a peer from any other domain is refused at the handshake, whatever
// its chain.
func (s *Store) AcceptTrustDomains(domains []string) error {
	m := map[string]bool{}
	for _, td := range domains {
		if err := identity.CheckAccepted(td, s.local.TrustDomain); err != nil {
			return err
		}
		m[td] = true
	}
	s.accepted.Store(&m)
	return nil
}

// accepts reports whether a peer of trust domain td may connect to a
// server of this Store (no exact identity expected).
func (s *Store) accepts(td string) bool {
	if td == s.local.TrustDomain {
		return true
	}
	m := s.accepted.Load()
	return m != nil && (*m)[td]
}

// LocalIdentity returns the identity this Store holds certificates for.
func (s *Store) LocalIdentity() identity.ID { return s.local }

// SetCertificate installs a new workload certificate: chain is DER, leaf
// first, then intermediates. The chain must verify now against the current
// trust anchors, name exactly the local identity, and match key (ECDSA
// P-256), so a bad response from the control plane can never replace a
// good certificate. New handshakes use it; established connections are
// untouched.
func (s *Store) SetCertificate(chain [][]byte, key crypto.Signer) error {
	if len(chain) == 0 {
		return errors.New("set certificate: empty chain")
	}
	if key == nil {
		return errors.New("set certificate: no key")
	}
	certs := make([]*x509.Certificate, 0, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("set certificate: parse certificate %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	leaf := certs[0]
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return errors.New("set certificate: leaf key is not ECDSA P-256")
	}
	kp, ok := key.Public().(*ecdsa.PublicKey)
	if !ok || !kp.Equal(pub) {
		return errors.New("set certificate: private key does not match the certificate")
	}
	b := s.anchors.Load()
	if _, err := pki.VerifyCerts(certs, b.pool, x509.ExtKeyUsageServerAuth, s.local, s.now()); err != nil {
		return fmt.Errorf("set certificate: %w", err)
	}
	if _, err := pki.VerifyCerts(certs, b.pool, x509.ExtKeyUsageClientAuth, s.local, s.now()); err != nil {
		return fmt.Errorf("set certificate: %w", err)
	}
	c := &tls.Certificate{
		Certificate: append([][]byte(nil), chain...),
		PrivateKey:  key,
		Leaf:        leaf,
	}
	s.cert.Store(c)
	return nil
}

// SetTrustAnchors replaces the trust bundle. New handshakes verify peers
// against it; established connections are untouched.
func (s *Store) SetTrustAnchors(anchors []*x509.Certificate) error {
	if len(anchors) == 0 {
		return errors.New("trust anchors: empty bundle")
	}
	pool := x509.NewCertPool()
	for _, a := range anchors {
		if a == nil {
			return errors.New("trust anchors: nil certificate")
		}
		if !a.IsCA || !a.BasicConstraintsValid {
			return fmt.Errorf("trust anchors: %q is not a CA certificate", a.Subject.CommonName)
		}
		pool.AddCert(a)
	}
	s.anchors.Store(&bundle{
		certs:       append([]*x509.Certificate(nil), anchors...),
		pool:        pool,
		fingerprint: pki.Fingerprint(anchors),
	})
	return nil
}

// TrustAnchors returns the current trust anchors (do not modify them).
func (s *Store) TrustAnchors() []*x509.Certificate {
	return append([]*x509.Certificate(nil), s.anchors.Load().certs...)
}

// Leaf returns the current workload certificate, or nil.
func (s *Store) Leaf() *x509.Certificate {
	if c := s.cert.Load(); c != nil {
		return c.Leaf
	}
	return nil
}

// Ready reports whether the Store holds a certificate valid now.
func (s *Store) Ready() bool {
	c := s.cert.Load()
	if c == nil {
		return false
	}
	now := s.now()
	return !now.Before(c.Leaf.NotBefore) && !now.After(c.Leaf.NotAfter)
}

// Expiry returns the current certificate's NotAfter (zero if none).
func (s *Store) Expiry() time.Time {
	if c := s.cert.Load(); c != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}

// BundleFingerprint returns the hex SHA-256 of the current trust bundle.
func (s *Store) BundleFingerprint() string { return s.anchors.Load().fingerprint }

// current returns the certificate to present, or why there is none: a
// certificate outside its validity is never handed to a peer.
func (s *Store) current() (*tls.Certificate, error) {
	c := s.cert.Load()
	if c == nil {
		return nil, ErrNoLocalCertificate
	}
	now := s.now()
	if now.After(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("%w at %s (%s ago): refusing mesh TLS until it is renewed",
			ErrLocalCertificateExpired, c.Leaf.NotAfter.UTC().Format(time.RFC3339), now.Sub(c.Leaf.NotAfter).Round(time.Second))
	}
	if now.Before(c.Leaf.NotBefore) {
		return nil, fmt.Errorf("%w: not valid before %s (check the clock): refusing mesh TLS",
			ErrLocalCertificateExpired, c.Leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return c, nil
}

func (s *Store) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := s.current()
	if err != nil {
		s.refused.Add(1)
	}
	return c, err
}

func (s *Store) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c, err := s.current()
	if err != nil {
		s.refused.Add(1)
	}
	return c, err
}

// getOptionalClientCertificate presents no certificate rather than failing
// when we have no valid one: the control plane accepts that before the
// first Certify, and would refuse an expired one, which would leave the
// proxy unable ever to renew it.
func (s *Store) getOptionalClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c, err := s.current(); err == nil {
		return c, nil
	}
	return &tls.Certificate{}, nil
}

// RefusedHandshakes returns how many mesh handshakes were refused so far
// because this proxy had no valid certificate of its own.
func (s *Store) RefusedHandshakes() uint64 { return s.refused.Load() }

// CertIssuer describes the current certificate's chain for
// trellis_identity_cert_issuer_info: issuer is the hex SHA-256 of the DER of
// the certificate that signed the leaf, anchor that of the bundle anchor
// the chain verifies to now ("" when it verifies to none of the current
// bundle, e.g. after its anchor was removed). ok is false without a
// certificate valid now. The verification is cached per certificate and
// bundle, so scrapes cost a map lookup.
func (s *Store) CertIssuer() (issuer, anchor string, ok bool) {
	c := s.cert.Load()
	if c == nil || !s.Ready() {
		return "", "", false
	}
	b := s.anchors.Load()
	if ic := s.issuer.Load(); ic != nil && ic.cert == c && ic.bundle == b {
		return ic.issuer, ic.anchor, true
	}
	ic := &issuerCache{cert: c, bundle: b}
	inter := x509.NewCertPool()
	for i, der := range c.Certificate[1:] {
		if i == 0 {
			ic.issuer = derFingerprint(der)
		}
		// SetCertificate parsed the whole chain before installing it.
		if ct, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(ct)
		}
	}
	chains, err := c.Leaf.Verify(x509.VerifyOptions{
		Roots: b.pool, Intermediates: inter, CurrentTime: s.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err == nil && len(chains) > 0 && len(chains[0]) > 1 {
		ch := chains[0]
		if ic.issuer == "" { // leaf signed by an anchor directly
			ic.issuer = pki.CertFingerprint(ch[1])
		}
		ic.anchor = pki.CertFingerprint(ch[len(ch)-1])
	}
	s.issuer.Store(ic)
	return ic.issuer, ic.anchor, true
}

func derFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// verify is the whole peer check: chain to the anchors current now, usage,
// identity (exact when want is set, else the local trust domain or one
// it accepts).
func (s *Store) verify(cs tls.ConnectionState, usage x509.ExtKeyUsage, want identity.ID) error {
	if cs.Version != tls.VersionTLS13 {
		return fmt.Errorf("%w: negotiated TLS version %#x, want TLS 1.3", errProtocol, cs.Version)
	}
	id, err := pki.VerifyCerts(cs.PeerCertificates, s.anchors.Load().pool, usage, want, s.now())
	if err != nil {
		return err
	}
	if want.IsZero() && !s.accepts(id.TrustDomain) {
		return fmt.Errorf("%w: peer %s is not in trust domain %q nor in one it accepts", pki.ErrWrongIdentity, id, s.local.TrustDomain)
	}
	return nil
}

var errProtocol = errors.New("mesh TLS protocol violation")

func baseConfig(nextProtos []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: append([]string(nil), nextProtos...),
	}
}

// ClientConfig returns the config for dialing a mesh peer that must prove
// identity want. SNI is want's DNS form; our certificate is presented.
func (s *Store) ClientConfig(want identity.ID, nextProtos []string) *tls.Config {
	cfg := baseConfig(nextProtos)
	cfg.ServerName = want.ServerName()
	// Replaced, not skipped: VerifyConnection does the full verification.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if want.IsZero() {
			return fmt.Errorf("%w: no expected peer identity", pki.ErrWrongIdentity)
		}
		return s.verify(cs, x509.ExtKeyUsageServerAuth, want)
	}
	cfg.GetClientCertificate = s.getClientCertificate
	return cfg
}

// ServerConfig returns the config for accepting mesh peers: a client
// certificate is required and verified (any identity of our trust domain).
// Use PeerIdentity on the result to learn who the client is.
func (s *Store) ServerConfig(nextProtos []string) *tls.Config {
	cfg := baseConfig(nextProtos)
	cfg.ClientAuth = tls.RequireAnyClientCert // chain checked in VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return pki.ErrNoCertificate
		}
		return s.verify(cs, x509.ExtKeyUsageClientAuth, identity.ID{})
	}
	cfg.GetCertificate = s.getCertificate
	// Peers hold long-lived connections; tickets would only cost CPU and
	// bytes on every handshake.
	cfg.SessionTicketsDisabled = true
	return cfg
}

// ControlPlaneConfig returns the client config for gRPC to the controller,
// which must prove exactly identity controller. Our certificate is presented
// once we have one.
func (s *Store) ControlPlaneConfig(controller identity.ID) *tls.Config {
	cfg := baseConfig(nil)
	cfg.ServerName = controller.ServerName()
	cfg.InsecureSkipVerify = true // replaced by VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if controller.IsZero() {
			return fmt.Errorf("%w: no expected controller identity", pki.ErrWrongIdentity)
		}
		return s.verify(cs, x509.ExtKeyUsageServerAuth, controller)
	}
	cfg.GetClientCertificate = s.getOptionalClientCertificate
	return cfg
}

// PeerIdentity returns the peer's identity after a successful handshake
// with one of this package's configs (which verified it).
func PeerIdentity(cs tls.ConnectionState) (identity.ID, bool) {
	if !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return identity.ID{}, false
	}
	id, err := identity.FromCertificate(cs.PeerCertificates[0])
	if err != nil {
		return identity.ID{}, false
	}
	return id, true
}

// Handshake error reasons, the values of the reason label of
// trellis_tls_handshake_errors_total.
const (
	ReasonUntrusted     = "untrusted"
	ReasonWrongIdentity = "wrong_identity"
	ReasonExpired       = "expired"
	ReasonNoCertificate = "no_certificate"
	ReasonProtocol      = "protocol"
	ReasonOther         = "other"
)

// HandshakeErrorReason maps a handshake error to a metric reason. The side
// that verified gets the precise reason; the other side only sees the alert
// it was sent, which is mapped as closely as it allows.
func HandshakeErrorReason(err error) string {
	switch {
	case err == nil:
		return ReasonOther
	case errors.Is(err, pki.ErrNoCertificate), errors.Is(err, ErrNoLocalCertificate):
		return ReasonNoCertificate
	case errors.Is(err, pki.ErrExpired), errors.Is(err, ErrLocalCertificateExpired):
		return ReasonExpired
	case errors.Is(err, pki.ErrWrongIdentity), errors.Is(err, pki.ErrBadIdentity):
		return ReasonWrongIdentity
	case errors.Is(err, pki.ErrUntrusted):
		return ReasonUntrusted
	case errors.Is(err, errProtocol):
		return ReasonProtocol
	}
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired {
		return ReasonExpired
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return ReasonUntrusted
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return ReasonProtocol
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" && op.Err != nil {
		// The peer rejected the handshake with an alert.
		switch op.Err.Error() {
		case "tls: certificate required":
			return ReasonNoCertificate
		case "tls: expired certificate":
			return ReasonExpired
		case "tls: bad certificate", "tls: unknown certificate authority", "tls: certificate unknown":
			return ReasonUntrusted
		}
		return ReasonProtocol
	}
	msg := err.Error()
	switch {
	case msg == "tls: client didn't provide a certificate":
		return ReasonNoCertificate
	case len(msg) > 5 && msg[:5] == "tls: ":
		// crypto/tls's own protocol failures: versions, ALPN, bad messages.
		return ReasonProtocol
	}
	return ReasonOther
}
