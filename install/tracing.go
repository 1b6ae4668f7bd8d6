package install

import (
	"fmt"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// checkTracing refuses tracing values the injector would refuse at start
// (proxy.tracing.collector, --trace-collector; proxy.tracing.sampleRatio),
// naming the value.
func checkTracing(v Values) error {
	if x, _ := v.Get("proxy.tracing.collector"); x != nil && fmt.Sprint(x) != "" {
		if err := k8slabels.CheckTraceCollector(fmt.Sprint(x)); err != nil {
			return fmt.Errorf("proxy.tracing.collector (--trace-collector) %q: %w", fmt.Sprint(x), err)
		}
	}
	if x, _ := v.Get("proxy.tracing.sampleRatio"); x != nil && fmt.Sprint(x) != "" {
		if _, err := k8slabels.ParseTraceSampleRatio(fmt.Sprint(x)); err != nil {
			return fmt.Errorf("proxy.tracing.sampleRatio %q: %w", fmt.Sprint(x), err)
		}
	}
	return nil
}
