package meshtls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// testCA is an anchor and an issuer, valid from 5h ago, so certificates
// that are already expired can be issued from it too.
type testCA struct {
	root   *x509.Certificate
	issuer *pki.Issuer
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	start := time.Now().Add(-5 * time.Hour)
	root, key, err := pki.NewRoot(name+" root", 24*time.Hour, start)
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.NewIssuer(root, key, name+" issuer", 24*time.Hour, start)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{root: root, issuer: is}
}

// issue returns a chain and key for id, valid for lifetime from at.
func (ca *testCA) issue(t *testing.T, id identity.ID, at time.Time, lifetime time.Duration) ([][]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.issuer.Sign(key.Public(), id, lifetime, at)
	if err != nil {
		t.Fatal(err)
	}
	return ca.issuer.ChainDER(leaf), key
}

func (ca *testCA) tlsCert(t *testing.T, id identity.ID, at time.Time, lifetime time.Duration) tls.Certificate {
	chain, key := ca.issue(t, id, at, lifetime)
	return tls.Certificate{Certificate: chain, PrivateKey: key}
}

func mustID(t *testing.T, s string) identity.ID {
	t.Helper()
	id, err := identity.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// newStore returns a store for id trusting anchors, with a fresh certificate from ca.
func newStore(t *testing.T, id identity.ID, ca *testCA, anchors ...*x509.Certificate) *Store {
	t.Helper()
	if len(anchors) == 0 {
		anchors = []*x509.Certificate{ca.root}
	}
	s, err := NewStore(id, anchors)
	if err != nil {
		t.Fatal(err)
	}
	chain, key := ca.issue(t, id, time.Now(), time.Hour)
	if err := s.SetCertificate(chain, key); err != nil {
		t.Fatal(err)
	}
	return s
}

var (
	serverID = identity.ID{TrustDomain: "cluster.local", Namespace: "books", ServiceAccount: "server"}
	clientID = identity.ID{TrustDomain: "cluster.local", Namespace: "web", ServiceAccount: "client"}
)

type result struct {
	clientErr, serverErr     error
	clientState, serverState tls.ConnectionState
	client, server           *tls.Conn
}

// handshake runs one real TLS handshake over loopback TCP. The connections
// stay open until the test ends (for tests that use them afterwards).
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) result {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type srvResult struct {
		conn *tls.Conn
		err  error
	}
	ch := make(chan srvResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- srvResult{err: err}
			return
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, serverCfg)
		err = tc.Handshake()
		if err == nil {
			// In TLS 1.3 the server finishes before the client's
			// verification reaches it; a read surfaces a rejection.
			tc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			_, rerr := tc.Read(make([]byte, 1))
			var ne net.Error
			if rerr != nil && !(errors.As(rerr, &ne) && ne.Timeout()) && !errors.Is(rerr, io.EOF) {
				err = rerr
			}
			tc.SetReadDeadline(time.Time{})
		}
		ch <- srvResult{conn: tc, err: err}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	cc := tls.Client(raw, clientCfg)
	var r result
	r.clientErr = cc.Handshake()
	if r.clientErr != nil {
		cc.Close()
	}
	s := <-ch
	r.serverErr = s.err
	r.client, r.server = cc, s.conn
	r.clientState = cc.ConnectionState()
	if s.conn != nil {
		r.serverState = s.conn.ConnectionState()
	}
	t.Cleanup(func() {
		cc.Close()
		if s.conn != nil {
			s.conn.Close()
		}
	})
	if r.clientErr == nil {
		raw.SetDeadline(time.Time{})
	}
	if s.conn != nil && r.serverErr == nil {
		s.conn.SetDeadline(time.Time{})
	}
	return r
}

