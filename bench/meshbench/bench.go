package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/trellis-mesh/trellis/bench/loadgen"
	"github.com/trellis-mesh/trellis/bench/procstat"
)

type scenario struct {
	Name string  `json:"name"`
	Kind string  `json:"kind"` // "http" or "grpc"
	Rate float64 `json:"rate"`
}

func (s scenario) title(o options) string {
	what := fmt.Sprintf("HTTP/1.1 GET, %d-byte body, %d connections", bodySize, o.conns)
	if s.Kind == "grpc" {
		what = fmt.Sprintf("gRPC unary echo, %d-byte message, one ClientConn, %d calls in flight at most", bodySize, o.conns)
	}
	return fmt.Sprintf("%s at %g rps; %v measured after %v warm-up; %d pass(es)", what, s.Rate, o.duration, o.warmup, o.passes)
}

// measured is a process (or a group: nginx master and worker) whose CPU and
// memory are read around each cell.
type measured struct {
	name  string
	path  string // the path it belongs to; "" for the upstream (all paths)
	group procstat.Group
	proxy bool // counts against the proxy targets
}

// env is everything started once for the whole run.
type env struct {
	upstream string // address
	mesh     *meshSetup
	nginx    *nginxPair
	measured []measured
	idleRSS  map[string]int64
}

func run(ctx context.Context, o options, log *slog.Logger, out io.Writer) error {
	dir, err := os.MkdirTemp("", "meshbench-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	if o.keep {
		log.Info("keeping the temporary directory", "dir", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	ps := &procs{dir: dir, log: log}
	defer ps.Stop()

	e, err := setup(ctx, o, ps, dir, log)
	if err != nil {
		return err
	}

	var scenarios []scenario
	for _, r := range o.rates {
		scenarios = append(scenarios, scenario{Name: fmt.Sprintf("http-%g", r), Kind: "http", Rate: r})
	}
	if o.grpcRate > 0 {
		scenarios = append(scenarios, scenario{Name: fmt.Sprintf("grpc-%g", o.grpcRate), Kind: "grpc", Rate: o.grpcRate})
	}

	var cells []*cellResult
	for pass := 1; pass <= o.passes; pass++ {
		order := slices.Clone(o.paths)
		if pass%2 == 0 {
			slices.Reverse(order) // alternate order so drift favours no path
		}
		for _, sc := range scenarios {
			for _, path := range order {
				log.Info("cell", "pass", pass, "scenario", sc.Name, "path", path)
				c, err := runCell(ctx, o, e, sc, path, pass)
				if err != nil {
					return fmt.Errorf("%s over %s (pass %d): %w", sc.Name, path, pass, err)
				}
				if c.Errors > 0 || c.Unsent > 0 {
					log.Warn("requests failed", "scenario", sc.Name, "path", path, "errors", c.Errors, "unsent", c.Unsent, "first", c.FirstError)
				}
				cells = append(cells, c)
			}
		}
	}
	rep := summarize(o, scenarios, cells, e)
	printReport(out, o, rep)
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("json: %w", err)
		}
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", o.jsonOut, err)
		}
		log.Info("wrote results", "file", o.jsonOut)
	}
	return nil
}

