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
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/trellis-mesh/trellis/bench/loadgen"
)

// bodySize is the HTTP response body of the upstream.
const bodySize = 64

// bigPath answers with bigSize bytes after reading the whole request body
// (the 1 MiB bodies scenario POSTs bigSize bytes to it).
const (
	bigPath = "/big"
	bigSize = 1 << 20
)

// upstreamReadyPrefix starts the line the upstream prints on stdout once it
// listens, followed by its address.
const upstreamReadyPrefix = "meshbench-upstream listening "

// upstreamAddrs are the upstream's two listeners.
type upstreamAddrs struct {
	http   string // HTTP/1.1 and gRPC
	opaque string // loadgen.ServeStream: raw TCP
}

// runUpstream serves, on one loopback port, HTTP/1.1 GETs answered with 64
// bytes (bigPath: 1 MiB) and the gRPC Echo service (HTTP/2 without TLS).
// One port for both because the mesh's service has a single target port
// per service port. A second port serves the raw TCP exchange of the
// opaque scenarios. It calls ready with the addresses once it listens and
// runs until ctx ends.
func runUpstream(ctx context.Context, log *slog.Logger, ready func(upstreamAddrs)) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("upstream listen: %w", err)
	}
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("upstream listen: %w", err)
	}
	big := make([]byte, bigSize)
	for i := range big {
		big[i] = 'a' + byte(i%26)
	}
	go serveOpaque(oln, big, log)
	h1 := &http.Server{
		Handler:           h1Handler(big),
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
		_ = oln.Close()
		_ = h1.Close()
		gs.Stop()
	}()

	ready(upstreamAddrs{http: ln.Addr().String(), opaque: oln.Addr().String()})
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

// h1Handler answers every request with bodySize bytes, bigPath with
// bigSize, after reading the request body whole (so a POST's bytes really
// cross every hop).
func h1Handler(big []byte) http.Handler {
	small, smallLen, bigLen := big[:bodySize], strconv.Itoa(bodySize), strconv.Itoa(bigSize)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		body, clen := small, smallLen
		if r.URL.Path == bigPath {
			body, clen = big, bigLen
		}
		w.Header()["Content-Length"] = []string{clen}
		w.Header()["Content-Type"] = []string{"text/plain"}
		_, _ = w.Write(body)
	})
}

// serveOpaque runs loadgen.ServeStream on every connection until ln closes.
func serveOpaque(ln net.Listener, out []byte, log *slog.Logger) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			if err := loadgen.ServeStream(c, out, 10*time.Minute); err != nil {
				log.Debug("upstream: opaque connection", "err", err)
			}
		}()
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
// addresses.
func startUpstream(ctx context.Context, ps *procs) (*proc, upstreamAddrs, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, upstreamAddrs{}, fmt.Errorf("find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, upstreamAddrs{}, fmt.Errorf("pipe: %w", err)
	}
	defer r.Close()
	pr, err := ps.start("upstream", nil, w, self, "upstream")
	_ = w.Close()
	if err != nil {
		return nil, upstreamAddrs{}, err
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
		rest, ok := strings.CutPrefix(l.s, upstreamReadyPrefix)
		h, o, ok2 := strings.Cut(strings.TrimSuffix(rest, "\n"), " ")
		if l.err != nil || !ok || !ok2 || h == "" || o == "" {
			return nil, upstreamAddrs{}, pr.failure(fmt.Errorf("did not report its addresses (read %q: %v)", l.s, l.err))
		}
		return pr, upstreamAddrs{http: h, opaque: o}, nil
	case <-time.After(15 * time.Second):
		return nil, upstreamAddrs{}, pr.failure(errors.New("did not report its address within 15s"))
	case <-ctx.Done():
		return nil, upstreamAddrs{}, ctx.Err()
	}
}
