package inject

import (
	"testing"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// The tracing settings reach the proxy's env: the install's default, the
// namespace's over it, the pod's over both; none set, no env (tracing off).
func TestTraceSettings(t *testing.T) {
	const install, ns, pod = "jaeger.tracing:4317", "otel.ns:4317", "otel.pod:4317"
	for _, tc := range []struct {
		name                 string
		cfg                  Config
		nsAnn, podAnn        map[string]string
		collector, sampleEnv string
	}{
		{"none", Config{}, nil, nil, "", ""},
		{"install default", Config{TraceCollector: install, TraceSampleRatio: "0.5"}, nil, nil, install, "0.5"},
		{"namespace over install", Config{TraceCollector: install}, map[string]string{k8slabels.AnnotationTraceCollector: ns}, nil, ns, ""},
		{"pod over namespace", Config{TraceCollector: install}, map[string]string{k8slabels.AnnotationTraceCollector: ns},
			map[string]string{k8slabels.AnnotationTraceCollector: pod, k8slabels.AnnotationTraceSampleRatio: "0.01"}, pod, "0.01"},
		{"ratio without collector", Config{}, nil, map[string]string{k8slabels.AnnotationTraceSampleRatio: "1"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.TrustAnchorsPEM = "-----BEGIN CERTIFICATE-----\n"
			if err := tc.cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			nsAnn := map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled}
			for k, v := range tc.nsAnn {
				nsAnn[k] = v
			}
			podAnn := map[string]string{}
			for k, v := range tc.podAnn {
				podAnn[k] = v
			}
			res, err := New(tc.cfg).Mutate(testPod(podAnn), "shop", nsAnn)
			if err != nil || !res.Injected {
				t.Fatalf("injected %v: %v", res.Injected, err)
			}
			proxy, _ := findContainer(res.Pod, k8slabels.ProxyContainerName)
			env := envOf(proxy)
			if got := env["TRELLIS_PROXY_TRACE_COLLECTOR"]; got != tc.collector {
				t.Errorf("TRELLIS_PROXY_TRACE_COLLECTOR %q, want %q", got, tc.collector)
			}
			if got := env["TRELLIS_PROXY_TRACE_SAMPLE_RATIO"]; got != tc.sampleEnv {
				t.Errorf("TRELLIS_PROXY_TRACE_SAMPLE_RATIO %q, want %q", got, tc.sampleEnv)
			}
		})
	}
	if err := (Config{TraceCollector: "nohost"}).Validate(); err == nil {
		t.Error("an install-wide collector that is not host:port was accepted")
	}
}