func setup(ctx context.Context, o options, ps *procs, dir string, log *slog.Logger) (*env, error) {
	e := &env{idleRSS: map[string]int64{}}
	up, addr, err := startUpstream(ctx, ps)
	if err != nil {
		return nil, err
	}
	e.upstream = addr
	e.measured = append(e.measured, measured{name: "upstream", group: procstat.Group{up.pid()}})
	log.Info("upstream listening", "addr", addr)

	if slices.Contains(o.paths, pathNginx) {
		ndir := dirUnder(dir, "nginx")
		n, err := startNginx(ctx, ps, o.nginxBin, ndir, addr)
		if err != nil {
			return nil, err
		}
		e.nginx = n
		for _, p := range []*proc{n.front, n.back} {
			kids, err := procstat.Children(p.pid())
			if err != nil {
				return nil, err
			}
			e.measured = append(e.measured, measured{name: p.name, path: pathNginx, group: append(procstat.Group{p.pid()}, kids...)})
		}
		log.Info("nginx yardstick ready", "http", n.httpAddr, "grpc", n.grpcAddr)
	}
	if slices.Contains(o.paths, pathMesh) {
		mdir := dirUnder(dir, "mesh")
		m, err := startMesh(ctx, ps, meshOptions{binDir: o.binDir, gomaxprocs: o.proxyGOMAXPROCS, logLevel: o.proxyLogLevel}, mdir, addr)
		if err != nil {
			return nil, err
		}
		e.mesh = m
		for _, p := range []*proc{m.client, m.server} {
			e.measured = append(e.measured, measured{name: p.name, path: pathMesh, group: procstat.Group{p.pid()}, proxy: true})
		}
		log.Info("mesh ready", "outbound", m.outboundAddr)
	}
	// Idle memory: after start-up and one request through each path, before
	// any load.
	time.Sleep(500 * time.Millisecond)
	for _, m := range e.measured {
		mem, err := m.group.Memory()
		if err != nil {
			return nil, fmt.Errorf("%s memory: %w", m.name, err)
		}
		e.idleRSS[m.name] = mem.RSS
	}
	return e, nil
}

func dirUnder(dir, name string) string {
	d := dir + "/" + name
	_ = os.MkdirAll(d, 0o700)
	return d
}

// cellResult is one scenario over one path in one pass.
type cellResult struct {
	Scenario string        `json:"scenario"`
	Path     string        `json:"path"`
	Pass     int           `json:"pass"`
	Rate     float64       `json:"rate"`
	Wall     time.Duration `json:"wall_ns"` // between the CPU readings
	// OtherCores is the CPU used by processes outside the bench during the
	// cell, in cores (from /proc/stat; -1 when unknown).
	OtherCores  float64    `json:"other_cores"`
	Scheduled   int64      `json:"scheduled"`
	Completed   int64      `json:"completed"`
	Errors      int64      `json:"errors"`
	Unsent      int64      `json:"unsent"`
	FirstError  string     `json:"first_error,omitempty"`
	Corrected   latency    `json:"corrected_us"`
	Uncorrected latency    `json:"uncorrected_us"`
	Procs       []procCost `json:"processes"`

	corr, unc *hdrhistogram.Histogram
}

type latency struct {
	P50  int64   `json:"p50"`
	P90  int64   `json:"p90"`
	P99  int64   `json:"p99"`
	P999 int64   `json:"p99_9"`
	Max  int64   `json:"max"`
	Mean float64 `json:"mean"`
}

func latencyOf(h *hdrhistogram.Histogram) latency {
	return latency{
		P50: h.ValueAtQuantile(50), P90: h.ValueAtQuantile(90), P99: h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9), Max: h.Max(), Mean: h.Mean(),
	}
}

