package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/trellis-mesh/trellis/bench/loadgen"
)

// Targets the mesh is held to (issue 10; bench/README.md).
const (
	targetCPURatio     = 1.1  // a proxy's CPU per request (per byte, per connection) / an nginx hop's
	targetLatencyRatio = 1.25 // mesh-added / nginx-added, p50 and p90
	targetP99Ratio     = 2.0  // mesh-added / nginx-added p99, at targetP99Rate and above
	targetP99Rate      = 4000
	targetIdleRSS      = 10 << 20
	targetLoadRSS      = 14 << 20 // peak at targetLoadRSSRate
	targetLoadRSSRate  = 4000
	targetIdleConnRSS  = 1.1 // RSS per idle connection / nginx's
)

// noisyCores is how much CPU other processes may use during a cell before
// the report warns that it is unreliable.
const noisyCores = 0.2

type report struct {
	Started   time.Time        `json:"started"`
	Options   map[string]any   `json:"options"`
	Scenarios []scenarioReport `json:"scenarios"`
	Cells     []*cellResult    `json:"cells"` // every pass, unmerged
	Targets   []targetResult   `json:"targets"`
	// IdleMemory splits each proxy's idle RSS, before any load.
	IdleMemory []idleMemory `json:"idle_memory,omitempty"`
	Skipped    []string     `json:"skipped,omitempty"` // cells that could not run here, and why
	Notes      []string     `json:"notes,omitempty"`
}

type scenarioReport struct {
	scenario
	Title string       `json:"title"`
	Paths []pathReport `json:"paths"`
	// Latency each path adds over direct, corrected, µs, per percentile.
	Added map[string]latency `json:"added_over_direct_us,omitempty"`
	// Mesh-added divided by nginx-added, corrected; absent when either is missing or nginx adds nothing.
	RatioP50 *float64 `json:"mesh_to_nginx_added_p50,omitempty"`
	RatioP90 *float64 `json:"mesh_to_nginx_added_p90,omitempty"`
}

// pathReport merges every pass of one scenario over one path.
type pathReport struct {
	Path        string     `json:"path"`
	Completed   int64      `json:"completed"`
	Errors      int64      `json:"errors"`
	Unsent      int64      `json:"unsent"`
	FirstError  string     `json:"first_error,omitempty"`
	Corrected   latency    `json:"corrected_us"`
	Uncorrected latency    `json:"uncorrected_us"`
	Procs       []procCost `json:"processes"`
	OtherCores  float64    `json:"other_cores_max"` // the worst cell
	Held        int64      `json:"held_connections,omitempty"`
}

func summarize(o options, scenarios []scenario, cells []*cellResult, e *env) report {
	rep := report{
		Started: time.Now(),
		Options: map[string]any{
			"duration": o.duration.String(), "warmup": o.warmup.String(), "passes": o.passes, "conns": o.conns,
			"proxy_gomaxprocs": o.proxyGOMAXPROCS, "paths": o.paths,
		},
		Cells: cells,
	}
	for _, sc := range scenarios {
		sr := scenarioReport{scenario: sc, Title: sc.title(o)}
		byPath := map[string]*pathReport{}
		for _, path := range o.paths {
			pr := mergePath(sc, path, cells)
			sr.Paths = append(sr.Paths, *pr)
			byPath[path] = pr
		}
		if d := byPath[pathDirect]; d != nil && d.Completed > 0 {
			sr.Added = map[string]latency{}
			for _, p := range sr.Paths {
				if p.Path == pathDirect || p.Completed == 0 {
					continue
				}
				sr.Added[p.Path] = latency{
					P50: p.Corrected.P50 - d.Corrected.P50, P90: p.Corrected.P90 - d.Corrected.P90,
					P99: p.Corrected.P99 - d.Corrected.P99, P999: p.Corrected.P999 - d.Corrected.P999,
					Max: p.Corrected.Max - d.Corrected.Max, Mean: p.Corrected.Mean - d.Corrected.Mean,
				}
			}
			m, okm := sr.Added[pathMesh]
			n, okn := sr.Added[pathNginx]
			if okm && okn {
				sr.RatioP50 = ratio(m.P50, n.P50)
				sr.RatioP90 = ratio(m.P90, n.P90)
			}
		}
		rep.Scenarios = append(rep.Scenarios, sr)
	}
	rep.Targets = checkTargets(rep.Scenarios)
	return rep
}

