package trace

import (
	"net/http"
	"strings"
	"testing"
)

const (
	tid   = "4bf92f3577b34da6a3ce929d0e0e4736"
	sid   = "00f067aa0ba902b7"
	tid64 = "a3ce929d0e0e4736"
)

func TestExtract(t *testing.T) {
	tests := []struct {
		name    string
		h       http.Header
		from    Format
		trace   string // "" when no parent
		span    string
		sampled bool
		defer_  bool
	}{
		{"w3c sampled", hdr("Traceparent", "00-"+tid+"-"+sid+"-01"), W3C, tid, sid, true, false},
		{"w3c not sampled", hdr("Traceparent", "00-"+tid+"-"+sid+"-00"), W3C, tid, sid, false, false},
		{"w3c other flag bits", hdr("Traceparent", "00-"+tid+"-"+sid+"-03"), W3C, tid, sid, true, false},
		{"w3c future version, extra field", hdr("Traceparent", "cc-"+tid+"-"+sid+"-01-what-the-future-holds"), W3C, tid, sid, true, false},
		{"w3c future version, exact", hdr("Traceparent", "01-"+tid+"-"+sid+"-00"), W3C, tid, sid, false, false},
		{"w3c version ff", hdr("Traceparent", "ff-"+tid+"-"+sid+"-01"), None, "", "", false, true},
		{"w3c v00 too long", hdr("Traceparent", "00-"+tid+"-"+sid+"-01-x"), None, "", "", false, true},
		{"w3c future version glued", hdr("Traceparent", "01-"+tid+"-"+sid+"-01x"), None, "", "", false, true},
		{"w3c short", hdr("Traceparent", "00-"+tid[1:]+"-"+sid+"-01"), None, "", "", false, true},
		{"w3c uppercase", hdr("Traceparent", "00-"+strings.ToUpper(tid)+"-"+sid+"-01"), None, "", "", false, true},
		{"w3c non-hex", hdr("Traceparent", "00-"+tid[:31]+"g-"+sid+"-01"), None, "", "", false, true},
		{"w3c zero trace", hdr("Traceparent", "00-"+strings.Repeat("0", 32)+"-"+sid+"-01"), None, "", "", false, true},
		{"w3c zero span", hdr("Traceparent", "00-"+tid+"-"+strings.Repeat("0", 16)+"-01"), None, "", "", false, true},
		{"w3c wrong separators", hdr("Traceparent", "00_"+tid+"_"+sid+"_01"), None, "", "", false, true},
		{"w3c two fields", http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-01", "00-" + tid + "-" + sid + "-01"}}, None, "", "", false, true},
		{"invalid w3c falls to b3", http.Header{"Traceparent": {"junk"}, "B3": {tid + "-" + sid + "-1"}}, B3Single, tid, sid, true, false},
		{"w3c wins over b3", http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-00"}, "B3": {tid + "-" + sid + "-1"}}, W3C, tid, sid, false, false},
		{"b3 single deferred", hdr("B3", tid+"-"+sid), B3Single, tid, sid, false, true},
		{"b3 single sampled", hdr("B3", tid+"-"+sid+"-1"), B3Single, tid, sid, true, false},
		{"b3 single debug", hdr("B3", tid+"-"+sid+"-d"), B3Single, tid, sid, true, false},
		{"b3 single denied", hdr("B3", tid+"-"+sid+"-0"), B3Single, tid, sid, false, false},
		{"b3 single with parent", hdr("B3", tid+"-"+sid+"-1-"+sid), B3Single, tid, sid, true, false},
		{"b3 single 64-bit trace", hdr("B3", tid64+"-"+sid+"-1"), B3Single, "0000000000000000" + tid64, sid, true, false},
		{"b3 single state only 0", hdr("B3", "0"), None, "", "", false, false},
		{"b3 single state only 1", hdr("B3", "1"), None, "", "", true, false},
		{"b3 single bad state", hdr("B3", tid+"-"+sid+"-x"), None, "", "", false, true},
		{"b3 single bad parent", hdr("B3", tid+"-"+sid+"-1-zz"), None, "", "", false, true},
		{"b3 single 48-bit trace", hdr("B3", tid[:12]+"-"+sid), None, "", "", false, true},
		{"b3 single zero span", hdr("B3", tid+"-0000000000000000-1"), None, "", "", false, true},
		{"b3 multi sampled", multi(tid, sid, "1", ""), B3Multi, tid, sid, true, false},
		{"b3 multi true", multi(tid, sid, "true", ""), B3Multi, tid, sid, true, false},
		{"b3 multi denied", multi(tid, sid, "0", ""), B3Multi, tid, sid, false, false},
		{"b3 multi deferred", multi(tid, sid, "", ""), B3Multi, tid, sid, false, true},
		{"b3 multi debug flag", multi(tid, sid, "0", "1"), B3Multi, tid, sid, true, false},
		{"b3 multi 64-bit", multi(tid64, sid, "1", ""), B3Multi, "0000000000000000" + tid64, sid, true, false},
		{"b3 multi bad sampled", multi(tid, sid, "yes", ""), None, "", "", false, true},
		{"b3 multi no span", http.Header{"X-B3-Traceid": {tid}}, None, "", "", false, true},
		{"nothing", http.Header{}, None, "", "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Extract(tt.h)
			if p.From != tt.from || p.Sampled != tt.sampled || p.Deferred != tt.defer_ {
				t.Fatalf("Extract = from %v sampled %v deferred %v, want %v %v %v", p.From, p.Sampled, p.Deferred, tt.from, tt.sampled, tt.defer_)
			}
			if tt.trace == "" {
				if p.TraceID.IsValid() || p.SpanID.IsValid() {
					t.Fatalf("a parent from a malformed header: %v %v", p.TraceID, p.SpanID)
				}
				return
			}
			if p.TraceID.String() != tt.trace || p.SpanID.String() != tt.span {
				t.Fatalf("ids %s %s, want %s %s", p.TraceID, p.SpanID, tt.trace, tt.span)
			}
		})
	}
}

func hdr(k, v string) http.Header { return http.Header{k: {v}} }

func multi(trace, span, sampled, flags string) http.Header {
	h := http.Header{"X-B3-Traceid": {trace}, "X-B3-Spanid": {span}}
	if sampled != "" {
		h["X-B3-Sampled"] = []string{sampled}
	}
	if flags != "" {
		h["X-B3-Flags"] = []string{flags}
	}
	return h
}

func TestFormatTraceparentRoundTrip(t *testing.T) {
	for _, s := range []string{"00-" + tid + "-" + sid + "-01", "00-" + tid + "-" + sid + "-00"} {
		p, ok := ParseTraceparent(s)
		if !ok {
			t.Fatalf("%s: not parsed", s)
		}
		if got := FormatTraceparent(p.TraceID, p.SpanID, p.Sampled); got != s {
			t.Fatalf("format(parse(%s)) = %s", s, got)
		}
	}
}

// FuzzTraceparent: no input panics; whatever parses formats back to a
// version 00 value that parses to the same parent.
func FuzzTraceparent(f *testing.F) {
	for _, s := range []string{"00-" + tid + "-" + sid + "-01", "cc-" + tid + "-" + sid + "-01-x", "ff-" + tid + "-" + sid + "-01", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := ParseTraceparent(s)
		if !ok {
			return
		}
		q, ok := ParseTraceparent(FormatTraceparent(p.TraceID, p.SpanID, p.Sampled))
		if !ok || q != p {
			t.Fatalf("%q: round trip %v -> %v (%v)", s, p, q, ok)
		}
	})
}

// FuzzB3: no input panics; a parent is never all-zero.
func FuzzB3(f *testing.F) {
	for _, s := range []string{tid + "-" + sid + "-1-" + sid, tid64 + "-" + sid, "d", "0", tid + "-" + sid + "-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := ParseB3(s)
		if ok && p.From != None && (!p.TraceID.IsValid() || !p.SpanID.IsValid()) {
			t.Fatalf("%q: invalid parent %v", s, p)
		}
	})
}
