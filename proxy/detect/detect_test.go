package detect

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// pair returns both ends of a real loopback TCP connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		client.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

func TestDetect(t *testing.T) {
	const (
		long  = 5 * time.Second // cases that must decide without waiting for it
		short = 100 * time.Millisecond
	)
	bytewise := func(s string) []string { return strings.Split(s, "") }
	hugeLine := "GET /" + strings.Repeat("a", MaxHTTP1Line) + " HTTP/1.1\r\n"
	nearCapLine := "GET /" + strings.Repeat("a", MaxHTTP1Line-32) + " HTTP/1.1\r\n"
	tests := []struct {
		name     string
		chunks   []string
		closeNow bool // client closes right after sending (EOF early)
		timeout  time.Duration
		want     Protocol
		timedOut bool
		sni      string
		wantErr  bool
	}{
		{name: "http1 get", chunks: []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n"}, want: HTTP1},
		{name: "http1 trickled", chunks: bytewise("GET /index.html HTTP/1.1\r\n"), want: HTTP1},
		{name: "http1.0 post absolute", chunks: []string{"POST http://a.b/c?d=e HTTP/1.0\r\n\r\n"}, want: HTTP1},
		{name: "http1 connect", chunks: []string{"CONNECT db:5432 HTTP/1.1\r\n"}, want: HTTP1},
		{name: "http1 options star", chunks: []string{"OPTIONS * HTTP/1.1\r\n"}, want: HTTP1},
		{name: "http1 extension method", chunks: []string{"PROPFIND /dav HTTP/1.1\r\n"}, want: HTTP1},
		{name: "http1 line near 8 KiB", chunks: []string{nearCapLine}, want: HTTP1},
		{name: "huge request line", chunks: []string{hugeLine}, want: Opaque},
		{name: "http/1.2", chunks: []string{"GET / HTTP/1.2\r\n"}, want: Opaque},
		{name: "bare LF", chunks: []string{"GET / HTTP/1.1\n"}, want: Opaque},
		{name: "double space", chunks: []string{"GET  / HTTP/1.1\r\n"}, want: Opaque},
		{name: "http2 preface", chunks: []string{PrefaceHTTP2 + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"}, want: HTTP2},
		{name: "http2 preface trickled", chunks: bytewise(PrefaceHTTP2), want: HTTP2},
		{name: "broken preface", chunks: []string{"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"}, want: Opaque},
		{name: "postgres ssl request", chunks: []string{"\x00\x00\x00\x08\x04\xd2\x16\x2f"}, want: Opaque},
		{name: "redis", chunks: []string{"*1\r\n$4\r\nPING\r\n"}, want: Opaque},
		{name: "ssh banner", chunks: []string{"SSH-2.0-OpenSSH_9.6\r\n"}, want: Opaque},
		{name: "tls malformed hello", chunks: []string{"\x16\x03\x01\x00\x05hello"}, want: TLS},
		{name: "tls oversized record", chunks: []string{"\x16\x03\x01\xff\xff"}, want: TLS},
		{name: "tls wrong version", chunks: []string{"\x16\x04\x01\x00\x05hello"}, want: Opaque},
		{name: "silent client", timeout: short, want: Opaque, timedOut: true},
		{name: "partial request line", chunks: []string{"GET / HT"}, timeout: short, want: Opaque, timedOut: true},
		{name: "partial tls record", chunks: []string{"\x16\x03\x01\x01\x00\x01"}, timeout: short, want: Opaque, timedOut: true},
		{name: "eof mid request line", chunks: []string{"GET / HT"}, closeNow: true, want: Opaque},
		{name: "eof mid tls record", chunks: []string{"\x16\x03\x01\x01\x00\x01"}, closeNow: true, want: TLS},
		{name: "eof before any byte", closeNow: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := pair(t)
			timeout := tt.timeout
			if timeout == 0 {
				timeout = long
			}
			proceed := make(chan struct{})
			writerDone := make(chan error, 1)
			const tail = "TAIL"
			go func() {
				writerDone <- func() error {
					for _, c := range tt.chunks {
						if _, err := io.WriteString(client, c); err != nil {
							return err
						}
						if len(tt.chunks) > 1 {
							time.Sleep(time.Millisecond) // let each piece arrive alone
						}
					}
					if tt.closeNow {
						return client.Close()
					}
					<-proceed
					if _, err := io.WriteString(client, tail); err != nil {
						return err
					}
					return client.(*net.TCPConn).CloseWrite()
				}()
			}()

			res, err := Detect(server, timeout)
			close(proceed)
			if werr := <-writerDone; werr != nil {
				t.Fatalf("client: %v", werr)
			}
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Detect = %+v, want an error", res)
				}
				return
			}
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if res.Protocol != tt.want || res.TimedOut != tt.timedOut || res.SNI != tt.sni {
				t.Fatalf("Detect = {%v timedOut=%v sni=%q}, want {%v timedOut=%v sni=%q}",
					res.Protocol, res.TimedOut, res.SNI, tt.want, tt.timedOut, tt.sni)
			}
			// The deadline must be cleared: the tail is sent after the
			// detection returned and, for the timeout cases, after the
			// deadline would have passed.
			if tt.timedOut {
				time.Sleep(2 * timeout)
			}
			want := strings.Join(tt.chunks, "")
			if !tt.closeNow {
				want += tail
			}
			got, err := io.ReadAll(res.Conn)
			if err != nil {
				t.Fatalf("reading the replayed stream: %v", err)
			}
			if string(got) != want {
				t.Fatalf("replayed stream = %q, want %q", trunc(got), trunc([]byte(want)))
			}
		})
	}
}

