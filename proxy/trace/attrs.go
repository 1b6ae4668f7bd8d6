package trace

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// Attribute keys: OpenTelemetry's HTTP semantic conventions, and the
// mesh's own under trellis.*.
const (
	AttrMethod         = "http.request.method"
	AttrStatus         = "http.response.status_code"
	AttrGRPCStatus     = "rpc.grpc.status_code"
	AttrPath           = "url.path"
	AttrServerAddress  = "server.address"
	AttrProtocol       = "network.protocol.version"
	AttrErrorType      = "error.type"
	AttrDirection      = "trellis.direction"
	AttrClientIdentity = "trellis.client.identity"
	AttrServerIdentity = "trellis.server.identity"
	AttrTLS            = "trellis.tls"
	AttrDstService     = "trellis.dst_service"
	AttrRetries        = "trellis.retries"
)

// maxAttrLen bounds, in bytes, each attribute taken from the request
// (method, path, host, destination): a path may be about 1 MiB, and the
// export queue counts spans, not bytes. The provider's own limit
// (AttributeValueLengthLimit, in characters) covers the rest.
const maxAttrLen = 1024

// reqString is s, a string of the caller's, as an attribute value: valid
// UTF-8 (protobuf refuses anything else, failing the whole export batch)
// and at most maxAttrLen bytes, copied when cut so that the span does not
// keep the request's whole string alive.
func reqString(s string) string {
	if len(s) > maxAttrLen {
		s = strings.Clone(s[:runeCut(s, maxAttrLen)])
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > maxAttrLen {
		// The replacement characters made it longer: this copy is ours.
		s = s[:runeCut(s, maxAttrLen)]
	}
	return s
}

// runeCut is where to cut s, longer than max, near max without splitting
// a rune (an invalid sequence is left to ToValidUTF8).
func runeCut(s string, max int) int {
	n := max
	for i := 1; i < utf8.UTFMax && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return n
}

// spanName is the method when it is one of HTTP's (RFC 9110, and PATCH),
// "HTTP" otherwise, as the semantic conventions say: a caller's made-up
// method is neither a name to index nor trusted text.
func spanName(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "HTTP"
}

// outcome is the request's status (the response's, or the error answer's)
// and the error reason when the proxy answered ("" otherwise).
func outcome(x *pipeline.Exchange, err error) (int, string) {
	if err != nil {
		var e *proxyerr.Error
		switch {
		case errors.Is(err, pipeline.ErrCancelled):
			return 0, "cancelled"
		case errors.As(err, &e):
			return e.Status, string(e.Reason)
		}
		return 502, "upstream"
	}
	status, _, _ := x.Outcome()
	return status, ""
}

// attributes are a finished request's span attributes. The query string
// is left out (it may carry credentials); header values are never read.
func attributes(kind oteltrace.SpanKind, local string, x *pipeline.Exchange, status int, err error) []attribute.KeyValue {
	r := x.R
	a := make([]attribute.KeyValue, 0, 14)
	a = append(a,
		attribute.String(AttrMethod, reqString(r.Method)),
		attribute.String(AttrPath, reqString(r.URL.Path)),
		attribute.String(AttrServerAddress, reqString(r.Host)),
		attribute.String(AttrProtocol, protoVersion(r.ProtoMajor, r.ProtoMinor)),
	)
	if status != 0 {
		a = append(a, attribute.Int(AttrStatus, status))
	}
	if _, g, _ := x.Outcome(); g != "" && err == nil {
		if n, perr := strconv.Atoi(g); perr == nil {
			a = append(a, attribute.Int(AttrGRPCStatus, n))
		}
	}
	if _, fail := outcome(x, err); fail != "" {
		a = append(a, attribute.String(AttrErrorType, fail))
	}
	client, server, tls := local, x.Key.PeerIdentity, x.Key.TLS
	if kind == oteltrace.SpanKindServer {
		client, server, tls = x.Conn.Peer, local, x.Conn.TLS
		a = append(a, attribute.String(AttrDirection, "inbound"))
	} else {
		a = append(a, attribute.String(AttrDirection, "outbound"), attribute.String(AttrDstService, reqString(x.Key.DstService)))
		if x.Attempts > 0 {
			a = append(a, attribute.Int(AttrRetries, x.Attempts-1))
		}
	}
	if client != "" {
		a = append(a, attribute.String(AttrClientIdentity, client))
	}
	if server != "" {
		a = append(a, attribute.String(AttrServerIdentity, server))
	}
	return append(a, attribute.Bool(AttrTLS, tls))
}

func protoVersion(major, minor int) string {
	switch {
	case major == 2:
		return "2"
	case major == 1 && minor == 0:
		return "1.0"
	}
	return "1.1"
}

// spanStatus follows the HTTP conventions: a server span fails on 5xx, a
// client span on 4xx too; a gRPC status other than OK fails either; so
// does an answer the proxy made itself or a request cut short.
func spanStatus(kind oteltrace.SpanKind, status int, x *pipeline.Exchange, fail string) (codes.Code, string) {
	if fail != "" {
		return codes.Error, fail
	}
	if _, g, _ := x.Outcome(); g != "" && g != "0" {
		return codes.Error, "grpc-status " + g
	}
	if status >= 500 || kind == oteltrace.SpanKindClient && status >= 400 {
		return codes.Error, ""
	}
	return codes.Unset, ""
}