func TestMutualTLS(t *testing.T) {
	ca := newCA(t, "mesh")
	srv := newStore(t, serverID, ca)
	cli := newStore(t, clientID, ca)
	r := handshake(t, srv.ServerConfig([]string{"h2", "trellis-opaque/1"}), cli.ClientConfig(serverID, []string{"trellis-opaque/1"}))
	if r.clientErr != nil || r.serverErr != nil {
		t.Fatalf("handshake: client %v, server %v", r.clientErr, r.serverErr)
	}
	if got, ok := PeerIdentity(r.clientState); !ok || got != serverID {
		t.Errorf("client sees peer %v (%v), want %v", got, ok, serverID)
	}
	if got, ok := PeerIdentity(r.serverState); !ok || got != clientID {
		t.Errorf("server sees peer %v (%v), want %v", got, ok, clientID)
	}
	if r.clientState.Version != tls.VersionTLS13 {
		t.Errorf("version = %#x, want TLS 1.3", r.clientState.Version)
	}
	if r.clientState.NegotiatedProtocol != "trellis-opaque/1" {
		t.Errorf("ALPN = %q", r.clientState.NegotiatedProtocol)
	}
	if r.clientState.ServerName != "" && r.serverState.ServerName != serverID.ServerName() {
		t.Errorf("SNI = %q, want %q", r.serverState.ServerName, serverID.ServerName())
	}
	echo(t, r)
}

// echo checks the connection carries data both ways.
func echo(t *testing.T, r result) {
	t.Helper()
	msg := []byte("ping")
	go func() {
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(r.server, buf); err == nil {
			r.server.Write(buf)
		}
	}()
	r.client.SetDeadline(time.Now().Add(5 * time.Second))
	defer r.client.SetDeadline(time.Time{})
	if _, err := r.client.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(r.client, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(buf) != string(msg) {
		t.Fatalf("echo = %q", buf)
	}
}

func TestHandshakeRefused(t *testing.T) {
	ca := newCA(t, "mesh")
	other := newCA(t, "other")
	past := time.Now().Add(-3 * time.Hour)
	srv := newStore(t, serverID, ca)
	cli := newStore(t, clientID, ca)
	foreignTD := identity.ID{TrustDomain: "evil.example", Namespace: "web", ServiceAccount: "client"}

	// Test-only peers that present arbitrary certificates and verify
	// nothing themselves, to probe our side's verification.
	rawServer := func(c tls.Certificate) *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{c}, ClientAuth: tls.RequireAnyClientCert}
	}
	rawClient := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: certs}
	}

	tests := []struct {
		name      string
		server    *tls.Config
		client    *tls.Config
		verifier  string // "client" or "server": the side whose reason is checked
		reason    string
		wantErrIs error
	}{
		{"wrong server identity", srv.ServerConfig(nil), cli.ClientConfig(mustID(t, "spiffe://cluster.local/ns/books/sa/other"), nil), "client", ReasonWrongIdentity, pki.ErrWrongIdentity},
		{"server from untrusted anchor", newStore(t, serverID, other).ServerConfig(nil), cli.ClientConfig(serverID, nil), "client", ReasonUntrusted, pki.ErrUntrusted},
		{"expired server certificate", rawServer(ca.tlsCert(t, serverID, past, time.Hour)), cli.ClientConfig(serverID, nil), "client", ReasonExpired, pki.ErrExpired},
		{"server certificate without SPIFFE ID", rawServer(selfIssuedNoURI(t, ca)), cli.ClientConfig(serverID, nil), "client", ReasonWrongIdentity, pki.ErrBadIdentity},
		{"no client certificate", srv.ServerConfig(nil), rawClient(), "server", ReasonNoCertificate, nil},
		{"client from untrusted anchor", srv.ServerConfig(nil), rawClient(other.tlsCert(t, clientID, time.Now(), time.Hour)), "server", ReasonUntrusted, pki.ErrUntrusted},
		{"expired client certificate", srv.ServerConfig(nil), rawClient(ca.tlsCert(t, clientID, past, time.Hour)), "server", ReasonExpired, pki.ErrExpired},
		{"client from another trust domain", srv.ServerConfig(nil), rawClient(ca.tlsCert(t, foreignTD, time.Now(), time.Hour)), "server", ReasonWrongIdentity, pki.ErrWrongIdentity},
		{"TLS 1.2 client", srv.ServerConfig(nil), &tls.Config{MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true}, "server", ReasonProtocol, nil},
		{"TLS 1.2 server", &tls.Config{MaxVersion: tls.VersionTLS12, Certificates: []tls.Certificate{ca.tlsCert(t, serverID, time.Now(), time.Hour)}}, cli.ClientConfig(serverID, nil), "client", ReasonProtocol, nil},
		{"client without own certificate yet", srv.ServerConfig(nil), mustStore(t, clientID, ca.root).ClientConfig(serverID, nil), "client", ReasonNoCertificate, ErrNoLocalCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := handshake(t, tt.server, tt.client)
			if r.clientErr == nil && r.serverErr == nil {
				t.Fatal("handshake succeeded, want it refused")
			}
			err := r.clientErr
			if tt.verifier == "server" {
				err = r.serverErr
			}
			if err == nil {
				t.Fatalf("%s side did not fail (client %v, server %v)", tt.verifier, r.clientErr, r.serverErr)
			}
			if got := HandshakeErrorReason(err); got != tt.reason {
				t.Errorf("reason = %q, want %q (err: %v)", got, tt.reason, err)
			}
			if tt.wantErrIs != nil && !errors.Is(err, tt.wantErrIs) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.wantErrIs)
			}
			if tt.verifier == "server" {
				if _, ok := PeerIdentity(r.serverState); ok {
					t.Error("server records a peer identity after a refused handshake")
				}
			}
		})
	}
}

