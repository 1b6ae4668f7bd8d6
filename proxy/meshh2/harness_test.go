//lint:file-ignore SA1019 the x/net http2.Server.ServeConn / Transport.NewClientConn are the interop references.

package meshh2

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// testTLS holds a self-signed certificate for 127.0.0.1 and configs that
// verify it properly.
type testTLS struct {
	server *tls.Config
	client *tls.Config
}

func newTestTLS(t testing.TB) *testTLS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "meshh2 test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testTLS{
		server: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
			NextProtos:   []string{"h2"},
			MinVersion:   tls.VersionTLS13,
		},
		client: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13},
	}
}

// server is a TLS HTTP/2 server under test, lean or x/net.
type server struct {
	addr     string
	shutdown func(ctx context.Context) // graceful: GOAWAY, wait for streams
}

func startServer(t testing.TB, kind string, tt *testTLS, h http.Handler) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var leanConns []*ServerConn
	var wg sync.WaitGroup
	base := &http.Server{Handler: h}
	h2s := &http2.Server{}
	if err := http2.ConfigureServer(base, h2s); err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := tls.Server(c, tt.server)
				if err := tc.Handshake(); err != nil {
					return
				}
				if kind == "lean" {
					sc := NewServerConn(tc, ServerOptions{Handler: h})
					mu.Lock()
					leanConns = append(leanConns, sc)
					mu.Unlock()
					_ = sc.Serve()
					return
				}
				h2s.ServeConn(tc, &http2.ServeConnOpts{Handler: h, BaseConfig: base})
			}()
		}
	}()
	s := &server{addr: ln.Addr().String()}
	s.shutdown = func(ctx context.Context) {
		_ = ln.Close()
		if kind == "lean" {
			mu.Lock()
			conns := append([]*ServerConn(nil), leanConns...)
			mu.Unlock()
			var swg sync.WaitGroup
			for _, sc := range conns {
				swg.Add(1)
				go func() { defer swg.Done(); _ = sc.Shutdown(ctx) }()
			}
			swg.Wait()
			return
		}
		_ = base.Shutdown(ctx)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.shutdown(ctx)
		_ = base.Close()
		mu.Lock()
		for _, sc := range leanConns {
			_ = sc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// client is one HTTP/2 client connection under test, lean or x/net.
type client interface {
	RoundTrip(*http.Request) (*http.Response, error)
	Close() error
}

func dialClient(t testing.TB, kind string, tt *testTLS, addr string) client {
	t.Helper()
	c, err := tls.Dial("tcp", addr, tt.client)
	if err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q", p)
	}
	var cl client
	if kind == "lean" {
		cl, err = NewClientConn(c, ClientOptions{ReadIdleTimeout: 30 * time.Second})
	} else {
		cl, err = (&http2.Transport{}).NewClientConn(c)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// pairs are the interop combinations: lean against x/net both ways, and
// lean against itself.
var pairs = []struct{ client, server string }{
	{"lean", "xnet"},
	{"xnet", "lean"},
	{"lean", "lean"},
}

func forPairs(t *testing.T, h http.Handler, fn func(t *testing.T, c client, s *server)) {
	for _, p := range pairs {
		t.Run(p.client+"-client/"+p.server+"-server", func(t *testing.T) {
			tt := newTestTLS(t)
			s := startServer(t, p.server, tt, h)
			c := dialClient(t, p.client, tt, s.addr)
			fn(t, c, s)
		})
	}
}

func within(t testing.TB, d time.Duration, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func tlsDial(tt *testTLS, addr string) (*tls.Conn, error) {
	return tls.Dial("tcp", addr, tt.client)
}
