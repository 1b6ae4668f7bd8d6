package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// expire moves the store's clock past its certificate's expiry.
func expire(s *Store) {
	after := s.Leaf().NotAfter.Add(time.Second)
	s.now = func() time.Time { return after }
}

// TestExpiredCertificateRefused: a store whose certificate expired hands it
// to no peer, on either side, and says why; the handshakes are counted.
func TestExpiredCertificateRefused(t *testing.T) {
	ca := newCA(t, "mesh")
	// The peers' certificates outlive the expired ones, so only ours is
	// expired at the moved clock.
	peerSrv := mustStore(t, serverID, ca.root)
	chain, key := ca.issue(t, serverID, time.Now(), 3*time.Hour)
	if err := peerSrv.SetCertificate(chain, key); err != nil {
		t.Fatal(err)
	}
	peerCli := newStore(t, clientID, ca)

	expiredSrv := newStore(t, serverID, ca)
	expire(expiredSrv)
	r := handshake(t, expiredSrv.ServerConfig(nil), peerCli.ClientConfig(serverID, nil))
	if !errors.Is(r.serverErr, ErrLocalCertificateExpired) {
		t.Fatalf("server with an expired certificate: err %v, want ErrLocalCertificateExpired", r.serverErr)
	}
	if r.clientErr == nil {
		t.Fatal("client completed a handshake with a server that has no valid certificate")
	}
	if got := HandshakeErrorReason(r.serverErr); got != ReasonExpired {
		t.Errorf("server reason %q, want %q", got, ReasonExpired)
	}
	if !strings.Contains(r.serverErr.Error(), "refusing mesh TLS") {
		t.Errorf("error does not say what happens: %v", r.serverErr)
	}

	expiredCli := newStore(t, clientID, ca)
	expire(expiredCli)
	r = handshake(t, peerSrv.ServerConfig(nil), expiredCli.ClientConfig(serverID, nil))
	if !errors.Is(r.clientErr, ErrLocalCertificateExpired) {
		t.Fatalf("client with an expired certificate: err %v, want ErrLocalCertificateExpired", r.clientErr)
	}
	if got := HandshakeErrorReason(r.clientErr); got != ReasonExpired {
		t.Errorf("client reason %q, want %q", got, ReasonExpired)
	}
	if got := expiredSrv.RefusedHandshakes() + expiredCli.RefusedHandshakes(); got != 2 {
		t.Errorf("refused handshakes = %d, want 2", got)
	}
	if expiredSrv.Ready() || expiredCli.Ready() {
		t.Error("an expired store reports ready")
	}
}

// TestControlPlaneWithExpiredCertificate: towards the controller an expired
// certificate is not presented (it would be refused and the proxy could
// never renew); the handshake goes on without one.
func TestControlPlaneWithExpiredCertificate(t *testing.T) {
	ca := newCA(t, "mesh")
	ctrlID := identity.Controller("cluster.local")
	ctrl := newStore(t, ctrlID, ca)
	ctrlCfg := &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: ctrl.getCertificate, ClientAuth: tls.RequestClientCert}
	s := newStore(t, clientID, ca)
	expire(s)
	// Only the proxy's own clock moved; the controller's certificate is
	// verified at the proxy's time, so give it one valid then.
	chain, key := ca.issue(t, ctrlID, s.now().Add(-time.Minute), time.Hour)
	if err := ctrl.SetCertificate(chain, key); err == nil {
		t.Fatal("store installed a certificate not valid yet")
	}
	ctrl.now = s.now
	if err := ctrl.SetCertificate(chain, key); err != nil {
		t.Fatal(err)
	}
	r := handshake(t, ctrlCfg, s.ControlPlaneConfig(ctrlID))
	if r.clientErr != nil || r.serverErr != nil {
		t.Fatalf("handshake: %v / %v", r.clientErr, r.serverErr)
	}
	if n := len(r.serverState.PeerCertificates); n != 0 {
		t.Fatalf("presented %d certificates, want none (expired)", n)
	}
}

func TestCertIssuer(t *testing.T) {
	ca := newCA(t, "mesh")
	other := newCA(t, "other")
	s := mustStore(t, clientID, ca.root)
	if _, _, ok := s.CertIssuer(); ok {
		t.Fatal("issuer info without a certificate")
	}
	chain, key := ca.issue(t, clientID, time.Now(), time.Hour)
	if err := s.SetCertificate(chain, key); err != nil {
		t.Fatal(err)
	}
	wantIssuer, wantAnchor := pki.CertFingerprint(ca.issuer.Cert), pki.CertFingerprint(ca.root)
	for range 2 { // the second call is served from the cache
		is, an, ok := s.CertIssuer()
		if !ok || is != wantIssuer || an != wantAnchor {
			t.Fatalf("CertIssuer = %s %s %v, want %s %s", is, an, ok, wantIssuer, wantAnchor)
		}
	}

	// Two anchors in the bundle: the one the chain verifies to is named.
	if err := s.SetTrustAnchors([]*x509.Certificate{other.root, ca.root}); err != nil {
		t.Fatal(err)
	}
	if is, an, ok := s.CertIssuer(); !ok || is != wantIssuer || an != wantAnchor {
		t.Fatalf("with two anchors: %s %s %v", is, an, ok)
	}
	// Its anchor removed: the issuer is still known, the anchor is none.
	if err := s.SetTrustAnchors([]*x509.Certificate{other.root}); err != nil {
		t.Fatal(err)
	}
	if is, an, ok := s.CertIssuer(); !ok || is != wantIssuer || an != "" {
		t.Fatalf("anchor removed: %s %q %v, want %s \"\"", is, an, ok, wantIssuer)
	}
	expire(s)
	if _, _, ok := s.CertIssuer(); ok {
		t.Fatal("issuer info for an expired certificate")
	}
}