func trunc(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

// A real crypto/tls client's first flight is detected with the right SNI,
// and the replayed conn completes a real handshake.
func TestDetectRealTLSClient(t *testing.T) {
	cert, pool := selfSigned(t, "web.default.svc.cluster.local")
	tests := []struct {
		name       string
		serverName string
		wantSNI    string
	}{
		{"dns name", "web.default.svc.cluster.local", "web.default.svc.cluster.local"},
		{"ip address sends no sni", "127.0.0.1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := pair(t)
			done := make(chan error, 1)
			go func() {
				tc := tls.Client(client, &tls.Config{ServerName: tt.serverName, RootCAs: pool, MinVersion: tls.VersionTLS12})
				err := tc.Handshake()
				if err == nil {
					_, err = io.WriteString(tc, "hello over tls")
					tc.Close()
				}
				done <- err
			}()
			res, err := Detect(server, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if res.Protocol != TLS || res.SNI != tt.wantSNI {
				t.Fatalf("Detect = {%v sni=%q}, want {tls sni=%q}", res.Protocol, res.SNI, tt.wantSNI)
			}
			ts := tls.Server(res.Conn, &tls.Config{Certificates: []tls.Certificate{cert}})
			if err := ts.Handshake(); err != nil {
				t.Fatalf("server handshake over the replayed conn: %v (client: %v)", err, <-done)
			}
			if got := ts.ConnectionState().ServerName; got != tt.wantSNI {
				t.Fatalf("crypto/tls saw SNI %q, Detect saw %q", got, res.SNI)
			}
			b, err := io.ReadAll(ts)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != "hello over tls" {
				t.Fatalf("read %q over tls", b)
			}
			if err := <-done; err != nil {
				t.Fatalf("client: %v", err)
			}
		})
	}
}

func selfSigned(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}, pool
}

// Real net/http clients (HTTP/1.1 and unencrypted HTTP/2) are detected and
// served by net/http from the replayed conn.
func TestDetectRealHTTPClients(t *testing.T) {
	var h1, h2c http.Protocols
	h1.SetHTTP1(true)
	h2c.SetUnencryptedHTTP2(true)
	var both http.Protocols
	both.SetHTTP1(true)
	both.SetUnencryptedHTTP2(true)
	tests := []struct {
		name      string
		protocols *http.Protocols
		want      Protocol
		wantProto string
	}{
		{"http1", &h1, HTTP1, "HTTP/1.1"},
		{"h2c", &h2c, HTTP2, "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			detected := make(chan Result, 1)
			srv := &http.Server{
				Protocols: &both,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, r.Proto+" "+r.URL.Path)
				}),
			}
			served := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					served <- err
					return
				}
				res, err := Detect(c, 5*time.Second)
				if err != nil {
					c.Close()
					served <- err
					return
				}
				detected <- res
				served <- srv.Serve(newOneConnListener(res.Conn))
			}()
			tr := &http.Transport{Protocols: tt.protocols}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ln.Addr().String()+"/path", nil)
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				srv.Close()
				t.Fatalf("request: %v (server: %v)", err, <-served)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			srv.Close()
			if err := <-served; !errors.Is(err, http.ErrServerClosed) {
				t.Fatalf("server: %v", err)
			}
			res := <-detected
			if res.Protocol != tt.want {
				t.Fatalf("detected %v, want %v", res.Protocol, tt.want)
			}
			if string(body) != tt.wantProto+" /path" {
				t.Fatalf("body = %q, want %q", body, tt.wantProto+" /path")
			}
		})
	}
}

// oneConnListener hands out one conn, then blocks until closed.
type oneConnListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{conns: make(chan net.Conn, 1), closed: make(chan struct{}), addr: c.LocalAddr()}
	l.conns <- c
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }

func TestPrefixConnWriteTo(t *testing.T) {
	client, server := pair(t)
	go func() {
		io.WriteString(client, "world")
		client.Close()
	}()
	var out bytes.Buffer
	n, err := io.Copy(&out, NewPrefixConn(server, []byte("hello ")))
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "hello world" || n != int64(out.Len()) {
		t.Fatalf("io.Copy = %d %q", n, out.String())
	}
}

func TestProtocolString(t *testing.T) {
	for p, want := range map[Protocol]string{Opaque: "opaque", HTTP1: "http1", HTTP2: "http2", TLS: "tls"} {
		if p.String() != want {
			t.Errorf("%d.String() = %q, want %q", p, p.String(), want)
		}
	}
}