func mustStore(t *testing.T, id identity.ID, anchors ...*x509.Certificate) *Store {
	t.Helper()
	s, err := NewStore(id, anchors)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// selfIssuedNoURI returns a certificate from ca with a DNS SAN instead of a
// SPIFFE ID: chain-valid but carrying no identity.
func selfIssuedNoURI(t *testing.T, ca *testCA) tls.Certificate {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: bigOne(),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{serverID.ServerName()},
	}
	der, err := x509.CreateCertificate(nil, tmpl, ca.issuer.Cert, key.Public(), ca.issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.issuer.Cert.Raw}, PrivateKey: key}
}

func TestPlaintextToServer(t *testing.T) {
	ca := newCA(t, "mesh")
	srv := newStore(t, serverID, ca)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		errc <- tls.Server(c, srv.ServerConfig(nil)).Handshake()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	err = <-errc
	if got := HandshakeErrorReason(err); got != ReasonProtocol {
		t.Fatalf("reason = %q for %v, want protocol", got, err)
	}
}

func TestTrustAnchorRotation(t *testing.T) {
	ca1 := newCA(t, "one")
	ca2 := newCA(t, "two")
	srv1 := newStore(t, serverID, ca1)
	srv2 := newStore(t, serverID, ca2, ca1.root, ca2.root)
	cli := newStore(t, clientID, ca1, ca1.root, ca2.root)
	// srv2 trusts ca1 (the client's issuer) and presents a ca2 certificate.

	established := handshake(t, srv1.ServerConfig(nil), cli.ClientConfig(serverID, nil))
	if established.clientErr != nil || established.serverErr != nil {
		t.Fatalf("initial handshake: %v / %v", established.clientErr, established.serverErr)
	}

	// The client drops ca1: new handshakes to a ca1 server fail, ca2 works,
	// and the connection made before keeps working.
	if err := cli.SetTrustAnchors([]*x509.Certificate{ca2.root}); err != nil {
		t.Fatal(err)
	}
	r := handshake(t, srv1.ServerConfig(nil), cli.ClientConfig(serverID, nil))
	if got := HandshakeErrorReason(r.clientErr); got != ReasonUntrusted {
		t.Fatalf("after dropping ca1: reason %q (err %v), want untrusted", got, r.clientErr)
	}
	r = handshake(t, srv2.ServerConfig(nil), cli.ClientConfig(serverID, nil))
	if r.clientErr != nil || r.serverErr != nil {
		t.Fatalf("after adding ca2: %v / %v", r.clientErr, r.serverErr)
	}
	echo(t, established)

	// Same on the server side: srv1 stops trusting ca1 clients.
	if err := srv1.SetTrustAnchors([]*x509.Certificate{ca2.root}); err != nil {
		t.Fatal(err)
	}
	r = handshake(t, srv1.ServerConfig(nil), &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
		Certificates: []tls.Certificate{ca1.tlsCert(t, clientID, time.Now(), time.Hour)}})
	if got := HandshakeErrorReason(r.serverErr); got != ReasonUntrusted {
		t.Fatalf("server after dropping ca1: reason %q (err %v)", got, r.serverErr)
	}
	echo(t, established)
}

