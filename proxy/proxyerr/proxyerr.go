// Package proxyerr is the one place where the proxies turn a failure into
// the response they give themselves: a typed error naming the culprit (the
// client, the mesh, or the app), the table that maps x/net/http2, meshh2,
// TLS and network errors onto it, and a Renderer that writes it with the
// trellis-error and trellis-proxy-error headers, counts it and logs it once
// per cause per interval. See docs/proxy.md, "Errors the proxy answers".
package proxyerr

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/meshh2"
)

// Culprit says whose fault an error is.
type Culprit string

// Culprits.
const (
	// Client: the request itself is at fault (4xx); sending it again will
	// not help.
	Client Culprit = "client"
	// Mesh: the proxies, the control plane or the network between them.
	Mesh Culprit = "mesh"
	// App: the application behind the server proxy.
	App Culprit = "app"
)

// Reasons: the token in trellis-proxy-error and the reason label of
// trellis_request_errors_total. The first five are the metric's historical
// values and keep their meaning.
const (
	ReasonNoEndpoints     = "no_endpoints"      // 503 mesh: the service has no endpoint
	ReasonTimeout         = "timeout"           // 504 mesh: --request-timeout passed
	ReasonConnectError    = "connect_error"     // 502 mesh: the peer proxy (or plain endpoint) cannot be reached
	ReasonBadRequest      = "bad_request"       // 400 client: a request the proxy cannot route or send
	ReasonUnknownService  = "unknown_service"   // 502 mesh: the control plane does not know the authority
	ReasonHeadersTooLarge = "headers_too_large" // 431 client: the header list exceeds the mesh hop's limit
	ReasonBadBody         = "bad_request_body"  // 400 client: the request body could not be read from the client
	ReasonTLS             = "tls_error"         // 502 mesh: mesh TLS or the peer's identity failed
	ReasonPeerReset       = "peer_reset"        // 502 mesh: the peer proxy reset the stream or the connection broke
	ReasonUpstream        = "upstream_error"    // 502 mesh: any other failure of the mesh hop
	ReasonAppUnreachable  = "app_unreachable"   // 502 app: the server proxy cannot connect to its app
	ReasonAppError        = "app_error"         // 502 app: the app broke the exchange (reset, closed, bad response)
	ReasonAppTimeout      = "app_timeout"       // 504 app: the app did not answer in time
	// ReasonProtocolMismatch: 502 mesh (configuration): the request needs a
	// protocol the app's service port says it does not speak (gRPC to an
	// HTTP/1.1-only app).
	ReasonProtocolMismatch = "protocol_mismatch"
	// ReasonRequestTimeout: 408 client: the request head did not arrive in
	// time (--http1-header-timeout).
	ReasonRequestTimeout = "request_timeout"
	// ReasonNoBackend: 500 mesh (configuration): the route a request
	// matched has backends, all of weight 0 (the Gateway API's answer).
	ReasonNoBackend = "no_backend"
	// ReasonNoRoute: 404 client: the service has routes and none of
	// their rules matches the request (the Gateway API's answer). gRPC:
	// UNIMPLEMENTED.
	ReasonNoRoute = "no_route"
	// ReasonRateLimited: 429 client: the server's rate limit (RateLimit)
	// refused the request; Retry-After says when a token is due. gRPC:
	// RESOURCE_EXHAUSTED.
	ReasonRateLimited = "rate_limited"
	// ReasonOverloaded: 503 app: the server's concurrency limit (hard or
	// adaptive) refused the request, so as not to overload the app. gRPC:
	// UNAVAILABLE.
	ReasonOverloaded = "overloaded"
)

// knownReasons are the reasons a peer proxy's answer may carry back.
var knownReasons = map[string]bool{
	ReasonNoEndpoints: true, ReasonTimeout: true, ReasonConnectError: true, ReasonBadRequest: true,
	ReasonUnknownService: true, ReasonHeadersTooLarge: true, ReasonBadBody: true, ReasonTLS: true,
	ReasonPeerReset: true, ReasonUpstream: true, ReasonAppUnreachable: true, ReasonAppError: true,
	ReasonAppTimeout: true, ReasonProtocolMismatch: true, ReasonRequestTimeout: true,
	ReasonRateLimited: true, ReasonOverloaded: true,
}

