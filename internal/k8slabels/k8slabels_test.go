package k8slabels

import (
	"os"
	"strings"
	"testing"
)

// Every annotation and label of the contract is documented for users: a
// key added here without docs fails.
func TestContractDocumented(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		keys []string
	}{
		{"injection.md", []string{
			AnnotationProxyVersion, LabelProxied, AnnotationTrustAnchors, AnnotationInject,
			AnnotationSidecarMode, AnnotationRedirect, AnnotationProxyCPURequest, AnnotationProxyCPULimit,
			AnnotationProxyMemRequest, AnnotationProxyMemLimit, AnnotationSkipInboundPorts, AnnotationSkipOutboundPorts,
			AnnotationOpaquePorts, AnnotationDefaultInboundPolicy, AnnotationTraceCollector, AnnotationTraceSampleRatio,
		}},
		{"controller-kubernetes.md", []string{AnnotationOpaquePorts, AppProtocolOpaque}},
		{"traffic.md", []string{AnnotationFailureAccrual, AnnotationSlowStart}},
	} {
		doc, err := os.ReadFile("../../docs/" + tc.doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range tc.keys {
			// A whole key, as written in the docs: `key` or `key: value`.
			if !strings.Contains(string(doc), "`"+key+"`") && !strings.Contains(string(doc), "`"+key+":") {
				t.Errorf("%s is not in docs/%s", key, tc.doc)
			}
		}
	}
}

func TestTraceSettings(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"jaeger.tracing:4317", true}, {"10.0.0.1:4317", true}, {"[::1]:4317", true},
		{"jaeger", false}, {":4317", false}, {"jaeger:0", false}, {"jaeger:65536", false}, {"jaeger:otlp", false}, {"", false},
	} {
		if err := CheckTraceCollector(tc.v); (err == nil) != tc.ok {
			t.Errorf("CheckTraceCollector(%q) = %v, want ok %v", tc.v, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		v    string
		want float64
		ok   bool
	}{
		{"0", 0, true}, {"1", 1, true}, {"0.01", 0.01, true},
		{"-0.1", 0, false}, {"1.5", 0, false}, {"NaN", 0, false}, {"half", 0, false}, {"", 0, false},
	} {
		got, err := ParseTraceSampleRatio(tc.v)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseTraceSampleRatio(%q) = %v, %v; want %v, ok %v", tc.v, got, err, tc.want, tc.ok)
		}
	}
}
