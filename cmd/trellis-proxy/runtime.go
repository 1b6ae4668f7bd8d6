package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
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
		n, err := parseBytes(rc.memoryLimit)
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

// parseBytes parses a size: a plain number of bytes or one with a B, KiB,
// MiB or GiB suffix (as GOMEMLIMIT); "0" or "" means none.
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q (want e.g. 12MiB)", s)
	}
	return n * mult, nil
}
