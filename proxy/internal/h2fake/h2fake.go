// Package h2fake is a prior-knowledge HTTP/2 server for tests that must
// send what a well-behaved server library never would on cue: a refused
// stream, a GOAWAY below a stream, a reset. It speaks just enough of the
// protocol (preface, SETTINGS and their acks) for a client to send a
// request, then hands each request stream to the test.
package h2fake

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Serve listens on loopback until the test ends and calls act with the
// stream ID of every request stream (HEADERS) a client opens; it returns
// the address.
func Serve(t testing.TB, act func(fr *http2.Framer, id uint32)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveConn(c, act)
		}
	}()
	return ln.Addr().String()
}

func serveConn(c net.Conn, act func(fr *http2.Framer, id uint32)) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	if fr.WriteSettings() != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			act(fr, f.StreamID)
		}
	}
}