// mergePath merges every pass of one scenario over one path.
func mergePath(sc scenario, path string, cells []*cellResult) *pathReport {
	corr, unc := loadgen.NewHistogram(), loadgen.NewHistogram()
	pr := &pathReport{Path: path}
	procIdx := map[string]int{}
	for _, c := range cells {
		if c.Scenario != sc.Name || c.Path != path {
			continue
		}
		if c.corr != nil { // the idle scenario has no latencies
			corr.Merge(c.corr)
			unc.Merge(c.unc)
		}
		pr.Completed += c.Completed
		pr.Errors += c.Errors
		pr.Unsent += c.Unsent
		pr.Held = max(pr.Held, c.Held)
		pr.OtherCores = max(pr.OtherCores, c.OtherCores)
		if pr.FirstError == "" {
			pr.FirstError = c.FirstError
		}
		for _, p := range c.Procs {
			i, ok := procIdx[p.Name]
			if !ok {
				i = len(pr.Procs)
				procIdx[p.Name] = i
				pr.Procs = append(pr.Procs, procCost{Name: p.Name, Proxy: p.Proxy, IdleRSS: p.IdleRSS, HeldDelta: p.HeldDelta, HeldGoroutines: p.HeldGoroutines})
			}
			agg := &pr.Procs[i]
			agg.CPUSeconds += p.CPUSeconds
			agg.PeakRSS = max(agg.PeakRSS, p.PeakRSS)
			agg.HWM = max(agg.HWM, p.HWM)
		}
	}
	for i := range pr.Procs {
		pr.Procs[i].fill(pr.Completed + pr.Errors)
	}
	pr.Corrected, pr.Uncorrected = latencyOf(corr), latencyOf(unc)
	return pr
}

func ratio(a, b int64) *float64 {
	if b <= 0 {
		return nil
	}
	r := float64(a) / float64(b)
	return &r
}

func ms(us int64) string { return fmt.Sprintf("%.3f", float64(us)/1000) }

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

func printReport(w io.Writer, o options, rep report) {
	for _, sr := range rep.Scenarios {
		fmt.Fprintf(w, "\n== %s\n", sr.Title)
		if sr.Kind == kindIdle {
			printIdle(w, sr)
			continue
		}
		printLatency(w, sr)
		fmt.Fprintln(w, "cost per process (nginx: master + worker; targets apply to trellis-proxy)")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "path\tprocess\tCPU µs/req\tcores/1k rps\t%s\tRSS idle MiB\tRSS peak MiB\tVmHWM MiB\n", perCoreHeader(sr.Kind))
		for _, p := range sr.Paths {
			for _, pc := range p.Procs {
				if pc.Name == "upstream" && p.Path != pathDirect {
					continue // same process for every path; shown once
				}
				fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.3f\t%s\t%s\t%s\t%s\n", p.Path, pc.Name, pc.CPUMicrosReq, pc.CoresPer1kRPS,
					perCore(sr, p, pc), mib(pc.IdleRSS), mib(pc.PeakRSS), mib(pc.HWM))
			}
		}
		_ = tw.Flush()
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(w, "\nskipped: %s\n", s)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	printIdleMemory(w, rep.IdleMemory)
	printTargets(w, rep.Targets)
	fmt.Fprintf(w, "\n(tails, p99 and beyond, vary several-fold between runs on a shared machine: read them as orders of magnitude)\n")
}

