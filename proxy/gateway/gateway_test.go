package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/internal/routingname"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
)

var (
	webA   = identity.ID{TrustDomain: "cluster-a.local", Namespace: "shop", ServiceAccount: "web"}
	booksB = identity.ID{TrustDomain: "cluster-b.local", Namespace: "shop", ServiceAccount: "books"}
)

// meshStores: a's web and b's books, each certified by its cluster's
// issuer under one anchor, each accepting the other's trust domain.
func meshStores(t *testing.T) (client, server *meshtls.Store) {
	t.Helper()
	start := time.Now().Add(-time.Hour)
	root, rootKey, err := pki.NewRoot("anchor", 24*time.Hour, start)
	if err != nil {
		t.Fatal(err)
	}
	stores := make([]*meshtls.Store, 2)
	for i, x := range []struct {
		id    identity.ID
		other string
	}{{webA, "cluster-b.local"}, {booksB, "cluster-a.local"}} {
		is, err := pki.NewTrustDomainIssuer(root, rootKey, "issuer-"+x.id.TrustDomain, x.id.TrustDomain, 24*time.Hour, start)
		if err != nil {
			t.Fatal(err)
		}
		key, err := pki.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := is.Sign(key.Public(), x.id, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		s, err := meshtls.NewStore(x.id, []*x509.Certificate{root})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetCertificate(is.ChainDER(leaf), key); err != nil {
			t.Fatal(err)
		}
		if err := s.AcceptTrustDomains([]string{x.other}); err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	return stores[0], stores[1]
}

// server is b's books proxy: mesh TLS, echoing, reporting the peer
// identity and the server name it was asked for.
type seen struct {
	peer, serverName string
}

func meshServer(t *testing.T, s *meshtls.Store) (addr string, got <-chan seen) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", s.ServerConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan seen, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					ch <- seen{peer: "handshake failed: " + err.Error()}
					return
				}
				cs := tc.ConnectionState()
				id, err := identity.FromCertificate(cs.PeerCertificates[0])
				if err != nil {
					ch <- seen{peer: err.Error()}
					return
				}
				ch <- seen{peer: id.String(), serverName: cs.ServerName}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String(), ch
}

func startGateway(t *testing.T, g *Gateway) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// TestGatewayPassesMeshTLS: a's web dials b's gateway with the routing
// name of books as its server name and b's books identity expected; the
// gateway passes the bytes to books' proxy without terminating TLS. The
// handshake is end to end: books sees web's own identity and the routing
// name, web verifies books' identity, and data flows both ways.
func TestGatewayPassesMeshTLS(t *testing.T) {
	client, server := meshStores(t)
	booksAddr, got := meshServer(t, server)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	gw := startGateway(t, &Gateway{ClusterDomain: "cluster.local", Metrics: m, Endpoints: func(_ context.Context, a string) ([]string, error) {
		asked = append(asked, a)
		if a == "books.shop.svc.cluster.local:8080" {
			return []string{"127.0.0.1:1", booksAddr}, nil // one endpoint down: the next is tried
		}
		return nil, nil
	}})
	name := routingname.Target{Service: "books", Namespace: "shop", Port: 8080}.ServerName("cluster.local")
	cfg := client.ClientConfig(booksB, nil)
	cfg.ServerName = name
	conn, err := tls.Dial("tcp", gw, cfg)
	if err != nil {
		t.Fatalf("mesh TLS through the gateway: %v", err)
	}
	defer conn.Close()
	msg := []byte("GET /books HTTP/1.1\r\nHost: books\r\n\r\n")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, back); err != nil || !bytes.Equal(back, msg) {
		t.Fatalf("echo through the gateway: %q, %v", back, err)
	}
	s := <-got
	if s.peer != webA.String() || s.serverName != name {
		t.Errorf("books saw peer %q asking for %q, want %q asking for %q", s.peer, s.serverName, webA, name)
	}
	if len(asked) != 1 || asked[0] != "books.shop.svc.cluster.local:8080" {
		t.Errorf("gateway asked for %v", asked)
	}
	if n := testutil.ToFloat64(m.conns.WithLabelValues(ResultRouted)); n != 1 {
		t.Errorf("routed %v", n)
	}
}

