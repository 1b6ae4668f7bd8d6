package proxyerr

import (
	"context"
	"errors"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/proxy/meshh2"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
)

// Hop is the hop a round trip failed on.
type Hop int

const (
	// ToPeer is the client proxy's hop to a peer proxy (or a plain
	// endpoint outside the mesh): its failures are the mesh's.
	ToPeer Hop = iota
	// ToApp is the server proxy's hop to its own app: its failures are
	// the app's.
	ToApp
)

// ErrConnect marks a failure to establish a connection: the request
// provably never left the proxy.
var ErrConnect = errors.New("connecting to endpoint")

// invalidRequest are the texts of x/net/http2's (internal/httpcommon) and
// forward.H1Client's refusals to encode a request they find malformed; x/net
// exports no error values for them.
var invalidRequest = []string{
	"invalid HTTP header", "invalid HTTP trailer", "invalid request :path",
	"invalid Trailer key", "invalid Upgrade request header",
	"invalid Transfer-Encoding request header", "invalid Connection request header",
	"invalid request line", "invalid host", "invalid header name",
	"invalid value of header", "invalid trailer name", "invalid value of trailer",
}

// Classify maps the error of a round trip on hop towards addr onto the
// response the proxy gives. ctx is the request's context with the proxy's
// own timeout; the caller has already checked that the client itself is
// still there (a client that went away gets no answer, see Cancelled).
func Classify(ctx context.Context, err error, hop Hop, addr string) *Error {
	msg := err.Error()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return timeout(hop, err)
	case errors.Is(err, ErrClientBody) || errors.Is(err, forward.ErrRequestBody):
		return &Error{Status: http.StatusBadRequest, Reason: ReasonBadBody, Culprit: Client, Msg: msg, Err: err}
	case strings.Contains(msg, "request header list larger than"):
		return &Error{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: ReasonHeadersTooLarge, Culprit: Client,
			Msg: "request header list larger than the mesh hop's limit", Err: err}
	case containsAny(msg, invalidRequest):
		return &Error{Status: http.StatusBadRequest, Reason: ReasonBadRequest, Culprit: Client, Msg: msg, Err: err}
	case hop == ToPeer && meshtls.HandshakeErrorReason(err) != meshtls.ReasonOther:
		return &Error{Status: http.StatusBadGateway, Reason: ReasonTLS, Culprit: Mesh, Msg: msg, Err: err}
	case errors.Is(err, ErrConnect) || isDial(err):
		return connectFailure(hop, addr, err)
	case isReset(err):
		if hop == ToApp {
			return &Error{Status: http.StatusBadGateway, Reason: ReasonAppError, Culprit: App, Msg: "app " + addr + ": " + msg, Err: err}
		}
		return &Error{Status: http.StatusBadGateway, Reason: ReasonPeerReset, Culprit: Mesh, Msg: "upstream " + addr + ": " + msg, Err: err}
	case isTimeout(err):
		return timeout(hop, err)
	case hop == ToApp:
		return &Error{Status: http.StatusBadGateway, Reason: ReasonAppError, Culprit: App, Msg: "app " + addr + ": " + msg, Err: err}
	}
	return &Error{Status: http.StatusBadGateway, Reason: ReasonUpstream, Culprit: Mesh, Msg: "upstream " + addr + ": " + msg, Err: err}
}

func timeout(hop Hop, err error) *Error {
	if hop == ToApp {
		return &Error{Status: http.StatusGatewayTimeout, Reason: ReasonAppTimeout, Culprit: App, Msg: "app timed out", Err: err}
	}
	return &Error{Status: http.StatusGatewayTimeout, Reason: ReasonTimeout, Culprit: Mesh, Msg: "request timed out", Err: err}
}

func connectFailure(hop Hop, addr string, err error) *Error {
	if hop == ToApp {
		return &Error{Status: http.StatusBadGateway, Reason: ReasonAppUnreachable, Culprit: App,
			Msg: "connecting to app " + addr + ": " + err.Error(), Err: err}
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "connecting to") {
		msg = "connecting to " + addr + ": " + msg
	}
	return &Error{Status: http.StatusBadGateway, Reason: ReasonConnectError, Culprit: Mesh, Msg: msg, Err: err}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// isReset reports a stream reset or a connection that broke mid-exchange.
func isReset(err error) bool {
	var se http2.StreamError
	var me *meshh2.StreamError
	//lint:ignore SA1019 x/net's transport still returns it for a GOAWAY that closed the connection.
	var ga http2.GoAwayError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se), errors.As(err, &me), errors.As(err, &ga), errors.As(err, &ce),
		errors.Is(err, meshh2.ErrClosed), errors.Is(err, meshh2.ErrUnprocessed),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "client connection lost") || strings.Contains(msg, "client conn")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// MaxHeaderList is the header list size (RFC 9113 6.5.2: names, values and
// 32 bytes per field) every Trellis inbound proxy accepts on the mesh hop:
// the smaller of x/net's advertised limit and meshh2.MaxHeaderListSize.
const MaxHeaderList = meshh2.MaxHeaderListSize

// HeaderListTooLarge answers a request whose header list the mesh hop would
// refuse. Checked before sending: a client proxy that has not yet seen the
// peer's SETTINGS would send it, and the peer would then close the whole
// shared connection (GOAWAY COMPRESSION_ERROR), failing other apps'
// requests on it too.
func HeaderListTooLarge(r *http.Request) *Error {
	size := uint64(len(r.Method) + len(r.Host) + len(r.URL.RequestURI()) + 4*32 + len("https"))
	for k, vs := range r.Header {
		for _, v := range vs {
			size += uint64(len(k) + len(v) + 32)
		}
	}
	if size <= MaxHeaderList {
		return nil
	}
	return &Error{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: ReasonHeadersTooLarge, Culprit: Client,
		Msg: "request header list larger than the mesh hop's limit of " + strconv.FormatUint(MaxHeaderList, 10) + " bytes"}
}
