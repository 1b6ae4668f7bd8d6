package certifier

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/internal/syncbuf"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
)

// ewServer plays the controller for an external workload: single-use
// bootstrap tokens, and renewals only with a client certificate whose key
// is the CSR's. It records the client certificate of every call.
type ewServer struct {
	apiv1.UnimplementedIdentityServer
	issuer   *pki.Issuer
	lifetime time.Duration

	mu          sync.Mutex
	tokens      map[string]bool // unspent bootstrap tokens
	refuseRenew bool
	calls       []ewCall
}

type ewCall struct {
	renew  bool
	serial string // of the presented client certificate, "" for none
	ok     bool
}

func (s *ewServer) Certify(ctx context.Context, req *apiv1.CertifyRequest) (*apiv1.CertifyResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	csr, id, err := pki.ParseCSR(req.GetCertificateSigningRequest())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	call := ewCall{renew: ewtoken.IsRenew(req.GetToken())}
	var leaf *x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			leaf = ti.State.PeerCertificates[0]
			call.serial = leaf.SerialNumber.String()
		}
	}
	defer func() { s.calls = append(s.calls, call) }()
	switch {
	case call.renew && (s.refuseRenew || leaf == nil || !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey)):
		return nil, status.Error(codes.Unauthenticated, "renewal refused")
	case !call.renew && !s.tokens[string(req.GetToken())]:
		return nil, status.Error(codes.Unauthenticated, "unknown or already redeemed bootstrap token")
	}
	delete(s.tokens, string(req.GetToken()))
	cert, err := s.issuer.Sign(csr.PublicKey, id, s.lifetime, time.Now())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	call.ok = true
	return &apiv1.CertifyResponse{Chain: s.issuer.ChainDER(cert)}, nil
}

func (s *ewServer) set(f func(*ewServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// count counts the successful calls of each kind, and renewals that came
// without a certificate.
func (s *ewServer) count() (bootstraps, renewals, renewalsWithoutCert int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.calls {
		switch {
		case c.renew && c.serial == "":
			renewalsWithoutCert++
		case c.renew && c.ok:
			renewals++
		case !c.renew && c.ok:
			bootstraps++
		}
	}
	return
}

// tlsController serves srv on loopback over real TLS that requests (does
// not require) a client certificate, as the controller's does, proving
// the controller identity; it returns the address and the CA.
func tlsController(t *testing.T, srv apiv1.IdentityServer) (string, *x509.Certificate, *pki.Issuer) {
	t.Helper()
	now := time.Now()
	root, rootKey, err := pki.NewRoot("test root", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := pki.NewIssuer(root, rootKey, "test issuer", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	ctrlKey, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ctrlLeaf, err := issuer.Sign(ctrlKey.Public(), identity.Controller("cluster.local"), time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := srv.(*ewServer); ok {
		s.issuer = issuer
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: issuer.ChainDER(ctrlLeaf), PrivateKey: ctrlKey}},
		ClientAuth:   tls.RequestClientCert,
	})))
	apiv1.RegisterIdentityServer(gs, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String(), root, issuer
}

func perCall(addr string, store *meshtls.Store, ctrl identity.ID) PerCallClient {
	return PerCallClient{Target: addr, Options: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(store.ControlPlaneConfig(ctrl)))}}
}

