// Package forward holds the data-path helpers the outbound and inbound
// listeners share: mesh and hop-by-hop header handling, pooled body copying
// with trailers and flushing, opaque splicing, and connection bookkeeping.
package forward

import (
	"errors"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// Mesh headers, in canonical form. They travel between proxies only.
const (
	HeaderOrigProto  = "Trellis-Orig-Proto"
	HeaderTargetPort = "Trellis-Target-Port"
	HeaderError      = "Trellis-Error"
	// HeaderUnprocessed is set by an inbound proxy on a response it gave
	// itself without the app having seen the request (the app refused the
	// connection): the client proxy may send the request elsewhere. Only a
	// mesh peer's word counts; an app's own header of that name is removed.
	HeaderUnprocessed = "Trellis-Unprocessed"
	meshPrefix        = "Trellis-"
)

// Shared, never-modified header values (avoids allocating per request).
var (
	origProto11 = []string{"HTTP/1.1"}
	origProto10 = []string{"HTTP/1.0"}
)

// SetOrigProto marks a request as coming from an HTTP/1.x app.
func SetOrigProto(h http.Header, protoMinor int) {
	if protoMinor == 0 {
		h[HeaderOrigProto] = origProto10
		return
	}
	h[HeaderOrigProto] = origProto11
}

// hopHeaders are removed whenever a message crosses the proxy (RFC 9110 7.6.1).
var hopHeaders = [...]string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade",
	"Proxy-Authenticate", "Proxy-Authorization",
}

// RemoveHopByHop deletes hop-by-hop headers, the headers named by Connection,
// and TE unless it is exactly "trailers" (which gRPC needs end to end).
func RemoveHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			tok = strings.TrimSpace(tok)
			if tok != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(tok))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	if te, ok := h["Te"]; ok {
		if !(len(te) == 1 && strings.EqualFold(strings.TrimSpace(te[0]), "trailers")) {
			delete(h, "Te")
		}
	}
}

// StripMesh removes every trellis-* header, so the app never sees them and a
// caller cannot spoof them past the inbound proxy.
func StripMesh(h http.Header) {
	for k := range h {
		if IsMesh(k) {
			delete(h, k)
		}
	}
}

// IsMesh reports whether a field name is a mesh field (trellis-*): only
// proxies set them, and they never reach an app, as header or trailer.
func IsMesh(k string) bool {
	return len(k) >= len(meshPrefix) && strings.EqualFold(k[:len(meshPrefix)], meshPrefix)
}

// ErrBadTargetPort is returned for an invalid trellis-target-port value.
var ErrBadTargetPort = errors.New("invalid trellis-target-port")

// PortOf is the port of a host:port address, 0 when there is none (the
// inbound target an authz or rate limit decision is about).
func PortOf(addr string) uint16 {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return 0
	}
	n, err := strconv.ParseUint(addr[i+1:], 10, 16)
	if err != nil {
		return 0
	}
	return uint16(n)
}

// ParseTargetPort parses a trellis-target-port value: a decimal port 1-65535,
// no sign, no spaces, at most 5 digits.
func ParseTargetPort(s string) (uint16, error) {
	if len(s) == 0 || len(s) > 5 {
		return 0, ErrBadTargetPort
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, ErrBadTargetPort
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 || n > 65535 {
		return 0, ErrBadTargetPort
	}
	return uint16(n), nil
}

// SetTargetPort adds trellis-target-port when port is non-zero.
func SetTargetPort(h http.Header, port uint32) {
	if port != 0 {
		h[HeaderTargetPort] = []string{strconv.FormatUint(uint64(port), 10)}
	}
}

// IsUpgrade reports whether an HTTP/1 request asks for a protocol upgrade
// (WebSocket and the like), which the mesh carries as an opaque stream.
func IsUpgrade(h http.Header) bool {
	if _, ok := h["Upgrade"]; !ok {
		return false
	}
	for _, v := range h["Connection"] {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// HeaderExpect carries an HTTP/1 client's "Expect: 100-continue" over the
// mesh hop: x/net's HTTP/2 server removes Expect from requests, and the app
// must see it to refuse a body before it is sent.
const HeaderExpect = "Trellis-Expect"

var expect100 = []string{"100-continue"}

// CarryExpect adds HeaderExpect to an outgoing mesh request whose client
// expects 100-continue.
func CarryExpect(h http.Header) {
	for _, v := range h["Expect"] {
		if strings.EqualFold(strings.TrimSpace(v), "100-continue") {
			h[HeaderExpect] = expect100
			return
		}
	}
}

// RestoreExpect turns HeaderExpect from a mesh peer back into Expect.
func RestoreExpect(h http.Header) {
	if _, ok := h[HeaderExpect]; ok {
		h["Expect"] = expect100
	}
}
