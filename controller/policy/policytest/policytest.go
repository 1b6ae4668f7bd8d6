// Package policytest gives tests of Policy.WatchInbound a stream context
// whose caller proved a mesh identity, as the gRPC server's TLS leaves it.
package policytest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// Stream is a Policy_WatchInboundServer that hands answers to the test.
type Stream struct {
	grpc.ServerStream
	Ctx context.Context
	Out chan *apiv1.ServerPolicy
}

// Context implements grpc.ServerStream.
func (s *Stream) Context() context.Context { return s.Ctx }

// Send implements apiv1.Policy_WatchInboundServer.
func (s *Stream) Send(p *apiv1.ServerPolicy) error {
	s.Out <- p
	return nil
}

// CallerContext returns ctx carrying a peer whose verified client
// certificate holds the SPIFFE ID id (and the address of ctx's peer, if
// any: one connection).
func CallerContext(t testing.TB, ctx context.Context, id string) context.Context {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	state := tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{cert},
		VerifiedChains: [][]*x509.Certificate{{cert}}}
	p := &peer.Peer{AuthInfo: credentials.TLSInfo{State: state}}
	if old, ok := peer.FromContext(ctx); ok {
		p.Addr = old.Addr
	}
	return peer.NewContext(ctx, p)
}
