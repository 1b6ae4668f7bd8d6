// Package listen is the connection skeleton both proxies share: accept ->
// (original destination) -> detect -> dispatch, with the connections
// tracked for a drain, and the HTTP/1 and HTTP/2 servers a detected HTTP
// connection is handed to. What differs between the directions (which
// protocols are served, opaque ports, mesh TLS) is in the Before and
// Dispatch hooks; see docs/architecture.md, "Request pipeline".
package listen

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/proxy/detect"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/rawio"
)

// Conn is an accepted connection after protocol detection.
type Conn struct {
	// Raw is the connection as accepted.
	Raw net.Conn
	// Conn replays the detected prefix and half-closes Raw: what is served.
	Conn net.Conn
	// Detected is what detection found.
	Detected detect.Result
	// Orig is the original destination (transparent mode), else invalid.
	Orig netip.AddrPort
}

// Config configures a Listener.
type Config struct {
	Direction     string // metrics.Inbound or metrics.Outbound
	Metrics       *metrics.Metrics
	Logger        *slog.Logger
	DetectTimeout time.Duration
	// OrigDst, when set (transparent mode), recovers each connection's
	// original destination before detection; a connection without one is
	// closed.
	OrigDst func(net.Conn) (netip.AddrPort, error)
	// Before, when set, sees a connection before detection (with its
	// original destination in transparent mode) and returns true when it
	// served it itself: opaque ports skip detection.
	Before func(raw net.Conn, orig netip.AddrPort) bool
	// Dispatch serves a detected connection; it owns c and closes it.
	Dispatch func(c Conn)
}

// Listener accepts, detects and dispatches connections on any number of
// net.Listeners, and drains them.
type Listener struct {
	cfg     Config
	tracker forward.Tracker

	mu      sync.Mutex
	lns     []net.Listener
	closing bool
}

// New returns a Listener.
func New(cfg Config) *Listener {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Listener{cfg: cfg}
}

// Serve accepts connections on ln until it is closed, each in its own
// goroutine.
func (l *Listener) Serve(ln net.Listener) error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	l.lns = append(l.lns, ln)
	l.mu.Unlock()
	return l.tracker.Serve(ln, l.Closing, l.handle)
}

// Close stops accepting: every listener is closed.
func (l *Listener) Close() {
	l.mu.Lock()
	l.closing = true
	for _, ln := range l.lns {
		_ = ln.Close()
	}
	l.mu.Unlock()
}

// Closing reports whether Close was called.
func (l *Listener) Closing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// Wait waits until every connection is done or ctx ends; then it closes
// what is left and waits for its handler to return.
func (l *Listener) Wait(ctx context.Context) error { return l.tracker.Wait(ctx) }

func (l *Listener) handle(c net.Conn) {
	// net sets TCP_NODELAY on every TCP conn already.
	c = rawio.Wrap(c)
	var orig netip.AddrPort
	if l.cfg.OrigDst != nil {
		var err error
		if orig, err = l.cfg.OrigDst(c); err != nil {
			l.cfg.Logger.Warn(l.cfg.Direction+": no original destination", "remote", c.RemoteAddr().String(), "err", err)
			_ = c.Close()
			return
		}
	}
	if l.cfg.Before != nil && l.cfg.Before(c, orig) {
		return
	}
	res, err := detect.Detect(c, l.cfg.DetectTimeout)
	if err != nil {
		l.cfg.Metrics.Detect(l.cfg.Direction, "opaque", "error")
		_ = c.Close()
		return
	}
	result := "ok"
	if res.TimedOut {
		result = "timeout"
	}
	l.cfg.Metrics.Detect(l.cfg.Direction, res.Protocol.String(), result)
	l.cfg.Dispatch(Conn{Raw: c, Conn: forward.WithCloseWrite(res.Conn, c), Detected: res, Orig: orig})
}
