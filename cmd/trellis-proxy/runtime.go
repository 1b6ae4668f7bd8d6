package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/trellis-mesh/trellis/internal/memsize"
)

// runtimeConfig is how the Go runtime is sized for a sidecar.
type runtimeConfig struct {
	maxProcs    int    // 0: the runtime's default
	memoryLimit string // "auto" (90 % of the cgroup limit), "off" or "0" (none), or a size
	readFile    func(string) ([]byte, error)
	gcPercent   int // 0: the runtime's default (GOGC or 100)
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
		n, err := rc.softMemoryLimit()
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

// memoryLimitShare is the part of the container's memory limit the Go
// runtime aims to stay under with --memory-limit auto.
const memoryLimitShare = 0.9

// softMemoryLimit is the limit --memory-limit names, 0 for none. A soft
// limit is a safety net below the container's hard limit, not a target:
// near the proxy's own baseline (about 11.5 MiB of Go memory idle) the
// GC runs without pause once a burst of connections has left the heap a
// little larger, up to half a core for ever (meshbench: 950 instead of
// 230 µs per request after 10,000 idle connections had come and gone,
// with the former default of 12MiB).
func (rc runtimeConfig) softMemoryLimit() (int64, error) {
	switch rc.memoryLimit {
	case "auto", "":
		read := rc.readFile
		if read == nil {
			read = os.ReadFile
		}
		n, _ := memsize.CgroupLimit(read)
		return int64(float64(n) * memoryLimitShare), nil
	case "off":
		return 0, nil
	}
	return memsize.Parse(rc.memoryLimit)
}
