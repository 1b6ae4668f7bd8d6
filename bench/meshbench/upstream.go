package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/trellis-mesh/trellis/bench/loadgen"
)

// bodySize is the HTTP response body of the upstream.
const bodySize = 64

// upstreamReadyPrefix starts the line the upstream prints on stdout once it
// listens, followed by its address.
const upstreamReadyPrefix = "meshbench-upstream listening "

// runUpstream serves, on one loopback port, HTTP/1.1 GETs answered with 64
// bytes and the gRPC Echo service (HTTP/2 without TLS). One port for both
// because the mesh's service has a single target port. It calls ready with
// its address once it listens and runs until ctx ends.
func runUpstream(ctx context.Context, log *slog.Logger, ready func(addr string)) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("upstream listen: %w", err)
	}
	body := make([]byte, bodySize)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	clen := strconv.Itoa(bodySize)
	h1 := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header()["Content-Length"] = []string{clen}
			w.Header()["Content-Type"] = []string{"text/plain"}
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	gs := grpc.NewServer()
	gs.RegisterService(&loadgen.EchoServiceDesc, loadgen.Echo{})

	h1ln := newChanListener(ln.Addr())
	h2ln := newChanListener(ln.Addr())
	go func() { _ = h1.Serve(h1ln) }()
	go func() { _ = gs.Serve(h2ln) }()
	go func() {
		<-ctx.Done()
		_ = ln.Close()
		_ = h1.Close()
		gs.Stop()
	}()

	ready(ln.Addr().String())
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("upstream accept: %w", err)
		}
		go sniff(c, h1ln, h2ln, log)
	}
}

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// sniff hands a connection to the gRPC server when it opens with the
// HTTP/2 preface and to the HTTP/1 server otherwise.
func sniff(c net.Conn, h1, h2 *chanListener, log *slog.Logger) {
	br := bufio.NewReaderSize(c, 4096)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	head, err := br.Peek(len(h2Preface))
	_ = c.SetReadDeadline(time.Time{})
	if err != nil && len(head) == 0 {
		log.Debug("upstream: connection closed before a request", "err", err)
		_ = c.Close()
		return
	}
	pc := &peekedConn{Conn: c, r: br}
	if string(head) == string(h2Preface) {
		h2.deliver(pc)
		return
	}
	h1.deliver(pc)
}

type peekedConn struct {
	net.Conn
	r io.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener is a net.Listener fed by sniff.
type chanListener struct {
	addr      net.Addr
	ch        chan net.Conn
	closeOnce sync.Once
	closed    chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		_ = c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// startUpstream re-executes this program as the upstream and returns its
// address.
func startUpstream(ctx context.Context, ps *procs) (*proc, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, "", fmt.Errorf("pipe: %w", err)
	}
	defer r.Close()
	pr, err := ps.start("upstream", nil, w, self, "upstream")
	_ = w.Close()
	if err != nil {
		return nil, "", err
	}
	type line struct {
		s   string
		err error
	}
	got := make(chan line, 1)
	go func() {
		s, err := bufio.NewReader(r).ReadString('\n')
		got <- line{s, err}
	}()
	select {
	case l := <-got:
		if l.err != nil || len(l.s) <= len(upstreamReadyPrefix) || l.s[:len(upstreamReadyPrefix)] != upstreamReadyPrefix {
			return nil, "", pr.failure(fmt.Errorf("did not report its address (read %q: %v)", l.s, l.err))
		}
		return pr, l.s[len(upstreamReadyPrefix) : len(l.s)-1], nil
	case <-time.After(15 * time.Second):
		return nil, "", pr.failure(errors.New("did not report its address within 15s"))
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
}
