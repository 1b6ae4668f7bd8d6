package kube

import (
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
)

// Cgroup files holding the container's memory limit (v2, then v1).
var cgroupMemoryLimitFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// memoryLimitShare is the part of the container's limit the Go runtime
// aims to stay under; the rest is for memory it does not manage.
const memoryLimitShare = 0.9

// noLimit: cgroup v1 reports "unlimited" as a page-rounded maximum int64.
const noLimit = 1 << 62

// softMemoryLimit returns the Go soft memory limit for a container whose
// cgroup limits its memory: 90 % of that limit, or 0 when GOMEMLIMIT is set
// (the operator decides) or no limit is found. Without it the GC lets the
// heap grow to twice the live heap whatever the container allows, so a
// controller with a large cluster in its caches is OOM-killed where
// collecting more often would have kept it running (bench/ctrlscale: peak
// RSS 281 MiB for 98 MB live, under the chart's 256 MiB limit).
func softMemoryLimit(getenv func(string) string, readFile func(string) ([]byte, error)) (int64, string) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, ""
	}
	for _, f := range cgroupMemoryLimitFiles {
		b, err := readFile(f)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 || n >= noLimit {
			return 0, "" // "max": no limit
		}
		return int64(float64(n) * memoryLimitShare), f
	}
	return 0, ""
}

// applySoftMemoryLimit sets the runtime's soft limit from the cgroup and
// describes what it did (for the start log).
func applySoftMemoryLimit(getenv func(string) string, readFile func(string) ([]byte, error)) string {
	limit, from := softMemoryLimit(getenv, readFile)
	if limit == 0 {
		return ""
	}
	debug.SetMemoryLimit(limit)
	return fmt.Sprintf("%d MiB (90 %% of %s)", limit>>20, from)
}