// TestGatewayRefuses: what is not a mesh client asking for an exported
// service is closed without a byte from the gateway, and counted.
func TestGatewayRefuses(t *testing.T) {
	client, server := meshStores(t)
	booksAddr, _ := meshServer(t, server)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, &Gateway{ClusterDomain: "cluster.local", Metrics: m, HelloTimeout: 300 * time.Millisecond,
		Endpoints: func(_ context.Context, a string) ([]string, error) {
			switch a {
			case "books.shop.svc.cluster.local:8080":
				return []string{booksAddr}, nil
			case "down.shop.svc.cluster.local:80":
				return []string{"127.0.0.1:1"}, nil
			case "broken.shop.svc.cluster.local:80":
				return nil, errors.New("control plane unreachable")
			}
			return nil, nil // not exported
		}})
	tlsWith := func(name string) func(net.Conn) {
		return func(c net.Conn) {
			cfg := client.ClientConfig(booksB, nil)
			cfg.ServerName = name
			_ = tls.Client(c, cfg).Handshake()
		}
	}
	raw := func(b []byte) func(net.Conn) { return func(c net.Conn) { _, _ = c.Write(b) } }
	// A handshake record announcing a 64 KiB ClientHello, then padding.
	huge := append([]byte{22, 3, 1, 0x40, 0, 1, 1, 0, 0}, make([]byte, 20<<10)...)
	tests := []struct {
		name   string
		send   func(net.Conn)
		result string
	}{
		{"plain HTTP", raw([]byte("GET / HTTP/1.1\r\nHost: books.shop.svc.cluster.local\r\n\r\n")), ResultNotTLS},
		{"no server name", tlsWith(""), ResultNoServerName},
		{"an identity's name, not a routing name", tlsWith(booksB.ServerName()), ResultBadName},
		{"another cluster's domain", tlsWith("8080.books.shop.svc.cluster-b.local"), ResultBadName},
		{"not exported", tlsWith("80.secrets.shop.svc.cluster.local"), ResultNoEndpoints},
		{"control plane error", tlsWith("80.broken.shop.svc.cluster.local"), ResultNoEndpoints},
		{"endpoint down", tlsWith("80.down.shop.svc.cluster.local"), ResultConnectError},
		{"oversized hello", raw(huge), ResultNotTLS},
		{"silent client", func(net.Conn) {}, ResultTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(m.conns.WithLabelValues(tt.result))
			c, err := net.Dial("tcp", gw)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			go tt.send(c)
			// The gateway closes; it never writes.
			b, err := io.ReadAll(c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the gateway kept the connection open")
			}
			if len(b) != 0 {
				t.Errorf("the gateway wrote %d bytes: %q", len(b), b[:min(len(b), 40)])
			}
			deadline := time.Now().Add(5 * time.Second)
			for testutil.ToFloat64(m.conns.WithLabelValues(tt.result)) == before {
				if time.Now().After(deadline) {
					t.Fatalf("result %s not counted", tt.result)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	if n := testutil.ToFloat64(m.conns.WithLabelValues(ResultRouted)); n != 0 {
		t.Errorf("routed %v, want none", n)
	}
}

// TestGatewayMaxConns: with its connections held (silent clients), the
// gateway closes one more at once and counts it; a slot freed is usable.
func TestGatewayMaxConns(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, &Gateway{ClusterDomain: "cluster.local", Metrics: m, MaxConns: 2, HelloTimeout: time.Minute,
		Endpoints: func(context.Context, string) ([]string, error) { return nil, nil }})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", gw)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The third is closed without a byte as soon as it is accepted (the
	// first two may still be in the accept queue: retry until counted).
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(m.conns.WithLabelValues(ResultOverloaded)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a connection over the cap was not refused")
		}
		c, err := net.Dial("tcp", gw)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if len(b) != 0 {
			t.Fatalf("the gateway wrote %q", b)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("a connection over the cap was held")
		}
	}
	held[0].Close()
	deadline = time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", gw)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			break // held: the freed slot took it
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed connection was never freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	held[1].Close()
}
