package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/trellis-mesh/trellis/bench/procstat"
)

// idleMemory splits a process's idle RSS (after start-up and one request,
// before any load): file-backed pages are the binary's code and data that
// were touched, so they grow with the dependencies linked in; anonymous
// pages are heap, stacks and runtime data. For a trellis-proxy the Go
// runtime's own view comes from its /metrics.
type idleMemory struct {
	Name       string  `json:"name"`
	RSS        int64   `json:"rss_bytes"`
	File       int64   `json:"file_backed_bytes"`
	Anonymous  int64   `json:"anonymous_bytes"`
	HeapInuse  float64 `json:"go_heap_inuse_bytes,omitempty"`
	StackInuse float64 `json:"go_stack_inuse_bytes,omitempty"`
	GoSys      float64 `json:"go_sys_bytes,omitempty"` // everything the Go runtime got from the OS
}

// readIdleMemory reads the breakdown of every proxy (both paths' front and
// back) at idle.
func readIdleMemory(ctx context.Context, e *env) ([]idleMemory, error) {
	var out []idleMemory
	for _, m := range e.measured {
		if m.path == "" {
			continue // the upstream
		}
		var im idleMemory
		im.Name = m.name
		for _, pid := range m.group {
			r, err := procstat.ReadSmapsRollup(pid)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", m.name, err)
			}
			im.RSS, im.File, im.Anonymous = im.RSS+r.RSS, im.File+r.File, im.Anonymous+r.Anonymous
		}
		if m.proxy {
			err := getMetrics(ctx, e.adminOf(m), func(r io.Reader) error {
				g, err := parseGauges(r, "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes")
				im.HeapInuse, im.StackInuse, im.GoSys = g["go_memstats_heap_inuse_bytes"], g["go_memstats_stack_inuse_bytes"], g["go_memstats_sys_bytes"]
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("%s /metrics: %w", m.name, err)
			}
		}
		out = append(out, im)
	}
	return out, nil
}

func printIdleMemory(w io.Writer, ms []idleMemory) {
	if len(ms) == 0 {
		return
	}
	fmt.Fprintln(w, "\n== idle memory, MiB (smaps_rollup; Go figures from the proxy's /metrics; nginx: master + worker)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "process\tRSS\tfile-backed (code, data)\tanonymous\tGo heap in use\tGo stacks\tGo sys")
	for _, m := range ms {
		goFig := func(v float64) string {
			if v == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f", v/(1<<20))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, mib(m.RSS), mib(m.File), mib(m.Anonymous), goFig(m.HeapInuse), goFig(m.StackInuse), goFig(m.GoSys))
	}
	_ = tw.Flush()
}
