package forward

import (
	"errors"
	"net/http"
	"strings"
)

// HeaderAppProto is set by a client proxy on a request to a meshed
// endpoint: the protocol the endpoint's app speaks, as the control plane's
// hint says (appProtocol, the opaque-ports annotation, or the local
// store). The server proxy speaks it to the app; like every mesh header it
// is honoured only from mesh peers, validated, and removed.
const HeaderAppProto = "Trellis-App-Proto"

// AppProto is what the control plane says an app speaks.
type AppProto uint8

// App protocols. AppProtoUnknown: no hint, speak the caller's protocol.
const (
	AppProtoUnknown AppProto = iota
	AppProtoHTTP1            // HTTP/1.1 only
	AppProtoHTTP2            // HTTP/2 with prior knowledge (h2c) only
	AppProtoGRPC             // gRPC, so HTTP/2
)

// Wire values of HeaderAppProto (shared, never modified).
var appProtoValues = [...][]string{
	AppProtoHTTP1: {"http1"},
	AppProtoHTTP2: {"http2"},
	AppProtoGRPC:  {"grpc"},
}

// ErrBadAppProto is returned for an invalid trellis-app-proto value.
var ErrBadAppProto = errors.New("invalid trellis-app-proto")

// SetAppProto adds trellis-app-proto for a known protocol.
func SetAppProto(h http.Header, p AppProto) {
	if p != AppProtoUnknown && int(p) < len(appProtoValues) {
		h[HeaderAppProto] = appProtoValues[p]
	}
}

// ParseAppProto parses the values of trellis-app-proto: exactly one of
// http1, http2, grpc (lower case, no spaces). Anything else is an error:
// a peer that sends it is broken or hostile, and guessing could send a
// request in a protocol the app does not speak.
func ParseAppProto(vv []string) (AppProto, error) {
	if len(vv) != 1 {
		return AppProtoUnknown, ErrBadAppProto
	}
	for p, v := range appProtoValues {
		if v != nil && vv[0] == v[0] {
			return AppProto(p), nil
		}
	}
	return AppProtoUnknown, ErrBadAppProto
}

// Caller is the protocol a request arrived in at the client proxy.
type Caller uint8

// Callers.
const (
	CallerHTTP1 Caller = iota // HTTP/1.0 or HTTP/1.1
	CallerHTTP2               // HTTP/2 (h2c or h2), not gRPC
	CallerGRPC                // gRPC over HTTP/2
)

// CallerOf classifies a request; h1 says whether the calling app spoke
// HTTP/1.x (which on the mesh hop only the trellis-orig-proto header says).
func CallerOf(h http.Header, h1 bool) Caller {
	if h1 {
		return CallerHTTP1
	}
	if ct := h["Content-Type"]; len(ct) > 0 && isGRPCProper(ct[0]) {
		return CallerGRPC
	}
	return CallerHTTP2
}

// isGRPCProper reports whether a content type is gRPC itself
// (application/grpc, +proto, ;params), which needs HTTP/2 trailers; not
// gRPC-Web (application/grpc-web...), which HTTP/1.1 carries.
func isGRPCProper(ct string) bool {
	const p = "application/grpc"
	if len(ct) < len(p) || !strings.EqualFold(ct[:len(p)], p) {
		return false
	}
	rest := ct[len(p):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// ErrGRPCToHTTP1 is returned when a gRPC request would go to an app that
// speaks only HTTP/1.1: gRPC needs HTTP/2.
var ErrGRPCToHTTP1 = errors.New("gRPC needs HTTP/2 but the service port declares an HTTP/1.1-only app (protocol http); declare it grpc or h2c, or leave the protocol to detection")

// ToApp decides the protocol towards the app: HTTP/1.1 (h1 true) or HTTP/2
// with prior knowledge. Without a hint it is the caller's; with one, the
// app's, so an HTTP/2 caller reaches an HTTP/1.1-only app (the request is
// downgraded) and an HTTP/1.1 caller an h2c-only one. gRPC cannot be
// carried to an HTTP/1.1-only app.
func ToApp(c Caller, hint AppProto) (h1 bool, err error) {
	switch hint {
	case AppProtoHTTP1:
		if c == CallerGRPC {
			return false, ErrGRPCToHTTP1
		}
		return true, nil
	case AppProtoHTTP2, AppProtoGRPC:
		return false, nil
	}
	return c == CallerHTTP1, nil
}
