package e2e

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/test/harness"
)

// fakePeer is a TLS server standing where the store says a proxy is. It
// counts handshakes that completed and application bytes received, which
// must both stay zero: the client proxy must refuse it.
type fakePeer struct {
	ln         net.Listener
	handshakes atomic.Int64
	appBytes   atomic.Int64
}

func listenFakePeer(t *testing.T) *fakePeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &fakePeer{ln: ln}
}

func (f *fakePeer) Addr() string { return f.ln.Addr().String() }

// serve accepts until the test ends, presenting chain (DER, leaf first).
func (f *fakePeer) serve(t *testing.T, chain [][]byte, key crypto.Signer) {
	t.Helper()
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: key}},
		NextProtos:   []string{"h2", "trellis-opaque/1"},
		ClientAuth:   tls.RequestClientCert,
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := f.ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, cfg)
				if err := tc.Handshake(); err != nil {
					return
				}
				f.handshakes.Add(1)
				n, _ := io.Copy(io.Discard, tc)
				f.appBytes.Add(n)
			}()
		}
	}()
	t.Cleanup(func() {
		f.ln.Close()
		wg.Wait()
	})
}

func mustID(t *testing.T, sa string) identity.ID {
	t.Helper()
	id, err := identity.Parse(identityOf(sa))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// selfMadeChain issues a certificate for id from a CA the mesh does not
// trust.
func selfMadeChain(t *testing.T, id identity.ID) ([][]byte, crypto.Signer) {
	t.Helper()
	now := time.Now()
	root, rootKey, err := pki.NewRoot("rogue root", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := pki.NewIssuer(root, rootKey, "rogue issuer", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := iss.Sign(key.Public(), id, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	return iss.ChainDER(leaf), key
}

// expiredChain issues, with the mesh's own issuer from the controller's
// state directory, a certificate for id that expired an hour ago.
func expiredChain(t *testing.T, stateDir string, id identity.ID) ([][]byte, crypto.Signer) {
	t.Helper()
	return issueChain(t, stateDir, id, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
}

// issueChain issues a certificate for id with the mesh's issuer (from
// stateDir), valid from notBefore to notAfter, and returns the chain and key.
func issueChain(t testing.TB, stateDir string, id identity.ID, notBefore, notAfter time.Time) ([][]byte, crypto.Signer) {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(stateDir, "issuer.crt"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(stateDir, "issuer.key"))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(certPEM)
	if err != nil || len(certs) == 0 {
		t.Fatalf("issuer.crt: %v", err)
	}
	issKey, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, certs[0], key.Public(), issKey)
	if err != nil {
		t.Fatal(err)
	}
	chain := [][]byte{der}
	for _, c := range certs {
		chain = append(chain, c.Raw)
	}
	return chain, key
}

// TestRefusals checks that a client proxy refuses peers that are not who
// the control plane says, and that a server proxy refuses clients without a
// mesh certificate.
func TestRefusals(t *testing.T) {
	requireBinaries(t)
	beta := startApp(t, "beta")
	rogue := listenFakePeer(t)
	stale := listenFakePeer(t)
	httpPort := []harness.ServicePort{{Port: 80}}
	store := harness.Store{
		Services: []harness.Service{
			{Name: "alpha", Namespace: ns, Ports: httpPort},
			{Name: "rogue", Namespace: ns, Ports: httpPort},
			{Name: "stale", Namespace: ns, Ports: httpPort},
		},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client"},
			// alpha's proxy address is where beta's proxy really listens.
			{Name: "alpha", Namespace: ns, ServiceAccount: "alpha", Endpoints: []harness.Endpoint{
				{Service: "alpha", Port: 80, TargetPort: port(t, beta.Addr)},
			}},
			{Name: "beta", Namespace: ns, ServiceAccount: "beta"},
			{Name: "rogue", Namespace: ns, ServiceAccount: "rogue", ProxyAddr: rogue.Addr(), Endpoints: []harness.Endpoint{
				{Service: "rogue", Port: 80, TargetPort: 9},
			}},
			{Name: "stale", Namespace: ns, ServiceAccount: "stale", ProxyAddr: stale.Addr(), Endpoints: []harness.Endpoint{
				{Service: "stale", Port: 80, TargetPort: 9},
			}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	st := m.Store()
	rogueChain, rogueKey := selfMadeChain(t, mustID(t, "rogue"))
	rogue.serve(t, rogueChain, rogueKey)
	staleChain, staleKey := expiredChain(t, m.StateDir, mustID(t, "stale"))
	stale.serve(t, staleChain, staleKey)
	betaPx := m.StartProxy(harness.ProxySpec{Workload: "beta", AppAddr: beta.Addr, InboundAddr: st.Workload("alpha").ProxyAddr})
	client := m.StartProxy(harness.ProxySpec{Workload: "client"})
	waitReady(t, betaPx, client)
	c := meshClient(client.OutboundAddr, 20*time.Second)
	defer c.CloseIdleConnections()

	refused := func(t *testing.T, authority, reason string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+authority+"/echo", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v (want a 5xx answer from the client proxy)", authority, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 500 {
			t.Errorf("GET %s: %s, want 5xx", authority, resp.Status)
		}
		if s := resp.Header.Get("Echo-Served-By"); s != "" {
			t.Errorf("GET %s was served by %q", authority, s)
		}
		metricAtLeast(t, client, "trellis_tls_handshake_errors_total",
			map[string]string{"direction": "outbound", "reason": reason}, 1, 5*time.Second)
	}

	t.Run("wrong-identity", func(t *testing.T) {
		refused(t, "alpha.e2e:80", "wrong_identity")
		if n := beta.served.Load(); n != 0 {
			t.Errorf("the wrong peer's app served %d requests", n)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		refused(t, "rogue.e2e:80", "untrusted")
		if h, b := rogue.handshakes.Load(), rogue.appBytes.Load(); h != 0 || b != 0 {
			t.Errorf("untrusted peer completed %d handshakes and got %d bytes", h, b)
		}
	})
	t.Run("expired", func(t *testing.T) {
		refused(t, "stale.e2e:80", "expired")
		if h, b := stale.handshakes.Load(), stale.appBytes.Load(); h != 0 || b != 0 {
			t.Errorf("expired peer completed %d handshakes and got %d bytes", h, b)
		}
	})

	// A raw TLS client at the server proxy's inbound with the mesh SNI.
	anchors, err := os.ReadFile(m.AnchorPath())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(anchors) {
		t.Fatal("no anchors in anchor.crt")
	}
	rawClient := func(t *testing.T, certs []tls.Certificate, reason string) {
		t.Helper()
		d := &net.Dialer{Timeout: 5 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", betaPx.InboundAddr, &tls.Config{
			MinVersion:   tls.VersionTLS13,
			ServerName:   mustID(t, "beta").ServerName(),
			RootCAs:      roots,
			NextProtos:   []string{"h2"},
			Certificates: certs,
			// The server's chain verifies against the anchor, but its
			// SPIFFE ID is in a URI SAN, not a DNS name.
			InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				_, err := pki.Verify(raw, roots, x509.ExtKeyUsageServerAuth, mustID(t, "beta"), time.Now())
				return err
			},
		})
		if err == nil {
			// TLS 1.3: the server judges our certificate after the client
			// handshake is done; its verdict arrives on the first read.
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
			buf := make([]byte, 64)
			n, rerr := conn.Read(buf)
			conn.Close()
			if rerr == nil || n > 0 {
				t.Fatalf("server proxy accepted a client with %d certificates: read %d bytes, err %v", len(certs), n, rerr)
			}
		}
		metricAtLeast(t, betaPx, "trellis_tls_handshake_errors_total",
			map[string]string{"direction": "inbound", "reason": reason}, 1, 5*time.Second)
	}
	t.Run("inbound-no-client-cert", func(t *testing.T) {
		rawClient(t, nil, "no_certificate")
	})
	t.Run("inbound-untrusted-client-cert", func(t *testing.T) {
		chain, key := selfMadeChain(t, mustID(t, "client"))
		rawClient(t, []tls.Certificate{{Certificate: chain, PrivateKey: key}}, "untrusted")
	})
	if n := beta.served.Load(); n != 0 {
		t.Errorf("beta's app served %d requests; every caller here was to be refused", n)
	}
}
