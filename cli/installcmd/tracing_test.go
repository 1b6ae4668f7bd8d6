package installcmd

import (
	"strings"
	"testing"
	"time"
)

// TestInstallTraceCollector: --trace-collector reaches the injector's
// environment; an address that is not host:port is refused naming it.
func TestInstallTraceCollector(t *testing.T) {
	out, err := run(t, newInstall(time.Now, &kubeFlags{}, offline), "--trace-collector", "jaeger.tracing:4317", "--set", "proxy.tracing.sampleRatio=0.25")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"- name: TRELLIS_PROXY_TRACE_COLLECTOR\n          value: \"jaeger.tracing:4317\"\n",
		"- name: TRELLIS_PROXY_TRACE_SAMPLE_RATIO\n          value: \"0.25\"\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the controller's environment does not carry %q", want)
		}
	}
	for _, args := range [][]string{{"--trace-collector", "jaeger"}, {"--set", "proxy.tracing.sampleRatio=2"}} {
		_, err = run(t, newInstall(time.Now, &kubeFlags{}, offline), args...)
		if err == nil || !strings.Contains(err.Error(), "proxy.tracing.") {
			t.Errorf("%v: %v, want the value refused and named", args, err)
		}
	}
}