// Error is a response a proxy gives itself instead of the app's.
type Error struct {
	Status  int
	Reason  string
	Culprit Culprit
	// Msg is the human-readable detail: the trellis-error header and the
	// body. Short, one line.
	Msg string
	// By is the proxy that decided, in trellis-proxy-error's form
	// ("proxy=inbound; identity=..."); empty: the proxy rendering it. Set
	// when an error a peer proxy gave is carried back to the client.
	By string
	// Err is the cause, for logs.
	Err error
	// GRPC: the request is a gRPC call, answered trailers-only with the
	// grpc-status of Status (403: PERMISSION_DENIED; of the reason for
	// rate_limited: RESOURCE_EXHAUSTED; see grpcCode) and grpc-message.
	// The pipeline's observe stage sets it for any error it renders
	// (GRPCCall, WithGRPC).
	GRPC bool
	// RetryAfter, when positive, is sent as Retry-After in whole seconds,
	// rounded up.
	RetryAfter time.Duration
}

// ForRequest returns an Error with the culprit its reason implies, marked
// GRPC when r is a gRPC call: a gRPC client is told a grpc-status, not a
// bare HTTP status it would map on its own (429 would be UNAVAILABLE).
func ForRequest(r *http.Request, status int, reason, msg string) *Error {
	e := New(status, reason, msg)
	e.GRPC = GRPCCall(r, false)
	return e
}

// GRPCCall reports whether r is a gRPC call proper, whose failures the
// proxy answers as gRPC does (trailers-only, grpc-status): a POST over
// HTTP/2 with a gRPC content type. Not gRPC-Web, which HTTP/1.1 carries
// and whose clients read an HTTP status, and not a request whose caller
// spoke HTTP/1 (h1: the caller's own protocol, whatever hop carried it
// since), which cannot receive trailers.
func GRPCCall(r *http.Request, h1 bool) bool {
	return r.Method == http.MethodPost && !h1 && r.ProtoMajor == 2 &&
		forward.CallerOf(r.Header, false) == forward.CallerGRPC
}

