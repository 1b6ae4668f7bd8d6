package meshh2

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// holdConn stalls the first HEADERS Write after hold is set, once its bytes are
// on the socket, until release is closed: the writing goroutine is then
// between its write and its bookkeeping while the reader goes on.
type holdConn struct {
	net.Conn
	hold    atomic.Bool
	release chan struct{}
}

func (c *holdConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	// Only the request's write (it starts with its HEADERS frame): the
	// reader's own writes (a SETTINGS ACK just finishing) go through.
	if len(p) >= frameHeaderLen && http2.FrameType(p[3]) == http2.FrameHeaders && c.hold.CompareAndSwap(true, false) {
		select {
		case <-c.release:
		case <-time.After(5 * time.Second):
		}
	}
	return n, err
}

// TestAnswerBeforeWriterReturns: the peer answers a request whole and
// closes the connection before the goroutine that wrote the request's
// END_STREAM has recorded it. The answer is complete and must be
// delivered; CI once saw the body lost to the connection close (the
// stream stayed open, the close failed it and dropped its buffered body).
func TestAnswerBeforeWriterReturns(t *testing.T) {
	hc := &holdConn{release: make(chan struct{})}
	rs, cc := newRawServerWrapped(t, func(c net.Conn) net.Conn { hc.Conn = c; return hc })
	// The client's SETTINGS ACK (a write by its reader) must come before
	// the hold, or the reader would be the one held.
	_ = rs.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := rs.fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for the client's SETTINGS ACK: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && sf.IsAck() {
			break
		}
	}
	go func() {
		// Release the request's writer once the client's reader has
		// read the answer and the close, and has failed what was open.
		select {
		case <-cc.readDone:
		case <-time.After(5 * time.Second):
		}
		close(hc.release)
	}()
	hc.hold.Store(true)
	ch := rs.request(t, cc)
	rs.headers(t, 1, false, ":status", "200", "content-length", "4")
	if err := rs.fr.WriteData(1, true, []byte("done")); err != nil {
		t.Fatal(err)
	}
	if err := rs.c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if r.err != nil || string(r.body) != "done" {
			t.Fatalf("answer lost: body %q, err %v", r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
}

// TestShutdownLingers: after a graceful shutdown's last stream, the
// server ends its write side and keeps reading until the peer closes (a
// socket closed with unread input is reset, and the reset can overtake the
// last response), then returns.
func TestShutdownLingers(t *testing.T) {
	rc := newRawClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), ServerOptions{})
	c, sc, served := rc.c, rc.sc, rc.served
	rc.headers(t, 1, true, ":method", "GET", ":scheme", "https", ":path", "/", ":authority", "x")
	rc.until(t, "the response's end", func(f http2.Frame) bool {
		return f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream)
	})
	start := time.Now()
	shut := make(chan struct{})
	go func() { defer close(shut); _ = sc.Shutdown(context.Background()) }()
	var goAway bool
	for {
		f, err := rc.fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("want GOAWAY then EOF, got %v", err)
		}
		_, ok := f.(*http2.GoAwayFrame)
		goAway = goAway || ok
	}
	if !goAway {
		t.Fatal("EOF without a GOAWAY")
	}
	// Frames after the server's end (a PING wants an ack it can no longer
	// send) must not make it close early, with them unread.
	if err := rc.fr.WritePing(false, [8]byte{1}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(goAwayGrace / 5)
	select {
	case <-shut:
		if d := time.Since(start); d < goAwayGrace/2 {
			t.Fatalf("Shutdown returned %v after it began, before the peer closed", d)
		}
		t.Logf("machine too slow to tell: the grace (%v) passed", goAwayGrace)
	default:
	}
	_ = c.Close()
	within(t, 10*time.Second, "Shutdown once the peer closed", shut)
	within(t, 10*time.Second, "Serve's return", served)
	t.Logf("Shutdown took %v", time.Since(start))
}
