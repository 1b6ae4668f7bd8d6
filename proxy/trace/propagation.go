package trace

import (
	"net/http"

	oteltrace "go.opentelemetry.io/otel/trace"
)

// The headers read and written. Keys are in net/http's canonical form:
// both HTTP/1 and HTTP/2 requests arrive with their names canonicalised.
const (
	HeaderTraceparent = "Traceparent"
	HeaderTracestate  = "Tracestate"
	HeaderB3          = "B3"
	HeaderB3TraceID   = "X-B3-Traceid"
	HeaderB3SpanID    = "X-B3-Spanid"
	HeaderB3Sampled   = "X-B3-Sampled"
	HeaderB3Flags     = "X-B3-Flags"
)

// Format names where a parent came from.
type Format uint8

const (
	// None: no usable parent; a new trace starts.
	None Format = iota
	// W3C: a valid traceparent.
	W3C
	// B3Single: the b3 header.
	B3Single
	// B3Multi: the X-B3-* headers.
	B3Multi
)

// Parent is the caller's span as its headers tell it.
type Parent struct {
	TraceID oteltrace.TraceID
	SpanID  oteltrace.SpanID
	Sampled bool
	// Deferred: the caller made no sampling decision (B3 without a
	// sampling state): this proxy decides, by its ratio.
	Deferred bool
	From     Format
}

// Extract reads the caller's span from h: a valid traceparent wins; then
// b3; then X-B3-*. Anything malformed counts as absent (W3C: a vendor that
// cannot parse traceparent starts a new trace). A b3 header of a sampling
// state alone ("0", "1", "d") carries a decision without a parent:
// returned with From None and Deferred false.
func Extract(h http.Header) Parent {
	if v := h[HeaderTraceparent]; len(v) == 1 {
		// Several traceparent fields are malformed: which one would be
		// the caller's?
		if p, ok := ParseTraceparent(v[0]); ok {
			return p
		}
	}
	if v := h[HeaderB3]; len(v) == 1 {
		if p, ok := ParseB3(v[0]); ok {
			return p
		}
	}
	if p, ok := parseB3Multi(h); ok {
		return p
	}
	return Parent{Deferred: true}
}

// ParseTraceparent parses a W3C traceparent (Trace Context level 1):
// version "00" is exactly 55 characters; a later version (not "ff") may
// append "-"-separated fields, which are ignored. Hex is lowercase; the
// trace and parent IDs must not be all zeros.
func ParseTraceparent(s string) (Parent, bool) {
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return Parent{}, false
	}
	var ver, flags [1]byte
	if !lowerHex(ver[:], s[0:2]) || ver[0] == 0xff {
		return Parent{}, false
	}
	if ver[0] == 0 && len(s) != 55 || ver[0] != 0 && len(s) > 55 && s[55] != '-' {
		return Parent{}, false
	}
	p := Parent{From: W3C}
	if !lowerHex(p.TraceID[:], s[3:35]) || !lowerHex(p.SpanID[:], s[36:52]) || !lowerHex(flags[:], s[53:55]) {
		return Parent{}, false
	}
	if !p.TraceID.IsValid() || !p.SpanID.IsValid() {
		return Parent{}, false
	}
	p.Sampled = flags[0]&0x01 != 0
	return p, true
}

// FormatTraceparent is the version 00 traceparent of a span.
func FormatTraceparent(tid oteltrace.TraceID, sid oteltrace.SpanID, sampled bool) string {
	const hexd = "0123456789abcdef"
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	for i, c := range tid {
		b[3+2*i], b[4+2*i] = hexd[c>>4], hexd[c&15]
	}
	b[35] = '-'
	for i, c := range sid {
		b[36+2*i], b[37+2*i] = hexd[c>>4], hexd[c&15]
	}
	b[52], b[53], b[54] = '-', '0', '0'
	if sampled {
		b[54] = '1'
	}
	return string(b[:])
}

// ParseB3 parses the single b3 header: "{trace}-{span}[-{state}[-{parent}]]"
// (trace 16 or 32 hex, span and parent 16) or a state alone; the state is
// "1" (sampled), "d" (debug: sampled), "0" (not sampled).
func ParseB3(s string) (Parent, bool) {
	switch s {
	case "0":
		return Parent{}, true
	case "1", "d":
		return Parent{Sampled: true}, true
	}
	p := Parent{From: B3Single, Deferred: true}
	rest, ok := b3TraceID(&p, s)
	if !ok || len(rest) < 17 || rest[0] != '-' || !lowerHex(p.SpanID[:], rest[1:17]) || !p.SpanID.IsValid() {
		return Parent{}, false
	}
	rest = rest[17:]
	if rest == "" {
		return p, true
	}
	if len(rest) < 2 || rest[0] != '-' {
		return Parent{}, false
	}
	switch rest[1] {
	case '1', 'd':
		p.Sampled, p.Deferred = true, false
	case '0':
		p.Deferred = false
	default:
		return Parent{}, false
	}
	rest = rest[2:]
	var parent oteltrace.SpanID
	if rest != "" && (len(rest) != 17 || rest[0] != '-' || !lowerHex(parent[:], rest[1:])) {
		return Parent{}, false
	}
	return p, true
}

// b3TraceID reads a 16 or 32 hex trace ID at the start of s (64-bit IDs
// are left-padded with zeros, as B3 says) and returns what follows.
func b3TraceID(p *Parent, s string) (string, bool) {
	n := len(s)
	if i := indexDash(s); i >= 0 {
		n = i
	}
	switch n {
	case 32:
		if !lowerHex(p.TraceID[:], s[:32]) {
			return "", false
		}
	case 16:
		if !lowerHex(p.TraceID[8:], s[:16]) {
			return "", false
		}
	default:
		return "", false
	}
	return s[n:], p.TraceID.IsValid()
}

// parseB3Multi reads X-B3-TraceId, X-B3-SpanId, X-B3-Sampled ("1", "0",
// and the legacy "true", "false") and X-B3-Flags ("1": debug, sampled).
func parseB3Multi(h http.Header) (Parent, bool) {
	tid, sid := h[HeaderB3TraceID], h[HeaderB3SpanID]
	if len(tid) != 1 || len(sid) != 1 || len(sid[0]) != 16 {
		return Parent{}, false
	}
	p := Parent{From: B3Multi, Deferred: true}
	if rest, ok := b3TraceID(&p, tid[0]); !ok || rest != "" {
		return Parent{}, false
	}
	if !lowerHex(p.SpanID[:], sid[0]) || !p.SpanID.IsValid() {
		return Parent{}, false
	}
	if f := h[HeaderB3Flags]; len(f) == 1 && f[0] == "1" {
		p.Sampled, p.Deferred = true, false
		return p, true
	}
	if v := h[HeaderB3Sampled]; len(v) == 1 {
		switch v[0] {
		case "1", "true":
			p.Sampled, p.Deferred = true, false
		case "0", "false":
			p.Deferred = false
		default:
			return Parent{}, false
		}
	}
	return p, true
}

func indexDash(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			return i
		}
	}
	return -1
}

// lowerHex decodes s (exactly 2*len(dst) lowercase hex digits) into dst.
func lowerHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := nibble(s[2*i])
		lo, ok2 := nibble(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func nibble(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
