package trace

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

// collector is an in-process OTLP/gRPC trace collector that keeps what
// it receives.
type collector struct {
	coltrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (c *collector) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			c.spans = append(c.spans, ss.GetSpans()...)
		}
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

func (c *collector) byTrace() map[string]*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]*tracepb.Span{}
	for _, s := range c.spans {
		out[fmt.Sprintf("%x", s.GetTraceId())] = s
	}
	return out
}

// TestExportHostileRequests sends requests whose method, path or host a
// caller chose, each with a sampled traceparent (honoured whatever the
// ratio), through the real OTLP/gRPC exporter to an in-process collector,
// all in one batch: every span arrives (one string that is not UTF-8 would
// fail protobuf's Marshal, and so the whole batch), with each attribute
// taken from the request valid and bounded, and a span name that is not
// the caller's made-up method.
func TestExportHostileRequests(t *testing.T) {
	big := "/" + strings.Repeat("a", 100<<10)
	accents := "/" + strings.Repeat("é", 60<<10)
	tests := []struct {
		name, method, target, host string
		peer                       string // the client's identity; "": remote
		wantName                   string
		want                       map[string]string // attribute: exact value
		wantPrefix                 map[string]string // attribute: a prefix, the value cut
	}{
		{"plain", "GET", "/books/1", "books:8080", "", "GET",
			map[string]string{AttrMethod: "GET", AttrPath: "/books/1", AttrServerAddress: "books:8080"}, nil},
		{"100 KiB path", "GET", big, "books:8080", "", "GET",
			map[string]string{AttrServerAddress: "books:8080"}, map[string]string{AttrPath: big[:maxAttrLen]}},
		{"path not UTF-8", "GET", "/%ff", "books:8080", "", "GET",
			map[string]string{AttrPath: "/\uFFFD"}, nil},
		{"long path cut between runes", "POST", accents, "books:8080", "", "POST",
			nil, map[string]string{AttrPath: accents[:maxAttrLen-1]}},
		{"100 KiB host", "GET", "/", strings.Repeat("h", 100<<10), "", "GET",
			nil, map[string]string{AttrServerAddress: strings.Repeat("h", maxAttrLen)}},
		{"host not UTF-8", "GET", "/", "b\xffoks", "", "GET",
			map[string]string{AttrServerAddress: "b\uFFFDoks"}, nil},
		{"made-up method", "BREW", "/pot", "books:8080", "", "HTTP",
			map[string]string{AttrMethod: "BREW"}, nil},
		{"method not UTF-8", "G\xffT", "/", "books:8080", "", "HTTP",
			map[string]string{AttrMethod: "G\uFFFDT"}, nil},
		{"100 KiB method", strings.Repeat("M", 100<<10), "/", "books:8080", "", "HTTP",
			nil, map[string]string{AttrMethod: strings.Repeat("M", maxAttrLen)}},
		// Not the request's, but bounded all the same (the provider's
		// limit).
		{"100 KiB peer identity", "GET", "/", "books:8080", "spiffe://td/" + strings.Repeat("p", 100<<10), "GET",
			nil, map[string]string{AttrClientIdentity: ("spiffe://td/" + strings.Repeat("p", maxAttrLen))[:maxAttrLen]}},
	}
	col := &collector{}
	addr, _ := grpctest.Serve(t, "127.0.0.1:0", func(gs *grpc.Server) { coltrace.RegisterTraceServiceServer(gs, col) })
	tr, err := New(context.Background(), Config{Collector: addr, SampleRatio: 0, Identity: local})
	if err != nil {
		t.Fatal(err)
	}
	traceID := func(i int) string { return fmt.Sprintf("%032x", i+1) }
	for i, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, tt.target, nil)
		r.Method, r.Host = tt.method, tt.host
		r.Header.Set(HeaderTraceparent, "00-"+traceID(i)+"-"+sid+"-01")
		end := &app{status: 200}
		peer := tt.peer
		if peer == "" {
			peer = remote
		}
		x := &pipeline.Exchange{W: httptest.NewRecorder(), R: r, Start: time.Now(), Conn: pipeline.Conn{Peer: peer, TLS: true}}
		if err := tr.Inbound()(end).Serve(x); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	got := col.byTrace()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := got[traceID(i)]
			if s == nil {
				t.Fatalf("no span arrived (%d of %d did)", len(got), len(tests))
			}
			if s.GetName() != tt.wantName {
				t.Errorf("span name %.40q, want %q", s.GetName(), tt.wantName)
			}
			attrs := map[string]string{}
			for _, kv := range s.GetAttributes() {
				if v, ok := kv.GetValue().GetValue().(*commonpb.AnyValue_StringValue); ok {
					attrs[kv.GetKey()] = v.StringValue
				}
			}
			for _, k := range []string{AttrMethod, AttrPath, AttrServerAddress, AttrClientIdentity} {
				v, ok := attrs[k]
				if !ok || !utf8.ValidString(v) || len(v) > maxAttrLen {
					t.Errorf("%s: %d bytes, valid UTF-8 %v, present %v", k, len(v), utf8.ValidString(v), ok)
				}
			}
			for k, want := range tt.want {
				if attrs[k] != want {
					t.Errorf("%s = %.40q, want %.40q", k, attrs[k], want)
				}
			}
			for k, want := range tt.wantPrefix {
				if attrs[k] != want {
					t.Errorf("%s = %.40q (%d bytes), want the first %d bytes of the request's", k, attrs[k], len(attrs[k]), len(want))
				}
			}
			// What the proxy holds and sends for a span stays small
			// whatever the request carried.
			if n := proto.Size(s); n > 8<<10 {
				t.Errorf("the span is %d bytes on the wire", n)
			}
		})
	}
}

func TestReqString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"short", "/books/1", "/books/1"},
		{"empty", "", ""},
		{"invalid", "/\xff\xfe/x", "/\uFFFD/x"},
		{"exactly the limit", strings.Repeat("a", maxAttrLen), strings.Repeat("a", maxAttrLen)},
		{"over the limit", strings.Repeat("a", maxAttrLen+1), strings.Repeat("a", maxAttrLen)},
		{"cut before a split rune", "a" + strings.Repeat("é", maxAttrLen), "a" + strings.Repeat("é", (maxAttrLen-1)/2)},
		{"replacements stay under the limit", strings.Repeat("a\xff", maxAttrLen), strings.Repeat("a\uFFFD", maxAttrLen/4)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reqString(tt.in)
			if got != tt.want {
				t.Errorf("reqString = %.40q (%d bytes), want %.40q (%d bytes)", got, len(got), tt.want, len(tt.want))
			}
			if !utf8.ValidString(got) || len(got) > maxAttrLen {
				t.Errorf("%d bytes, valid %v", len(got), utf8.ValidString(got))
			}
		})
	}
}

func TestSpanName(t *testing.T) {
	tests := map[string]string{
		"GET": "GET", "HEAD": "HEAD", "POST": "POST", "PUT": "PUT", "PATCH": "PATCH", "DELETE": "DELETE",
		"OPTIONS": "OPTIONS", "TRACE": "TRACE", "CONNECT": "CONNECT",
		"get": "HTTP", "BREW": "HTTP", "": "HTTP", "G\xffT": "HTTP",
	}
	for in, want := range tests {
		if got := spanName(in); got != want {
			t.Errorf("spanName(%q) = %q, want %q", in, got, want)
		}
	}
}
