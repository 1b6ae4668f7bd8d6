package upstream

import (
	"context"
	"net/http"
	"strings"

	"google.golang.org/grpc/metadata"
)

// TraceHeaders are the trace context headers the demo passes from the
// request it serves to the calls it makes: W3C Trace Context and B3. A
// proxy cannot tie a pod's incoming request to its outgoing calls, so an
// app must do this for a trace to span several hops; a real app's
// OpenTelemetry SDK does it (and records its own spans); the demo only
// copies the headers.
var TraceHeaders = []string{
	"Traceparent", "Tracestate",
	"B3", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Flags",
}

// CopyTrace copies the trace headers of from onto to.
func CopyTrace(to, from http.Header) {
	for _, k := range TraceHeaders {
		if v, ok := from[k]; ok {
			to[k] = append([]string(nil), v...)
		}
	}
}

// TraceContext returns ctx whose outgoing gRPC metadata carries the trace
// headers of from.
func TraceContext(ctx context.Context, from http.Header) context.Context {
	var kv []string
	for _, k := range TraceHeaders {
		for _, v := range from[k] {
			kv = append(kv, strings.ToLower(k), v)
		}
	}
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}