func TestCertificateRenewal(t *testing.T) {
	ca := newCA(t, "mesh")
	srv := newStore(t, serverID, ca)
	cli := newStore(t, clientID, ca)
	cfg := srv.ServerConfig(nil) // built once, like a long-running listener
	first := handshake(t, cfg, cli.ClientConfig(serverID, nil))
	if first.clientErr != nil {
		t.Fatal(first.clientErr)
	}
	chain, key := ca.issue(t, serverID, time.Now(), 2*time.Hour)
	if err := srv.SetCertificate(chain, key); err != nil {
		t.Fatal(err)
	}
	second := handshake(t, cfg, cli.ClientConfig(serverID, nil))
	if second.clientErr != nil {
		t.Fatal(second.clientErr)
	}
	if !second.clientState.PeerCertificates[0].Equal(srv.Leaf()) {
		t.Fatal("new handshake did not get the renewed certificate")
	}
	if first.clientState.PeerCertificates[0].Equal(srv.Leaf()) {
		t.Fatal("renewal did not change the certificate")
	}
	echo(t, first)
}

func TestControlPlaneConfig(t *testing.T) {
	ca := newCA(t, "mesh")
	ctrlID := identity.Controller("cluster.local")
	ctrl := newStore(t, ctrlID, ca)
	// The controller requests but does not require client certificates.
	ctrlCfg := &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: ctrl.getCertificate, ClientAuth: tls.RequestClientCert}

	fresh := mustStore(t, clientID, ca.root)
	r := handshake(t, ctrlCfg, fresh.ControlPlaneConfig(ctrlID))
	if r.clientErr != nil || r.serverErr != nil {
		t.Fatalf("before first certificate: %v / %v", r.clientErr, r.serverErr)
	}
	if len(r.serverState.PeerCertificates) != 0 {
		t.Fatal("presented a certificate it does not have")
	}

	certified := newStore(t, clientID, ca)
	r = handshake(t, ctrlCfg, certified.ControlPlaneConfig(ctrlID))
	if r.clientErr != nil {
		t.Fatal(r.clientErr)
	}
	if got, ok := PeerIdentity(r.serverState); !ok || got != clientID {
		t.Fatalf("controller sees %v, want %v", got, clientID)
	}

	r = handshake(t, ctrlCfg, certified.ControlPlaneConfig(identity.Controller("other.local")))
	if !errors.Is(r.clientErr, pki.ErrWrongIdentity) {
		t.Fatalf("impostor controller: err %v, want wrong identity", r.clientErr)
	}
}

