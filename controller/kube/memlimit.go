package kube

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/trellis-mesh/trellis/internal/memsize"
)

// memoryLimitShare is the part of the container's limit the Go runtime
// aims to stay under; the rest is for memory it does not manage.
const memoryLimitShare = 0.9

// Values of --soft-memory-limit besides a size.
const (
	SoftMemoryLimitAuto = "auto"
	SoftMemoryLimitOff  = "off"
)

// softMemoryLimit returns the Go soft memory limit to set and where it
// comes from. flag is --soft-memory-limit: "auto" (or "") is 90 % of the
// container's cgroup memory limit, "off" none, else a size (bytes, KiB,
// MiB, GiB). 0 means leave the runtime alone: GOMEMLIMIT set (the
// operator decides, "off" included), "off", or no cgroup limit. Without a
// soft limit the GC lets the heap grow to twice the live heap whatever
// the container allows, so a controller with a large cluster in its
// caches is OOM-killed where collecting more often would have kept it
// running (bench/ctrlscale: peak RSS 281 MiB for 98 MB live, under the
// chart's 256 MiB limit).
func softMemoryLimit(flag string, getenv func(string) string, readFile func(string) ([]byte, error)) (int64, string, error) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, "", nil
	}
	switch flag = strings.TrimSpace(flag); flag {
	case SoftMemoryLimitOff:
		return 0, "", nil
	case "", SoftMemoryLimitAuto:
	default:
		n, err := memsize.Parse(flag)
		if err == nil && n == 0 {
			err = fmt.Errorf("invalid size %q (want auto, off or a size such as 200MiB)", flag)
		}
		if err != nil {
			return 0, "", fmt.Errorf("--soft-memory-limit: %w", err)
		}
		return n, "--soft-memory-limit", nil
	}
	if n, f := memsize.CgroupLimit(readFile); n > 0 {
		return int64(float64(n) * memoryLimitShare), fmt.Sprintf("90 %% of %s (%d MiB)", f, n>>20), nil
	}
	return 0, "", nil
}

// applySoftMemoryLimit sets the runtime's soft limit (softMemoryLimit)
// and describes what it did for the start log ("" when nothing).
func applySoftMemoryLimit(flag string, getenv func(string) string, readFile func(string) ([]byte, error)) (string, error) {
	limit, from, err := softMemoryLimit(flag, getenv, readFile)
	if err != nil || limit == 0 {
		return "", err
	}
	debug.SetMemoryLimit(limit)
	return fmt.Sprintf("%d MiB from %s", limit>>20, from), nil
}
