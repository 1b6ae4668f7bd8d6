package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// targetResult is one target checked against this run's own numbers.
// Every target is "measured <= limit"; a ratio target's limit is the ratio.
type targetResult struct {
	Target   string  `json:"target"`
	Scenario string  `json:"scenario"`
	Measured float64 `json:"measured"`
	Limit    float64 `json:"limit"`
	Unit     string  `json:"unit"` // "x" (ratio to nginx) or "MiB"
	Met      bool    `json:"met"`
	// Note says why the figure is doubtful (failed requests, noisy cell).
	Note string `json:"note,omitempty"`
	// Unchecked, when set, says why the run could not check the target.
	Unchecked string `json:"unchecked,omitempty"`
}

func (t targetResult) verdict() string {
	if t.Unchecked != "" {
		return "not checked: " + t.Unchecked
	}
	if t.Met {
		return "met"
	}
	return fmt.Sprintf("missed by %.0f %%", (t.Measured/t.Limit-1)*100)
}

func newTarget(target, scenario string, measured, limit float64, unit string) targetResult {
	return targetResult{Target: target, Scenario: scenario, Measured: measured, Limit: limit, Unit: unit, Met: measured <= limit}
}

// checkTargets compares the mesh with the nginx chain of the same run.
func checkTargets(scs []scenarioReport) []targetResult {
	var out []targetResult
	idleDone := map[string]bool{}
	for _, sr := range scs {
		mesh, ng := sr.path(pathMesh), sr.path(pathNginx)
		if mesh == nil || mesh.Completed == 0 {
			continue
		}
		var ts []targetResult
		if sr.Kind == kindIdle {
			ts = idleTargets(sr, mesh, ng)
		} else {
			ts = loadTargets(sr, mesh, ng)
			for _, pc := range mesh.Procs {
				if pc.Proxy && !idleDone[pc.Name] {
					idleDone[pc.Name] = true
					ts = append(ts, newTarget("RSS idle, "+pc.Name, "start-up", float64(pc.IdleRSS)/(1<<20), targetIdleRSS/(1<<20), "MiB"))
				}
			}
		}
		note := ""
		if mesh.Errors+mesh.Unsent > 0 || (ng != nil && ng.Errors+ng.Unsent > 0) {
			note = "requests failed in this scenario"
		} else if mesh.OtherCores > noisyCores || (ng != nil && ng.OtherCores > noisyCores) {
			note = "noisy: other processes were busy"
		}
		for i := range ts {
			ts[i].Note = note
		}
		out = append(out, ts...)
	}
	return out
}

// unitOf names what a load scenario's CPU is spent on.
func unitOf(kind string) string {
	switch kind {
	case kindBig, kindOpaque:
		return "CPU per MiB carried"
	case kindChurnHTTP:
		return "CPU per new app connection (and request)"
	case kindChurnTCP:
		return "CPU per new connection with TLS handshake"
	}
	return "CPU per request"
}

func loadTargets(sr scenarioReport, mesh, ng *pathReport) []targetResult {
	var out []targetResult
	if hop := nginxHopMicros(ng); hop > 0 {
		for _, pc := range mesh.Procs {
			if pc.Proxy {
				out = append(out, newTarget(fmt.Sprintf("%s, %s / an nginx hop", unitOf(sr.Kind), pc.Name), sr.Name, pc.CPUMicrosReq/hop, targetCPURatio, "x"))
			}
		}
	}
	m, okm := sr.Added[pathMesh]
	n, okn := sr.Added[pathNginx]
	if (sr.Kind == kindHTTP || sr.Kind == kindGRPC) && okm && okn {
		out = append(out, latencyTarget("added p50, mesh / nginx chain", sr.Name, m.P50, n.P50, targetLatencyRatio),
			latencyTarget("added p90, mesh / nginx chain", sr.Name, m.P90, n.P90, targetLatencyRatio))
		if sr.Rate >= targetP99Rate {
			out = append(out, latencyTarget("added p99, mesh / nginx chain", sr.Name, m.P99, n.P99, targetP99Ratio))
		}
	}
	if sr.Kind == kindHTTP && sr.Rate >= targetLoadRSSRate {
		for _, pc := range mesh.Procs {
			if pc.Proxy {
				out = append(out, newTarget("RSS peak, "+pc.Name, sr.Name, float64(pc.PeakRSS)/(1<<20), targetLoadRSS/(1<<20), "MiB"))
			}
		}
	}
	return out
}

// latencyTarget compares added latencies (µs); a ratio is meaningless when
// the nginx chain added nothing measurable, and the mesh must add
// something for a ratio under 1 to mean "faster" rather than noise.
func latencyTarget(name, scenario string, mesh, nginx int64, limit float64) targetResult {
	if nginx <= 0 || mesh < 0 {
		t := newTarget(name, scenario, 0, limit, "x")
		t.Met = false
		t.Unchecked = fmt.Sprintf("added latency at or below direct's (mesh %+d µs, nginx %+d µs): noise", mesh, nginx)
		return t
	}
	return newTarget(name, scenario, float64(mesh)/float64(nginx), limit, "x")
}

// nginxHopMicros is the mean CPU per request of the two nginx instances.
func nginxHopMicros(ng *pathReport) float64 {
	if ng == nil || ng.Completed == 0 {
		return 0
	}
	var sum float64
	var n int
	for _, pc := range ng.Procs {
		if pc.Name == "nginx1" || pc.Name == "nginx2" {
			sum += pc.CPUMicrosReq
			n++
		}
	}
	if n != 2 {
		return 0
	}
	return sum / 2
}

func idleTargets(sr scenarioReport, mesh, ng *pathReport) []targetResult {
	if ng == nil || ng.Held == 0 || len(ng.Procs) == 0 || mesh.Held == 0 {
		return nil
	}
	perNginx := float64(ng.Procs[0].HeldDelta) / float64(ng.Held)
	if perNginx <= 0 {
		return nil
	}
	var out []targetResult
	for _, pc := range mesh.Procs {
		if pc.Proxy && pc.Name == "client-proxy" {
			per := float64(pc.HeldDelta) / float64(mesh.Held)
			out = append(out, newTarget("RSS per idle app connection, client-proxy / nginx #1", sr.Name, per/perNginx, targetIdleConnRSS, "x"))
		}
	}
	return out
}

func (sr scenarioReport) path(name string) *pathReport {
	for i := range sr.Paths {
		if sr.Paths[i].Path == name {
			return &sr.Paths[i]
		}
	}
	return nil
}

func printTargets(w io.Writer, ts []targetResult) {
	fmt.Fprintln(w, "\n== targets (issue 10), from this run's own numbers")
	if len(ts) == 0 {
		fmt.Fprintln(w, "none checked: targets compare the mesh with nginx, so both paths must run")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tscenario\tmeasured\tlimit\tverdict")
	met, unchecked := 0, 0
	for _, t := range ts {
		if t.Unchecked != "" {
			unchecked++
		}
		v := t.verdict()
		if t.Note != "" {
			v += " (" + t.Note + ")"
		}
		if t.Met {
			met++
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f%s\t<= %.2f%s\t%s\n", t.Target, t.Scenario, t.Measured, t.Unit, t.Limit, t.Unit, v)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%d of %d met, %d not checked\n", met, len(ts), unchecked)
}
