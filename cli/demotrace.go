package cli

import (
	"fmt"
	"strconv"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// checkTraceFlags refuses `trellis demo --trace-collector` and
// --trace-sample-ratio values the proxies would refuse, naming the flag.
func checkTraceFlags(collector string, ratio float64) error {
	if collector != "" {
		if err := k8slabels.CheckTraceCollector(collector); err != nil {
			return fmt.Errorf("--trace-collector %q: %w", collector, err)
		}
	}
	if _, err := k8slabels.ParseTraceSampleRatio(strconv.FormatFloat(ratio, 'g', -1, 64)); err != nil {
		return fmt.Errorf("--trace-sample-ratio %v: %w", ratio, err)
	}
	return nil
}
