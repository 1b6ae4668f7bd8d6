// Package pipeline is the request path both proxies are built of: an
// explicit chain of small stages (a Layer wraps the Handler after it, like
// CoreDNS's plugins), declared in one place per direction, with one error
// type (proxyerr.Error) that a stage returns and the observe stage renders
// and counts, once, at the top. A later feature (authorization, routes,
// retries with budgets, rate limits, fault injection, mirroring, tap) is a
// new Layer in that list, not an edit of a forwarding loop. See
// docs/architecture.md, "Request pipeline".
package pipeline

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// Handler serves one exchange. It either writes the response itself and
// records it (Exchange.Wrote), or returns the *proxyerr.Error the proxy
// answers with, or ErrCancelled when nobody is left to answer.
type Handler interface {
	Serve(x *Exchange) error
}

// HandlerFunc is a func used as a Handler.
type HandlerFunc func(x *Exchange) error

// Serve calls f.
func (f HandlerFunc) Serve(x *Exchange) error { return f(x) }

// Layer is a stage: it wraps the rest of the chain.
type Layer func(next Handler) Handler

// Chain returns end wrapped in layers, the first outermost: the order the
// list reads is the order a request meets the stages.
func Chain(end Handler, layers ...Layer) Handler {
	h := end
	for i := len(layers) - 1; i >= 0; i-- {
		h = layers[i](h)
	}
	return h
}

// Identity is a stage that does nothing: the place of a stage a
// configuration leaves out.
func Identity(next Handler) Handler { return next }

// ErrCancelled is returned when the client went away (reset its stream,
// closed its connection) before an answer: the request is counted as
// cancelled and nobody is answered.
var ErrCancelled = errors.New("pipeline: the client went away")

// Conn is what a request knows about its connection, as the listener and
// (inbound) mesh TLS recorded it.
type Conn struct {
	Raw net.Conn
	// Orig is the original destination (transparent mode).
	Orig netip.AddrPort
	// Peer is the client's identity proven by mesh TLS, "" otherwise.
	Peer string
	TLS  bool
	// Target is the inbound default app address; TargetErr is why the
	// original destination may not be the target (one of the proxy's
	// own ports): refused once the caller is known.
	Target    string
	TargetErr error
}

type connKey struct{}

