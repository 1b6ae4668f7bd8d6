package meshh2

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestServerRapidReset: a peer opening streams and resetting them at once
// (CVE-2023-44487) cannot run more handlers at a time than
// MaxConcurrentStreams, even when the handlers ignore the reset: the rest
// are refused. Every stream is answered, by the handler or REFUSED_STREAM.
func TestServerRapidReset(t *testing.T) {
	const maxStreams, streams = 8, 2000
	release := make(chan struct{})
	var running, peak atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release // ignores its cancelled context
	})
	rc := newRawClient(t, h, ServerOptions{MaxConcurrentStreams: maxStreams})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	refused := make(chan int, 1)
	go func() {
		n := 0
		for {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				refused <- n
				return
			}
			if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.ErrCode == http2.ErrCodeRefusedStream {
				if n++; n == streams-maxStreams {
					refused <- n
					return
				}
			}
		}
	}()
	for i := range streams {
		id := uint32(2*i + 1)
		rc.headers(t, id, true, ":method", "GET", ":scheme", "https", ":authority", "x", ":path", "/")
		if err := rc.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
	}
	if n := <-refused; n != streams-maxStreams {
		t.Errorf("%d streams refused, want %d", n, streams-maxStreams)
	}
	if p := peak.Load(); p > maxStreams {
		t.Errorf("%d handlers ran at once, want at most %d", p, maxStreams)
	}
	releaseOnce.Do(func() { close(release) })
}

// TestServerContinuationFlood: HEADERS followed by CONTINUATION frames
// that never end the block (CVE-2023-45288) cost the server at most the
// header list limit: it closes the connection with PROTOCOL_ERROR soon
// after, and no handler runs.
func TestServerContinuationFlood(t *testing.T) {
	var handled atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handled.Add(1) })
	rc := newRawClient(t, h, ServerOptions{})
	// A request head whose block never ends: HEADERS without END_HEADERS
	// (the pseudo-fields and a literal "x-flood: v", added to the dynamic
	// table), then CONTINUATION frames repeating that field indexed: one
	// byte on the wire, 40 bytes of header list each.
	rc.hb.Reset()
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "x"}, {Name: ":path", Value: "/"}, {Name: "x-flood", Value: "v"}} {
		_ = rc.enc.WriteField(f)
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.hb.Bytes()}); err != nil {
		t.Fatal(err)
	}
	frag := bytes.Repeat([]byte{0x80 | 62}, 16384) // indexed: the newest dynamic entry
	done := make(chan error, 1)
	go func() {
		for {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				done <- err
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				if ga.ErrCode != http2.ErrCodeProtocol {
					done <- errors.New("GOAWAY " + ga.ErrCode.String() + ", want PROTOCOL_ERROR")
					return
				}
				done <- nil
				return
			}
		}
	}()
	// 64 MiB would be 2.7 GiB of header list; the limit is 1 MiB.
	const maxSend = 64 << 20
	sent := 0
	for sent < maxSend {
		if err := rc.fr.WriteContinuation(1, false, frag); err != nil {
			break // the server closed the connection
		}
		sent += len(frag)
	}
	if err := <-done; err != nil && isTimeout(err) {
		t.Fatalf("after %d bytes of CONTINUATION: %v", sent, err)
	}
	if sent >= maxSend {
		t.Fatalf("server still reading after %d bytes of CONTINUATION", sent)
	}
	if n := handled.Load(); n > 0 {
		t.Fatalf("%d handlers ran, want none", n)
	}
	t.Logf("connection closed after %d bytes of CONTINUATION", sent)
}

type countWriter struct {
	w io.Writer
	n int
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

// isTimeout: the peer did neither answer nor close within the deadline.
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// TestServerControlFloodUnread: a peer that sends PING or SETTINGS
// without reading the acks is not read without bound: acks are written
// inline by the reader (no queue grows), so once the socket buffers fill
// the server stops reading, or it closes the connection.
func TestServerControlFloodUnread(t *testing.T) {
	cases := []struct {
		name  string
		write func(*http2.Framer) error
	}{
		{"PING", func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1}) }},
		{"SETTINGS", func(fr *http2.Framer) error {
			return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each takes seconds: an ack per frame, until the buffers fill
			rc := newRawClient(t, http.NotFoundHandler(), ServerOptions{})
			// Frames go out in 64 KiB writes, to fill the buffers fast.
			cw := &countWriter{w: rc.c}
			bw := bufio.NewWriterSize(cw, 64<<10)
			fr := http2.NewFramer(bw, nil)
			const maxSend = 64 << 20 // far beyond any socket buffer
			start := time.Now()
			for cw.n < maxSend {
				// A write blocked this long means the server stopped
				// reading: the generous ceiling is only a stall detector.
				_ = rc.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				err := tc.write(fr)
				if err == nil && bw.Available() < 64 {
					err = bw.Flush()
				}
				if err != nil {
					// Stalled (a timeout), or closed by the server.
					t.Logf("write: %v", err)
					break
				}
			}
			sent := cw.n
			if sent >= maxSend {
				t.Fatalf("server read %d bytes of %s without the peer reading an ack", sent, tc.name)
			}
			t.Logf("server stopped reading after %d bytes of %s (%v)", sent, tc.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// writeCounter counts Write calls on a conn.
type writeCounter struct {
	net.Conn
	writes atomic.Int64
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestServerAcksCoalesced: control frames that arrive together are
// answered together: 100 PINGs in one write get their 100 acks in a few
// socket writes, not one each (the reader holds its acks while a whole
// frame is still buffered).
func TestServerAcksCoalesced(t *testing.T) {
	var wc *writeCounter
	rc := newRawClientWrapped(t, http.NotFoundHandler(), ServerOptions{}, func(c net.Conn) net.Conn {
		wc = &writeCounter{Conn: c}
		return wc
	})
	// The settings exchange first, so its writes are not counted.
	rc.until(t, "the server's SETTINGS", func(f http2.Frame) bool {
		sf, ok := f.(*http2.SettingsFrame)
		return ok && !sf.IsAck()
	})
	rc.until(t, "the SETTINGS ack", func(f http2.Frame) bool {
		sf, ok := f.(*http2.SettingsFrame)
		return ok && sf.IsAck()
	})
	var burst bytes.Buffer
	fr := http2.NewFramer(&burst, nil)
	const pings = 100
	for i := range pings {
		_ = fr.WritePing(false, [8]byte{byte(i)})
	}
	before := wc.writes.Load()
	if _, err := rc.c.Write(burst.Bytes()); err != nil {
		t.Fatal(err)
	}
	acks := 0
	rc.until(t, "the PING acks", func(f http2.Frame) bool {
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			if p.Data[0] != byte(acks) {
				t.Fatalf("ack %d for PING %d", p.Data[0], acks)
			}
			acks++
		}
		return acks == pings
	})
	// TCP may deliver the burst in pieces: a few writes are fine.
	if n := wc.writes.Load() - before; n > pings/4 {
		t.Errorf("%d PINGs sent together were acked in %d socket writes", pings, n)
	} else {
		t.Logf("%d PINGs acked in %d socket writes", pings, n)
	}
}