// TestPerCallClientPresentsCurrentCertificate: over real TCP and TLS, each
// call shakes hands anew with the Store's certificate of that moment, and
// the controller is verified as on the shared connection.
func TestPerCallClientPresentsCurrentCertificate(t *testing.T) {
	srv := &ewServer{lifetime: time.Hour, tokens: map[string]bool{}}
	addr, root, issuer := tlsController(t, srv)
	store, err := meshtls.NewStore(workloadID, []*x509.Certificate{root})
	if err != nil {
		t.Fatal(err)
	}
	client := perCall(addr, store, identity.Controller("cluster.local"))
	call := func() string {
		t.Helper()
		_, _ = client.Certify(context.Background(), &apiv1.CertifyRequest{
			Identity: workloadID.String(), Token: ewtoken.RenewToken("books", "vm"), CertificateSigningRequest: csr(t, workloadID),
		})
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if len(srv.calls) == 0 {
			t.Fatal("the server saw no call")
		}
		return srv.calls[len(srv.calls)-1].serial
	}
	if got := call(); got != "" {
		t.Errorf("without a certificate the client presented %s", got)
	}
	for range 2 {
		key, err := pki.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := issuer.Sign(key.Public(), workloadID, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := store.SetCertificate(issuer.ChainDER(leaf), key); err != nil {
			t.Fatal(err)
		}
		if got := call(); got != leaf.SerialNumber.String() {
			t.Errorf("presented %q, want the current certificate %s", got, leaf.SerialNumber)
		}
	}

	// A server proving another identity than the controller's is refused
	// before any request is sent.
	n := len(srv.calls)
	other := perCall(addr, store, identity.ID{TrustDomain: "cluster.local", Namespace: "x", ServiceAccount: "y"})
	if _, err := other.Certify(context.Background(), &apiv1.CertifyRequest{Identity: workloadID.String()}); status.Code(err) != codes.Unavailable {
		t.Errorf("wrong controller identity: %v, want Unavailable", err)
	}
	if len(srv.calls) != n {
		t.Error("a request reached a server of the wrong identity")
	}
}

func csr(t *testing.T, id identity.ID) []byte {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestExternalWorkloadCredentials: the bootstrap token is spent once over
// the shared connection; renewals then present the certificate on their
// own connections; an expired certificate falls back to the token file
// (and says a new token is needed); a new token in the file is sent even
// while renewals work.
func TestExternalWorkloadCredentials(t *testing.T) {
	srv := &ewServer{lifetime: 2 * time.Second, tokens: map[string]bool{"bootstrap-1": true}}
	addr, root, _ := tlsController(t, srv)
	store, err := meshtls.NewStore(workloadID, []*x509.Certificate{root})
	if err != nil {
		t.Fatal(err)
	}
	ctrl := identity.Controller("cluster.local")
	shared, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(store.ControlPlaneConfig(ctrl))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shared.Close() })
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeToken := func(tok string) {
		if err := pki.WriteFileAtomic(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeToken("bootstrap-1")
	var logs syncbuf.Buffer
	e := &env{store: store}
	e.start(t, Config{
		Identity: workloadID, TokenFile: tokenFile, Client: apiv1.NewIdentityClient(shared), Store: store,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		ExternalWorkload: &ExternalWorkload{Namespace: "books", Name: "vm", Renew: perCall(addr, store, ctrl)},
	})
	waitFor(t, "three renewals by certificate", 20*time.Second, func() bool { _, r, _ := srv.count(); return r >= 3 })
	if b, _, noCert := srv.count(); b != 1 || noCert != 0 {
		t.Errorf("bootstraps %d (want 1), renewals without a certificate %d (want 0)", b, noCert)
	}

	// Offline too long: renewals refused until the certificate expires.
	srv.set(func(s *ewServer) { s.refuseRenew = true })
	waitFor(t, "the certificate to expire", 10*time.Second, func() bool { return !store.Ready() })
	waitFor(t, "the log to ask for a new token", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "needs a new bootstrap token") && strings.Contains(logs.String(), "trellis external-workload token vm -n books")
	})
	srv.set(func(s *ewServer) { s.refuseRenew, s.tokens["bootstrap-2"] = false, true })
	writeToken("bootstrap-2")
	waitFor(t, "a certificate from the new token", 10*time.Second, store.Ready)
	if b, _, _ := srv.count(); b != 2 {
		t.Errorf("bootstraps %d, want 2", b)
	}

	// A new token while renewals work is sent once, then renewals go on.
	srv.set(func(s *ewServer) { s.tokens["bootstrap-3"] = true })
	writeToken("bootstrap-3")
	_, before, _ := srv.count()
	waitFor(t, "the third token spent, then renewals", 20*time.Second, func() bool {
		b, r, _ := srv.count()
		return b == 3 && r >= before+2
	})
	if strings.Contains(logs.String(), "bootstrap-") {
		t.Error("a token was logged")
	}
}

// TestExternalWorkloadConfig: the workload must be of the identity's
// namespace and have a renewal client.
func TestExternalWorkloadConfig(t *testing.T) {
	root, _, err := pki.NewRoot("test root", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	store, err := meshtls.NewStore(workloadID, []*x509.Certificate{root})
	if err != nil {
		t.Fatal(err)
	}
	for _, ew := range []*ExternalWorkload{
		{Namespace: "other", Name: "vm", Renew: PerCallClient{}},
		{Namespace: "books", Name: "vm"},
		{Namespace: "books", Name: "VM", Renew: PerCallClient{}},
	} {
		err := Run(context.Background(), Config{Identity: workloadID, TokenFile: os.DevNull, Client: PerCallClient{}, Store: store, ExternalWorkload: ew})
		if err == nil {
			t.Errorf("%+v accepted", ew)
		}
	}
}