type procCost struct {
	Name          string  `json:"name"`
	Proxy         bool    `json:"proxy"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	CPUMicrosReq  float64 `json:"cpu_us_per_request"`
	CoresPer1kRPS float64 `json:"cores_per_1000_rps"`
	IdleRSS       int64   `json:"idle_rss_bytes"`
	PeakRSS       int64   `json:"peak_rss_bytes"` // highest VmRSS sampled during the cell
	HWM           int64   `json:"vm_hwm_bytes"`   // VmHWM after the cell (peak since start)
}

func runCell(ctx context.Context, o options, e *env, sc scenario, path string, pass int) (*cellResult, error) {
	var workers []loadgen.Worker
	var closer io.Closer
	switch sc.Kind {
	case "http":
		t := loadgen.HTTPTarget{Addr: e.upstream, Path: "/"}
		switch path {
		case pathMesh:
			t.Addr, t.Host = e.mesh.outboundAddr, meshAuthority
		case pathNginx:
			t.Addr = e.nginx.httpAddr
		}
		workers, closer = loadgen.HTTPWorkers(t, o.conns)
	case "grpc":
		t := loadgen.GRPCTarget{Addr: e.upstream, Payload: bodySize}
		switch path {
		case pathMesh:
			t.Addr, t.Authority = e.mesh.outboundAddr, meshAuthority
		case pathNginx:
			t.Addr = e.nginx.grpcAddr
		}
		w, cc, err := loadgen.GRPCWorkers(t, o.conns)
		if err != nil {
			return nil, err
		}
		workers, closer = w, cc
	}
	defer closer.Close()

	if o.warmup > 0 {
		if _, err := loadgen.Run(ctx, loadgen.Config{Rate: sc.Rate, Duration: o.warmup}, workers); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	var procs []measured
	for _, m := range e.measured {
		if m.path == "" || m.path == path {
			procs = append(procs, m)
		}
	}
	cpu0 := make([]time.Duration, len(procs))
	for i, m := range procs {
		c, err := m.group.CPU()
		if err != nil {
			return nil, fmt.Errorf("%s cpu: %w", m.name, err)
		}
		cpu0[i] = c
	}
	// Everything this run started plus this process: the rest of the
	// machine's CPU over the cell is someone else's, and spoils the figures.
	ours := func() time.Duration {
		var sum time.Duration
		for _, m := range e.measured {
			if c, err := m.group.CPU(); err == nil {
				sum += c
			}
		}
		if st, err := procstat.ReadStat(os.Getpid()); err == nil {
			sum += st.CPU
		}
		return sum
	}
	sys0, sysErr := procstat.ReadSystemCPU()
	ours0 := ours()
	peaks := make([]int64, len(procs))
	samplerCtx, stopSampler := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for i, m := range procs {
				if mem, err := m.group.Memory(); err == nil && mem.RSS > peaks[i] {
					peaks[i] = mem.RSS
				}
			}
			select {
			case <-samplerCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	res, err := loadgen.Run(ctx, loadgen.Config{Rate: sc.Rate, Duration: o.duration}, workers)
	wall := time.Since(start)
	stopSampler()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	other := -1.0
	if sys1, err := procstat.ReadSystemCPU(); err == nil && sysErr == nil {
		other = max(0, (sys1.Busy-sys0.Busy-(ours()-ours0)).Seconds()/wall.Seconds())
	}
	c := &cellResult{
		Scenario: sc.Name, Path: path, Pass: pass, Rate: sc.Rate, Wall: wall,
		OtherCores: other,
		Scheduled:  res.Scheduled, Completed: res.Completed, Errors: res.Errors, Unsent: res.Unsent, FirstError: res.FirstError,
		Corrected: latencyOf(res.Corrected), Uncorrected: latencyOf(res.Uncorrected),
		corr: res.Corrected, unc: res.Uncorrected,
	}
	for i, m := range procs {
		cpu1, err := m.group.CPU()
		if err != nil {
			return nil, fmt.Errorf("%s cpu: %w", m.name, err)
		}
		mem, err := m.group.Memory()
		if err != nil {
			return nil, fmt.Errorf("%s memory: %w", m.name, err)
		}
		pc := procCost{Name: m.name, Proxy: m.proxy, CPUSeconds: (cpu1 - cpu0[i]).Seconds(),
			IdleRSS: e.idleRSS[m.name], PeakRSS: max(peaks[i], mem.RSS), HWM: mem.HWM}
		pc.fill(res.Completed + res.Errors)
		c.Procs = append(c.Procs, pc)
	}
	return c, nil
}

// fill derives the per-request and per-rate figures from CPUSeconds:
// 1,000 requests a second at X µs each keep X/1000 of a core busy.
func (pc *procCost) fill(requests int64) {
	if requests > 0 {
		pc.CPUMicrosReq = pc.CPUSeconds * 1e6 / float64(requests)
		pc.CoresPer1kRPS = pc.CPUMicrosReq / 1000
	}
}