func printLatency(w io.Writer, sr scenarioReport) {
	fmt.Fprintln(w, "latency in ms from the intended send time (corrected), uncorrected (from the actual send) in brackets")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "path\trequests\terrors\tp50\tp90\tp99\tp99.9\tmax\tother load")
	noisy := false
	for _, p := range sr.Paths {
		if p.Completed+p.Errors+p.Unsent == 0 {
			continue // skipped
		}
		c, u := p.Corrected, p.Uncorrected
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s (%s)\t%s (%s)\t%s (%s)\t%s (%s)\t%s\t%.2f cores\n", p.Path, p.Completed, p.Errors+p.Unsent,
			ms(c.P50), ms(u.P50), ms(c.P90), ms(u.P90), ms(c.P99), ms(u.P99), ms(c.P999), ms(u.P999), ms(c.Max), p.OtherCores)
		noisy = noisy || p.OtherCores > noisyCores
	}
	_ = tw.Flush()
	if noisy {
		fmt.Fprintf(w, "  ! other processes used more than %.2f cores during some cells: these figures are unreliable, rerun on a quiet machine\n", noisyCores)
	}
	printFailures(w, sr)
	if len(sr.Added) > 0 {
		fmt.Fprintln(w, "added over direct, ms (corrected)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "path\tp50\tp90\tp99\tp99.9")
		for _, p := range sr.Paths {
			if a, ok := sr.Added[p.Path]; ok {
				fmt.Fprintf(tw, "%s\t%+.3f\t%+.3f\t%+.3f\t%+.3f\n", p.Path,
					float64(a.P50)/1000, float64(a.P90)/1000, float64(a.P99)/1000, float64(a.P999)/1000)
			}
		}
		_ = tw.Flush()
	}
	if sr.RatioP50 != nil || sr.RatioP90 != nil {
		fmt.Fprintf(w, "mesh-added / nginx-added: p50 %s, p90 %s\n", fmtRatio(sr.RatioP50), fmtRatio(sr.RatioP90))
	}
}

func printFailures(w io.Writer, sr scenarioReport) {
	for _, p := range sr.Paths {
		if p.Errors+p.Unsent > 0 {
			first := p.FirstError
			if first == "" {
				first = "none (the unsent requests were still queued when the drain timeout ended the cell)"
			}
			fmt.Fprintf(w, "  ! %s: %d failed, %d unsent; first error: %s\n", p.Path, p.Errors, p.Unsent, first)
		}
	}
}

// perCoreHeader names the work a core does in a second, per scenario kind.
func perCoreHeader(kind string) string {
	switch kind {
	case kindBig, kindOpaque:
		return "MB/s per core"
	case kindChurnHTTP:
		return "new conns/s per core"
	case kindChurnTCP:
		return "conns (mesh, nginx: TLS handshakes)/s per core"
	}
	return "req/s per core"
}

// perCore is the work one core of this process would do in a second:
// requests (or bytes, both ways) divided by the CPU the process used.
func perCore(sr scenarioReport, p pathReport, pc procCost) string {
	if pc.CPUSeconds <= 0 {
		return "-"
	}
	reqs := float64(p.Completed+p.Errors) / pc.CPUSeconds
	if sr.Bytes > 0 {
		return fmt.Sprintf("%.0f", reqs*float64(sr.Bytes)/1e6)
	}
	return fmt.Sprintf("%.0f", reqs)
}

func printIdle(w io.Writer, sr scenarioReport) {
	printFailures(w, sr)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "path\tprocess\tconns held\tRSS before MiB\tRSS held MiB\tKiB per conn\tgoroutines per conn")
	for _, p := range sr.Paths {
		for _, pc := range p.Procs {
			g := "-"
			if pc.Proxy && p.Held > 0 {
				g = fmt.Sprintf("%.2f", pc.HeldGoroutines/float64(p.Held))
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", p.Path, pc.Name, p.Held, mib(pc.IdleRSS), mib(pc.PeakRSS), kibPerConn(pc.HeldDelta, p.Held), g)
		}
	}
	_ = tw.Flush()
}

func kibPerConn(delta, held int64) string {
	if held <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(delta)/1024/float64(held))
}

func fmtRatio(r *float64) string {
	if r == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", *r)
}