// WithConn returns ctx carrying c, the base of every request on it.
func WithConn(ctx context.Context, c *Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// ConnOf returns the connection ctx carries, or nil.
func ConnOf(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

// Dest is where a request or stream goes.
type Dest struct {
	// Dst is the destination service (the dst_service label).
	Dst string
	// Balancer picks Dst's endpoints; nil: Addr is dialled in plain text.
	Balancer *balance.Balancer
	Addr     string
}

// Exchange is one request on its way through a chain. Stages fill in
// what they learn (the route, the endpoint) and the stage that answered
// records the outcome; the observe stage turns it into metrics once.
// An Exchange is recycled: a stage keeps no reference after it returns.
type Exchange struct {
	W http.ResponseWriter
	R *http.Request
	// Conn is the request's connection, copied: no allocation per request.
	Conn Conn
	// Ctx is what the exchange with the destination runs under: the
	// request's context, bounded by the timeout stage. R.Context() stays
	// the client's: whether it went away.
	Ctx   context.Context
	Start time.Time
	// Key labels the request's metrics: the direction at first, then the
	// destination (route) and the endpoint's identity (upstream).
	Key metrics.Key

	// Authority is the request's host:port (outbound).
	Authority string
	// Dest is where the request goes (outbound).
	Dest Dest
	// Route is the outbound route rule the request matched (nil: none,
	// the service's defaults apply). The route stage sets it; the
	// timeout, fault, mirror and upstream (retry) stages read it. Shared
	// with every request on the route: never modify it.
	Route *apiv1.Route
	// Endpoint is the address of the endpoint picked last (outbound).
	Endpoint string
	// AppAddr is the app address the request goes to (inbound).
	AppAddr string
	// CallerH1: the caller speaks HTTP/1 (its own request, or a mesh
	// peer's trellis-orig-proto). AppProto is the app's protocol, as the
	// peer proxy knew it (inbound).
	CallerH1 bool
	AppProto forward.AppProto
	// LogKey names the request in the log line of an error answer
	// ("dst" outbound, "peer" inbound), with LogVal.
	LogKey, LogVal string
	// Attempts is how many endpoints the upstream stage tried (outbound):
	// 1 + its retries.
	Attempts int

	// edits change the header of the response from the destination
	// before it is written (a route's response header modifiers, the
	// fault stage's mark): a fixed array, so no allocation per request.
	edits  [MaxResponseEdits]ResponseEdit
	nEdits int

	// The outcome, set by the stage that wrote the response.
	status    int
	grpc      string
	broken    bool
	cancelled bool
	abort     bool
	wrote     bool
	noLatency bool

	m  *metrics.Metrics
	hm *metrics.HTTP
}

// Metrics returns the request's metrics under Key, counting the request
// in trellis_requests_total the first time: a stage calls it once the key
// is final (outbound: the endpoint is known), observe at the end if none
// did.
func (x *Exchange) Metrics() *metrics.HTTP {
	if x.hm == nil {
		x.hm = x.m.HTTP(x.Key)
		x.hm.Requests.Inc()
	}
	return x.hm
}

// Wrote records a response written with status (and gRPC status); err is
// why it broke mid-way, if it did: the client's stream is then aborted,
// and the request counted as cancelled when the client is gone.
func (x *Exchange) Wrote(status int, grpc string, err error) {
	x.status, x.grpc, x.wrote = status, grpc, true
	if err != nil {
		x.broken, x.abort = true, true
		x.cancelled = x.R.Context().Err() != nil
	}
}

// Cancelled reports whether the client went away while its response
// was written.
func (x *Exchange) Cancelled() bool { return x.cancelled }

// Broken reports whether the response written broke mid-way (Wrote with
// an error: the app's or the peer's body failed, or the client's write).
func (x *Exchange) Broken() bool { return x.broken }

// GRPCStatus is the grpc-status of a gRPC response (trailer, or header
// for a trailers-only response), "" for any other response.
func GRPCStatus(resp *http.Response) string {
	ct := resp.Header["Content-Type"]
	if len(ct) == 0 || !forward.IsGRPC(ct[0]) {
		return ""
	}
	if v := resp.Trailer["Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	if v := resp.Header["Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Tunnelled records an exchange that became a byte stream (an HTTP/1
// Upgrade) with status (101, or 0 when the hand-over failed); err is why it
// ended badly. The connection is no longer HTTP: nothing is aborted.
func (x *Exchange) Tunnelled(status int, err error) {
	x.status, x.wrote, x.broken = status, true, err != nil
	x.noLatency = status == 0
}

// ResponseEdit changes the header of a response before it is written.
type ResponseEdit interface {
	EditResponse(h http.Header)
}

// MaxResponseEdits bounds the edits of one exchange: the route's, the
// backend's, the fault stage's, and one spare.
const MaxResponseEdits = 4

// AddResponseEdit registers e (nil: nothing) to run, in the order added,
// on the header of the response the upstream stage writes (not on the
// answers the proxy gives itself); false when MaxResponseEdits are
// registered already. A stage after the route stage adds its edits.
func (x *Exchange) AddResponseEdit(e ResponseEdit) bool {
	if e == nil {
		return true
	}
	if x.nEdits == len(x.edits) {
		return false
	}
	x.edits[x.nEdits] = e
	x.nEdits++
	return true
}

// EditResponse runs the registered edits on h: the upstream stage calls
// it just before it writes the destination's response.
func (x *Exchange) EditResponse(h http.Header) {
	for i := 0; i < x.nEdits; i++ {
		x.edits[i].EditResponse(h)
	}
}

func (x *Exchange) reset() {
	*x = Exchange{m: x.m}
}
