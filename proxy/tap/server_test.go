package tap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
)

// testPKI is a mesh CA issuing stores for identities.
type testPKI struct {
	t       *testing.T
	anchors []*x509.Certificate
	iss     *pki.Issuer
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	now := time.Now()
	root, key, err := pki.NewRoot("test root", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := pki.NewIssuer(root, key, "test issuer", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{t: t, anchors: []*x509.Certificate{root}, iss: iss}
}

// store is a meshtls store for id holding a fresh certificate.
func (p *testPKI) store(id identity.ID) *meshtls.Store {
	p.t.Helper()
	s, err := meshtls.NewStore(id, p.anchors)
	if err != nil {
		p.t.Fatal(err)
	}
	p.renew(s, id)
	return s
}

func (p *testPKI) renew(s *meshtls.Store, id identity.ID) *x509.Certificate {
	p.t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		p.t.Fatal(err)
	}
	leaf, err := p.iss.Sign(key.Public(), id, time.Hour, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	if err := s.SetCertificate(p.iss.ChainDER(leaf), key); err != nil {
		p.t.Fatal(err)
	}
	return leaf
}

func mustParse(t *testing.T, s string) identity.ID {
	t.Helper()
	id, err := identity.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestServerIdentity: over real TLS on loopback, only the controller's
// identity is served; the proxy's rotated certificate is the one a new
// connection sees.
func TestServerIdentity(t *testing.T) {
	p := newTestPKI(t)
	proxyID, ctrl := mustParse(t, self), identity.Controller("cluster.local")
	store := p.store(proxyID)
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ServerConfig{Hub: NewHub(self, m), Store: store, Controller: ctrl, Metrics: m})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	// call opens a tap as id and returns the certificate the server
	// presented and the first Recv's error.
	call := func(id identity.ID) (*x509.Certificate, error) {
		cfg := p.store(id).ClientConfig(proxyID, []string{"h2"})
		var served *x509.Certificate
		verify := cfg.VerifyConnection
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			served = cs.PeerCertificates[0]
			return verify(cs)
		}
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := apiv1.NewTapClient(conn).Observe(ctx, &apiv1.ObserveRequest{Limit: 1, Sample: 2})
		if err == nil {
			_, err = s.Recv()
		}
		return served, err
	}
	// The controller is served: its invalid request gets its answer.
	if _, err := call(ctrl); status.Code(err) != codes.InvalidArgument {
		t.Errorf("controller: %v, want InvalidArgument (served)", err)
	}
	if got := testutil.ToFloat64(m.Refused.WithLabelValues(RefusedBadRequest)); got != 1 {
		t.Errorf("refused{bad_request} = %v", got)
	}
	for _, who := range []string{peerID, "spiffe://cluster.local/ns/trellis-system/sa/other", "spiffe://other.domain/ns/trellis-system/sa/trellis-controller"} {
		if _, err := call(mustParse(t, who)); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: %v, want refused at the handshake", who, err)
		}
	}
	// The client may see the alert before the server's handshake returns
	// and counts: wait for the count (generous ceiling).
	refused := func() float64 { return testutil.ToFloat64(m.Refused.WithLabelValues(RefusedHandshake)) }
	for start := time.Now(); refused() < 3 && time.Since(start) < 10*time.Second; {
		time.Sleep(10 * time.Millisecond)
	}
	if got := refused(); got != 3 {
		t.Errorf("refused{handshake} = %v, want 3", got)
	}
	leaf := p.renew(store, proxyID)
	if served, _ := call(ctrl); served == nil || !served.Equal(leaf) {
		t.Error("a new connection does not see the rotated certificate")
	}
}