// WithGRPC returns e with GRPC set to grpc (a copy when it changes: e may
// be a shared value), so that every answer the proxy gives a gRPC call
// itself is a grpc-status with its message, whichever stage failed, and
// no other request gets one.
func WithGRPC(e *Error, grpc bool) *Error {
	if e.GRPC == grpc {
		return e
	}
	c := *e
	c.GRPC = grpc
	return &c
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an Error with the culprit its reason implies.
func New(status int, reason, msg string) *Error {
	return &Error{Status: status, Reason: reason, Culprit: culpritOf(status, reason), Msg: msg}
}

func culpritOf(status int, reason string) Culprit {
	switch reason {
	case ReasonAppUnreachable, ReasonAppError, ReasonAppTimeout, ReasonOverloaded:
		return App
	}
	if status >= 400 && status < 500 {
		return Client
	}
	return Mesh
}

// Headers of a response a proxy gave itself.
const (
	// HeaderError carries Msg (also the body).
	HeaderError = "Trellis-Error"
	// HeaderProxyError carries
	// "<reason>; culprit=<client|mesh|app>; proxy=<inbound|outbound>; identity=<spiffe id>".
	HeaderProxyError = "Trellis-Proxy-Error"
)

// FromResponse returns the error a peer proxy rendered in resp, or nil when
// resp is not one (an app's own answer).
func FromResponse(resp *http.Response) *Error {
	v := resp.Header.Get(HeaderProxyError)
	if v == "" {
		return nil
	}
	reason, params, _ := strings.Cut(v, ";")
	reason = strings.TrimSpace(reason)
	if !knownReasons[reason] {
		// A peer's word becomes a metric label and a rate-limit key here:
		// only the fixed vocabulary passes.
		reason = ReasonUpstream
	}
	e := &Error{Status: resp.StatusCode, Reason: reason, Msg: resp.Header.Get(HeaderError)}
	for p := range strings.SplitSeq(params, ";") {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch k {
		case "culprit":
			if c := Culprit(val); c == Client || c == Mesh || c == App {
				e.Culprit = c
			}
		case "proxy", "identity":
			if e.By != "" {
				e.By += "; "
			}
			e.By += k + "=" + val
		}
	}
	if e.Culprit == "" {
		e.Culprit = culpritOf(e.Status, reason)
	}
	return e
}

// FromUnprocessed is why a peer proxy said it did not process a request
// (trellis-unprocessed): its rendered error, or for a peer that predates
// trellis-proxy-error, its app being unreachable.
func FromUnprocessed(resp *http.Response) *Error {
	if e := FromResponse(resp); e != nil {
		return e
	}
	return &Error{Status: http.StatusBadGateway, Reason: ReasonAppUnreachable, Culprit: App, Msg: resp.Header.Get(HeaderError)}
}

// GaveUp is the error of a request no endpoint of dst could take, saying why
// the last one tried could not: a peer proxy's reason (its app is down) is
// carried back with that proxy named, not replaced by a generic one.
func GaveUp(dst string, last *Error) *Error {
	msg := "no reachable endpoint for " + dst
	if last == nil {
		return &Error{Status: http.StatusBadGateway, Reason: ReasonConnectError, Culprit: Mesh, Msg: msg}
	}
	e := *last
	e.Msg = msg + ": " + last.Msg
	if e.Status < 500 {
		e.Status = http.StatusBadGateway
	}
	return &e
}

// headerValue is the trellis-proxy-error value of e rendered by the proxy
// that by names.
func (e *Error) headerValue(by string) string {
	if e.By != "" {
		by = e.By
	}
	return e.Reason + "; culprit=" + string(e.Culprit) + "; " + by
}

// ErrClientBody marks an error reading the request body from the client
// (the app or peer that sent the request): a body cut short, malformed
// chunked framing, a client that went away. Readers of request bodies wrap
// their errors with it (ClientBody does for any body), and Classify maps
// it to 400 (or to a cancellation when the client is gone).
var ErrClientBody = errors.New("reading the request body from the client")

// ClientBody wraps a request body so that its read errors (other than
// io.EOF) are marked with ErrClientBody, whoever reads it: the HTTP/2
// transport towards the peer, the HTTP/1 client towards the app, a retry
// buffer. The first such error is kept (BodyErr): a round trip that fails
// after it failed because of the client's body.
func ClientBody(rc io.ReadCloser) *Body {
	return &Body{rc: rc}
}

// Body is a request body whose read errors are marked with ErrClientBody.
type Body struct {
	rc  io.ReadCloser
	mu  sync.Mutex
	err error // first read error, marked
}

// Read reads from the client's body.
func (b *Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		err = &clientBodyError{err}
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

// Close closes the client's body.
func (b *Body) Close() error { return b.rc.Close() }

// Buffered tells what a Read would get now, when the client's body can
// (forward.BufferedOf); else that it might wait.
func (b *Body) Buffered() (int, bool) {
	n, end, _ := forward.BufferedOf(b.rc)
	return n, end
}

// BodyErr returns the first error reading body from the client if body is
// a *Body, else nil.
func BodyErr(body io.ReadCloser) error {
	b, ok := body.(*Body)
	if !ok {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// ClientGone reports whether a body read error means the client went away
// (reset its stream, closed or reset its connection) rather than sent a
// malformed or truncated body: nobody is left to answer.
func ClientGone(err error) bool {
	var se http2.StreamError
	var me *meshh2.StreamError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.As(err, &se), errors.Is(err, meshh2.ErrClosed):
		return true
	case errors.As(err, &me):
		// meshh2's server (an app's h2c, a mesh peer): the client reset
		// the stream. A reset of our own is for the client's fault.
		return me.Remote
	}
	msg := err.Error()
	// x/net/http2's server: the peer reset the stream or closed the
	// connection while the handler read the body.
	return strings.Contains(msg, "client disconnected") || strings.Contains(msg, "stream closed") ||
		strings.Contains(msg, "connection lost")
}

type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string   { return ErrClientBody.Error() + ": " + e.err.Error() }
func (e *clientBodyError) Unwrap() []error { return []error{ErrClientBody, e.err} }

// Cause decides what a failed exchange is to be answered for, given the
// request's context and its body as the proxy read it (nil: none): the
// client's own body, if reading it failed (a malformed or truncated body is
// the client's fault, even where the server cancelled the request's context
// on that read error, as net/http does), else err; or nothing, when the
// client went away (cancelled: count it, answer nobody).
func Cause(ctx context.Context, body *Body, err error) (cause error, cancelled bool) {
	if body != nil {
		if be := BodyErr(body); be != nil {
			if ClientGone(be) {
				return nil, true
			}
			return be, false
		}
	}
	if ctx.Err() != nil {
		return nil, true
	}
	return err, false
}
