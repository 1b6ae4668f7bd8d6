package detect

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"regexp"
	"testing"
	"time"
)

// chunkConn is an in-memory net.Conn for fuzzing the pure detection logic:
// reads return at most chunk bytes at a time, then EOF; writes are dropped.
type chunkConn struct {
	r     *bytes.Reader
	chunk int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if c.chunk > 0 && len(p) > c.chunk {
		p = p[:c.chunk]
	}
	return c.r.Read(p)
}
func (c *chunkConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *chunkConn) Close() error                     { return nil }
func (c *chunkConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *chunkConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *chunkConn) SetDeadline(time.Time) error      { return nil }
func (c *chunkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *chunkConn) SetWriteDeadline(time.Time) error { return nil }

// requestLine is an independent oracle for "begins with a valid HTTP/1.x
// request line within 8 KiB".
var requestLine = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]{1,64} [^\\x00-\\x20\\x7f]+ HTTP/1\\.[01]\r\n")

// clientHelloRecords returns real first flights of crypto/tls clients.
func clientHelloRecords(tb testing.TB) [][]byte {
	var out [][]byte
	for _, cfg := range []*tls.Config{
		{ServerName: "web.default.serviceaccount.identity.cluster.local", NextProtos: []string{"h2", "trellis-opaque/1"}, MinVersion: tls.VersionTLS13},
		{ServerName: "example.com", MaxVersion: tls.VersionTLS12},
		{ServerName: "10.0.0.1"},
	} {
		cc := &captureConn{}
		_ = tls.Client(cc, cfg).Handshake() // fails once the capture refuses to read
		if len(cc.buf.Bytes()) == 0 {
			tb.Fatal("no client hello captured")
		}
		out = append(out, bytes.Clone(cc.buf.Bytes()))
	}
	return out
}

type captureConn struct {
	chunkConn
	buf bytes.Buffer
}

func (c *captureConn) Read([]byte) (int, error)    { return 0, errors.New("capture only") }
func (c *captureConn) Write(p []byte) (int, error) { return c.buf.Write(p) }

func FuzzDetect(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), uint8(0))
	f.Add([]byte("GET / HTTP/1.1\r\n"), uint8(1))
	f.Add([]byte("POST /a HTTP/1.0\r\n"), uint8(3))
	f.Add([]byte("GET / HTTP/1.1\n"), uint8(0))
	f.Add([]byte(PrefaceHTTP2), uint8(1))
	f.Add([]byte(PrefaceHTTP2+"\x00\x00\x00\x04"), uint8(7))
	f.Add([]byte("PRI * HTTP/2.0\r\n"), uint8(0))
	f.Add([]byte("\x16\x03\x01\x00\x05hello"), uint8(2))
	f.Add([]byte("\x00\x00\x00\x08\x04\xd2\x16\x2f"), uint8(0))
	f.Add([]byte("*1\r\n$4\r\nPING\r\n"), uint8(0))
	f.Add([]byte{}, uint8(0))
	for _, rec := range clientHelloRecords(f) {
		f.Add(rec, uint8(0))
		f.Add(rec, uint8(5))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		res, err := Detect(&chunkConn{r: bytes.NewReader(in), chunk: int(chunk)}, time.Second)
		if len(in) == 0 {
			if err == nil {
				t.Fatalf("empty input: Detect = %+v, want an error", res)
			}
			return
		}
		if err != nil {
			t.Fatalf("Detect: %v", err)
		}
		if res.TimedOut {
			t.Fatal("TimedOut without a deadline error")
		}
		replayed, err := io.ReadAll(res.Conn)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(replayed, in) {
			t.Fatalf("replayed %q, input %q", trunc(replayed), trunc(in))
		}
		if bytes.HasPrefix(in, []byte(PrefaceHTTP2)) && res.Protocol != HTTP2 {
			t.Fatalf("input starting with the HTTP/2 preface detected as %v", res.Protocol)
		}
		line := in[:min(len(in), MaxHTTP1Line)]
		if isLine := requestLine.Match(line); isLine != (res.Protocol == HTTP1) {
			t.Fatalf("request line oracle says %v, Detect says %v for %q", isLine, res.Protocol, trunc(in))
		}
		if res.Protocol != TLS && res.SNI != "" {
			t.Fatalf("SNI %q on a %v stream", res.SNI, res.Protocol)
		}
		// How the bytes arrive must not change the answer.
		whole, err := Detect(&chunkConn{r: bytes.NewReader(in)}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if whole.Protocol != res.Protocol || whole.SNI != res.SNI {
			t.Fatalf("chunked (%d): %v %q; whole: %v %q", chunk, res.Protocol, res.SNI, whole.Protocol, whole.SNI)
		}
	})
}

// FuzzClientHelloSNI checks the SNI parser never panics and agrees with
// crypto/tls on every hello that crypto/tls accepts.
func FuzzClientHelloSNI(f *testing.F) {
	for _, rec := range clientHelloRecords(f) {
		f.Add(rec[tlsRecordHeaderLen:])
	}
	f.Add([]byte{1, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) > tlsMaxPlaintext {
			return
		}
		got := ClientHelloSNI(msg)
		// The record-level path must agree with the direct call.
		rec := append([]byte{0x16, 0x03, 0x01, byte(len(msg) >> 8), byte(len(msg))}, msg...)
		if len(msg) > 0 {
			if m, sni := matchTLS(rec); m != yes || sni != got {
				t.Fatalf("matchTLS = %v %q, ClientHelloSNI = %q", m, sni, got)
			}
		}
		want, accepted := cryptoTLSServerName(rec)
		if !accepted {
			return
		}
		if !printable(want) {
			want = "" // rejected on purpose: it would end up in logs and labels
		}
		if got != want {
			t.Fatalf("ClientHelloSNI = %q, crypto/tls = %q", got, want)
		}
	})
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

var errStop = errors.New("stop after hello")

// cryptoTLSServerName feeds one record to a crypto/tls server and returns
// the ServerName it parsed, if it accepted the ClientHello.
func cryptoTLSServerName(rec []byte) (string, bool) {
	var (
		name     string
		accepted bool
	)
	srv := tls.Server(&chunkConn{r: bytes.NewReader(rec)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			name, accepted = h.ServerName, true
			return nil, errStop
		},
	})
	_ = srv.Handshake()
	return name, accepted
}

func TestClientHelloSNIAgainstCryptoTLS(t *testing.T) {
	want := []string{"web.default.serviceaccount.identity.cluster.local", "example.com", ""}
	for i, rec := range clientHelloRecords(t) {
		m, sni := matchTLS(rec)
		if m != yes || sni != want[i] {
			t.Errorf("hello %d: matchTLS = %v %q, want yes %q", i, m, sni, want[i])
		}
		if name, ok := cryptoTLSServerName(rec); !ok || name != want[i] {
			t.Errorf("hello %d: crypto/tls = %q %v", i, name, ok)
		}
	}
}