func TestStore(t *testing.T) {
	ca := newCA(t, "mesh")
	other := newCA(t, "other")
	if _, err := NewStore(identity.ID{}, []*x509.Certificate{ca.root}); err == nil {
		t.Error("NewStore accepted an invalid identity")
	}
	if _, err := NewStore(clientID, nil); err == nil {
		t.Error("NewStore accepted no anchors")
	}
	chain, _ := ca.issue(t, clientID, time.Now(), time.Hour)
	leaf, _ := x509.ParseCertificate(chain[0])
	if _, err := NewStore(clientID, []*x509.Certificate{leaf}); err == nil {
		t.Error("NewStore accepted a leaf as trust anchor")
	}

	s := mustStore(t, clientID, ca.root)
	if s.Ready() || !s.Expiry().IsZero() || s.Leaf() != nil {
		t.Fatal("new store claims a certificate")
	}
	if s.BundleFingerprint() != pki.Fingerprint([]*x509.Certificate{ca.root}) {
		t.Error("bundle fingerprint")
	}
	if s.LocalIdentity() != clientID {
		t.Error("local identity")
	}
	otherKey, _ := pki.GenerateKey()
	good, goodKey := ca.issue(t, clientID, time.Now(), time.Hour)
	wrongID, wrongIDKey := ca.issue(t, serverID, time.Now(), time.Hour)
	untrusted, untrustedKey := other.issue(t, clientID, time.Now(), time.Hour)
	expired, expiredKey := ca.issue(t, clientID, time.Now().Add(-3*time.Hour), time.Hour)
	tests := []struct {
		name  string
		chain [][]byte
		key   crypto.Signer
	}{
		{"empty chain", nil, goodKey},
		{"no key", good, nil},
		{"garbage DER", [][]byte{[]byte("nope")}, goodKey},
		{"key mismatch", good, otherKey},
		{"wrong identity", wrongID, wrongIDKey},
		{"untrusted", untrusted, untrustedKey},
		{"expired", expired, expiredKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.SetCertificate(tt.chain, tt.key); err == nil {
				t.Fatal("accepted")
			}
			if s.Ready() {
				t.Fatal("store became ready from a rejected certificate")
			}
		})
	}
	if err := s.SetCertificate(good, goodKey); err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(good[0])
	if !s.Ready() || !s.Expiry().Equal(leaf.NotAfter) {
		t.Fatalf("Ready %v, Expiry %v, want %v", s.Ready(), s.Expiry(), leaf.NotAfter)
	}
	// A rejected renewal keeps the good certificate.
	if err := s.SetCertificate(untrusted, untrustedKey); err == nil {
		t.Fatal("accepted untrusted renewal")
	}
	if !s.Leaf().Equal(leaf) {
		t.Fatal("rejected renewal replaced the certificate")
	}
	// Ready follows the clock.
	s.now = func() time.Time { return leaf.NotAfter.Add(time.Second) }
	if s.Ready() {
		t.Fatal("Ready after expiry")
	}
}

func TestHandshakeErrorReason(t *testing.T) {
	remote := func(msg string) error {
		return &net.OpError{Op: "remote error", Err: errors.New(msg)}
	}
	tests := []struct {
		err  error
		want string
	}{
		{nil, ReasonOther},
		{io.EOF, ReasonOther},
		{os.ErrDeadlineExceeded, ReasonOther},
		{fmt.Errorf("dial: %w", pki.ErrUntrusted), ReasonUntrusted},
		{fmt.Errorf("x: %w", pki.ErrWrongIdentity), ReasonWrongIdentity},
		{pki.ErrBadIdentity, ReasonWrongIdentity},
		{pki.ErrExpired, ReasonExpired},
		{pki.ErrNoCertificate, ReasonNoCertificate},
		{x509.CertificateInvalidError{Reason: x509.Expired}, ReasonExpired},
		{x509.UnknownAuthorityError{}, ReasonUntrusted},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, ReasonProtocol},
		{errors.New("tls: client didn't provide a certificate"), ReasonNoCertificate},
		{errors.New("tls: client offered only unsupported versions: [303]"), ReasonProtocol},
		{remote("tls: certificate required"), ReasonNoCertificate},
		{remote("tls: bad certificate"), ReasonUntrusted},
		{remote("tls: expired certificate"), ReasonExpired},
		{remote("tls: protocol version not supported"), ReasonProtocol},
		{errors.New("connection reset by peer"), ReasonOther},
	}
	for _, tt := range tests {
		name := "nil"
		if tt.err != nil {
			name = tt.err.Error()
		}
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			if got := HandshakeErrorReason(tt.err); got != tt.want {
				t.Fatalf("HandshakeErrorReason(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func bigOne() *big.Int { return big.NewInt(1) }
