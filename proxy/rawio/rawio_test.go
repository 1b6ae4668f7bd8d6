package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// pair returns a wrapped client conn and the plain server side of a real
// loopback TCP connection.
func pair(t *testing.T) (*Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	w, ok := Wrap(c).(*Conn)
	if !ok {
		t.Fatalf("Wrap(%T) did not wrap", c)
	}
	t.Cleanup(func() { _ = w.Close(); _ = s.Close() })
	return w, s.(*net.TCPConn)
}

func TestReadWrite(t *testing.T) {
	c, s := pair(t)
	// More than a socket buffer, so the write parks on the poller and
	// resumes as the peer reads.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(big)
		errc <- err
	}()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("bytes changed on the way")
	}
	// The other direction, then EOF at the peer's FIN.
	go func() { _, _ = s.Write([]byte("hello")); _ = s.CloseWrite() }()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v; want hello, nil (io.EOF ends ReadAll)", b, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read = %d, %v", n, err)
	}
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty write = %d, %v", n, err)
	}
}

func TestErrors(t *testing.T) {
	buf := make([]byte, 16)
	tests := []struct {
		name  string
		setup func(c *Conn, s *net.TCPConn)
		op    func(c *Conn) error
		is    error
		op2   string
	}{
		{"read deadline", func(c *Conn, _ *net.TCPConn) { _ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)) },
			func(c *Conn) error { _, err := c.Read(buf); return err }, os.ErrDeadlineExceeded, "read"},
		{"read after close", func(c *Conn, _ *net.TCPConn) { _ = c.Close() },
			func(c *Conn) error { _, err := c.Read(buf); return err }, net.ErrClosed, "read"},
		{"write after close", func(c *Conn, _ *net.TCPConn) { _ = c.Close() },
			func(c *Conn) error { _, err := c.Write(buf); return err }, net.ErrClosed, "write"},
		{"read reset", func(_ *Conn, s *net.TCPConn) { _ = s.SetLinger(0); _ = s.Close() },
			func(c *Conn) error { _, err := c.Read(buf); return err }, syscall.ECONNRESET, "read"},
		{"write to a reset peer", func(_ *Conn, s *net.TCPConn) { _ = s.SetLinger(0); _ = s.Close() },
			func(c *Conn) error {
				// The first write may be accepted before the reset is seen.
				for range 100 {
					if _, err := c.Write(buf); err != nil {
						return err
					}
					time.Sleep(time.Millisecond)
				}
				return nil
			}, nil, "write"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := pair(t)
			tt.setup(c, s)
			err := tt.op(c)
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != tt.op2 || oe.Net != "tcp" {
				t.Fatalf("err = %#v, want a *net.OpError of %q", err, tt.op2)
			}
			if tt.is == nil {
				if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("err = %v, want EPIPE or ECONNRESET", err)
				}
				return
			}
			if !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want errors.Is %v", err, tt.is)
			}
			if tt.is == os.ErrDeadlineExceeded && !oe.Timeout() {
				t.Fatal("a deadline is not a Timeout()")
			}
		})
	}
}

// The wrapped conn keeps what callers type-assert for on a TCP conn.
func TestKeepsTCPMethods(t *testing.T) {
	c, s := pair(t)
	var nc net.Conn = c
	if _, ok := nc.(interface{ CloseWrite() error }); !ok {
		t.Fatal("no CloseWrite")
	}
	if _, ok := nc.(syscall.Conn); !ok {
		t.Fatal("no SyscallConn")
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
		t.Fatalf("peer read %q, %v after CloseWrite", b, err)
	}
	var p *net.UnixConn
	if got := Wrap(p); got != net.Conn(p) {
		t.Fatal("a conn that is not TCP was wrapped")
	}
}

// A write through one wrapped conn happens before the read of its bytes
// through another, for the race detector as for net's own conns: without
// the annotations RawSyscall skips, -race reports this test's handoff.
func TestHandoffThroughSocket(t *testing.T) {
	c, s := pair(t)
	peer := Wrap(s)
	var shared int
	done := make(chan struct{})
	go func() {
		defer close(done)
		shared = 1
		if _, err := c.Write([]byte{1}); err != nil {
			t.Error(err)
		}
	}()
	b := make([]byte, 1)
	if _, err := io.ReadFull(peer, b); err != nil {
		t.Fatal(err)
	}
	if shared != 1 {
		t.Fatal("the write's effects are not visible after the read")
	}
	<-done
}
