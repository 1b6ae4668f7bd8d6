package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/trellis-mesh/trellis/internal/memsize"
)

// runtimeConfig is how the Go runtime is sized for a sidecar.
type runtimeConfig struct {
	maxProcs    int    // 0: the runtime's default
	memoryLimit string // "0": none
	gcPercent   int    // 0: the runtime's default (GOGC or 100)
}

// apply sets GOMAXPROCS, the soft memory limit and GOGC, except where the
// standard environment variables (GOMAXPROCS, GOMEMLIMIT, GOGC) are set:
// those were chosen by the operator and win.
//
// One P by default: a sidecar shares its node's cores with the app it
// serves, and with several Ps a mostly idle Go process spends CPU on
// spinning threads and cross-core wake-ups (about -25 % CPU for a proxy
// pair at 4,000 rps on 2 cores with one P).
func (rc runtimeConfig) apply(lookup func(string) (string, bool)) error {
	if _, set := lookup("GOMAXPROCS"); !set && rc.maxProcs > 0 {
		runtime.GOMAXPROCS(rc.maxProcs)
	}
	if _, set := lookup("GOMEMLIMIT"); !set {
		n, err := memsize.Parse(rc.memoryLimit)
		if err != nil {
			return fmt.Errorf("--memory-limit: %w", err)
		}
		if n > 0 {
			debug.SetMemoryLimit(n)
		}
	}
	if _, set := lookup("GOGC"); !set && rc.gcPercent != 0 {
		debug.SetGCPercent(rc.gcPercent)
	}
	return nil
}
