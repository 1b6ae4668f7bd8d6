package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Two clusters under one anchor, each issuer constrained to its own trust
// domain (docs/multicluster.md): a server accepts a peer of the other
// domain only when told to, and never a certificate the other issuer
// made for its own domain.
func TestAcceptTrustDomains(t *testing.T) {
	start := time.Now().Add(-time.Hour)
	root, rootKey, err := pki.NewRoot("shared anchor", 24*time.Hour, start)
	if err != nil {
		t.Fatal(err)
	}
	issuers := map[string]*pki.Issuer{}
	for _, td := range []string{"cluster-a.local", "cluster-b.local"} {
		if issuers[td], err = pki.NewTrustDomainIssuer(root, rootKey, td+" issuer", td, 24*time.Hour, start); err != nil {
			t.Fatal(err)
		}
	}
	server := identity.ID{TrustDomain: "cluster-a.local", Namespace: "books", ServiceAccount: "books"}
	webB := identity.ID{TrustDomain: "cluster-b.local", Namespace: "shop", ServiceAccount: "web"}
	webA := identity.ID{TrustDomain: "cluster-a.local", Namespace: "shop", ServiceAccount: "web"}
	store := func(t *testing.T, id identity.ID, issuer *pki.Issuer, accept ...string) *Store {
		t.Helper()
		s := mustStore(t, id, root)
		key, err := pki.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := issuer.Sign(key.Public(), id, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetCertificate(issuer.ChainDER(leaf), key); err != nil {
			t.Fatal(err)
		}
		if accept != nil {
			if err := s.AcceptTrustDomains(accept); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	// B's issuer signing A's identity: its name constraint forbids it, so
	// only a hand-made certificate can try.
	forged := func(t *testing.T) tls.Certificate {
		t.Helper()
		key, err := pki.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		is := issuers["cluster-b.local"]
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(99), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
			URIs:        []*url.URL{{Scheme: "spiffe", Host: "cluster-a.local", Path: "/ns/shop/sa/admin"}},
		}
		der, err := x509.CreateCertificate(nil, tmpl, is.Cert, key.Public(), is.Key)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der, is.Cert.Raw}, PrivateKey: key}
	}
	tests := []struct {
		name   string
		accept []string
		client func(t *testing.T) *tls.Config
		want   string // the peer identity the server records; "" refused
	}{
		{"the same domain", nil, func(t *testing.T) *tls.Config {
			return store(t, webA, issuers["cluster-a.local"]).ClientConfig(server, nil)
		}, webA.String()},
		{"another domain, not accepted", nil, func(t *testing.T) *tls.Config {
			return store(t, webB, issuers["cluster-b.local"]).ClientConfig(server, nil)
		}, ""},
		{"another domain, accepted", []string{"cluster-b.local"}, func(t *testing.T) *tls.Config {
			return store(t, webB, issuers["cluster-b.local"]).ClientConfig(server, nil)
		}, webB.String()},
		{"another domain, a third one accepted", []string{"cluster-c.local"}, func(t *testing.T) *tls.Config {
			return store(t, webB, issuers["cluster-b.local"]).ClientConfig(server, nil)
		}, ""},
		{"the other issuer forging a local identity", []string{"cluster-b.local"}, func(t *testing.T) *tls.Config {
			return &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{forged(t)}}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := store(t, server, issuers["cluster-a.local"], tt.accept...)
			r := handshake(t, srv.ServerConfig(nil), tt.client(t))
			if tt.want == "" {
				if r.serverErr == nil {
					t.Fatalf("server accepted the peer, want it refused")
				}
				if !errors.Is(r.serverErr, pki.ErrWrongIdentity) && !errors.Is(r.serverErr, pki.ErrUntrusted) && !errors.Is(r.serverErr, pki.ErrBadIdentity) {
					t.Errorf("server error %v: want a wrong identity or an untrusted chain", r.serverErr)
				}
				return
			}
			if r.serverErr != nil || r.clientErr != nil {
				t.Fatalf("handshake refused: server %v, client %v", r.serverErr, r.clientErr)
			}
			if id, ok := PeerIdentity(r.serverState); !ok || id.String() != tt.want {
				t.Errorf("server recorded peer %v (%v), want %s", id, ok, tt.want)
			}
		})
	}
}

func TestAcceptTrustDomainsRefusesBadInput(t *testing.T) {
	s := mustStore(t, serverID, newCA(t, "x").root)
	for _, domains := range [][]string{{"cluster.local"}, {""}, {"UPPER.example"}, {"has space"}, {"a.example", "spiffe://b.example"}} {
		if err := s.AcceptTrustDomains(domains); err == nil {
			t.Errorf("AcceptTrustDomains(%q) accepted", domains)
		}
	}
	if err := s.AcceptTrustDomains([]string{"cluster-b.local", "cluster-c.local"}); err != nil {
		t.Fatal(err)
	}
	if !s.accepts("cluster-b.local") || !s.accepts("cluster.local") || s.accepts("cluster-d.local") {
		t.Error("accepts disagrees with what was set")
	}
}
