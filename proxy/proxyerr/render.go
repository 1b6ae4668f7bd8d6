package proxyerr

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// maxMsg bounds the trellis-error header and body: short, whatever the
// length of the error text (which may quote a peer's words).
const maxMsg = 512

// Renderer is the one place a proxy answers a request itself, like
// httputil.ReverseProxy's ErrorHandler: the inbound and the outbound proxy
// each have one.
type Renderer struct {
	// Direction is metrics.Inbound or metrics.Outbound.
	Direction string
	// Identity is this proxy's SPIFFE ID.
	Identity string
	// Log writes one line per direction and reason per interval.
	Log *ratelog.Limiter
}

// by names this proxy in trellis-proxy-error.
func (r *Renderer) by() string {
	return "proxy=" + r.Direction + "; identity=" + r.Identity
}

// HeaderFor is the trellis-proxy-error value of a request this proxy's
// HTTP/1 server refused before any handler ran (proxy/http1): 431 for a
// head too large, 408 for a head not received in time, else a malformed
// or ambiguous request (400, 417, 501). All are the client's fault.
func (r *Renderer) HeaderFor(status int) string {
	return oneLine(Refusal(status).headerValue(r.by()))
}

// Refusal is the error of a request the HTTP/1 server refused with status.
func Refusal(status int) *Error {
	reason := ReasonBadRequest
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		reason = ReasonHeadersTooLarge
	case http.StatusRequestTimeout:
		reason = ReasonRequestTimeout
	}
	return &Error{Status: status, Reason: reason, Culprit: Client}
}

// CountRefusal counts a request the HTTP/1 server refused with status
// before any handler ran, like every answer the proxy gives itself; the
// route is unknown, so only the direction labels it.
func CountRefusal(m *metrics.Metrics, direction string, status int) {
	hm := m.HTTP(metrics.Key{Direction: direction})
	hm.Requests.Inc()
	hm.RequestError(Refusal(status).Reason)
	hm.Response(status, "", false)
}

// Write writes e as the response: status, trellis-error (the message),
// trellis-proxy-error (reason, culprit and the proxy that decided) and the
// message as a text body.
func (r *Renderer) Write(w http.ResponseWriter, e *Error) {
	msg := oneLine(e.Msg)
	h := w.Header()
	h[HeaderError] = []string{msg}
	h[HeaderProxyError] = []string{oneLine(e.headerValue(r.by()))}
	if e.RetryAfter > 0 {
		h["Retry-After"] = []string{RetryAfter(e.RetryAfter)}
	}
	if e.GRPC {
		// Trailers-only: the status in the headers, no body.
		h["Content-Type"] = []string{"application/grpc"}
		h["Grpc-Status"] = []string{e.grpcCode()}
		h["Grpc-Message"] = []string{grpcMessage(msg)}
		w.WriteHeader(http.StatusOK)
		return
	}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(msg) + 1)}
	w.WriteHeader(e.Status)
	_, _ = io.WriteString(w, msg+"\n")
}

// Answer counts e on hm (trellis_request_errors_total{reason}, the response
// and its latency), writes it and logs it.
func (r *Renderer) Answer(ctx context.Context, w http.ResponseWriter, hm *metrics.HTTP, e *Error, start time.Time, args ...any) {
	hm.RequestError(e.Reason)
	r.Write(w, e)
	if e.GRPC {
		hm.Response(http.StatusOK, e.grpcCode(), false)
	} else {
		hm.Response(e.Status, "", false)
	}
	hm.Latency.Observe(time.Since(start).Seconds())
	r.Logf(ctx, e, "proxy answered with an error", args...)
}

// Logf logs e at info, once per reason per interval for this proxy's
// direction: a flood of one failure is one line a minute, saying how many
// were held back.
func (r *Renderer) Logf(ctx context.Context, e *Error, msg string, args ...any) {
	by := e.By
	if by == "" {
		by = r.by()
	}
	all := append([]any{
		"direction", r.Direction, "status", e.Status, "reason", e.Reason,
		"culprit", string(e.Culprit), "by", by, "err", oneLine(e.Msg),
	}, args...)
	r.Log.Log(ctx, slog.LevelInfo, r.Direction+"/"+e.Reason, msg, all...)
}

// oneLine keeps a message fit for a header: no control characters (a
// peer's words may be quoted in it), at most maxMsg bytes.
func oneLine(s string) string {
	s = strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, s)
	if len(s) > maxMsg {
		s = strings.ToValidUTF8(s[:maxMsg], "")
	}
	return s
}

// GRPCCode is the grpc-status of a proxy answer's HTTP status, as gRPC
// maps HTTP statuses (the gRPC HTTP/2 protocol spec), with 403 as
// PERMISSION_DENIED.
func GRPCCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "13" // INTERNAL
	case http.StatusUnauthorized:
		return "16" // UNAUTHENTICATED
	case http.StatusForbidden:
		return "7" // PERMISSION_DENIED
	case http.StatusNotFound:
		return "12" // UNIMPLEMENTED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return "14" // UNAVAILABLE
	}
	return "2" // UNKNOWN
}

// grpcCode is the grpc-status of e: GRPCCode of its status, except where
// gRPC has a truer code for the reason: RESOURCE_EXHAUSTED for a rate
// limit or a header list too large (gRPC's mapping of 429 is UNAVAILABLE,
// which invites a retry at once); DEADLINE_EXCEEDED for a timeout, since
// the app may have processed the call (UNAVAILABLE tells a retry policy
// it did not); INVALID_ARGUMENT for a request the client got wrong (400's
// INTERNAL would read as the server's failure).
func (e *Error) grpcCode() string {
	switch e.Reason {
	case ReasonRateLimited, ReasonHeadersTooLarge:
		return "8" // RESOURCE_EXHAUSTED
	case ReasonTimeout, ReasonAppTimeout:
		return "4" // DEADLINE_EXCEEDED
	}
	if e.Culprit == Client && e.Status == http.StatusBadRequest {
		return "3" // INVALID_ARGUMENT
	}
	return GRPCCode(e.Status)
}

// RetryAfter is a Retry-After value: whole seconds, rounded up, at least 1.
func RetryAfter(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(1, s), 10)
}

// grpcMessage percent-encodes msg as grpc-message requires: every byte
// outside printable ASCII, and '%'.
func grpcMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
