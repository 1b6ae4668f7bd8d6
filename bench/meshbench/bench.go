package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
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
	Name  string  `json:"name"`
	Kind  string  `json:"kind"` // one of allKinds
	Rate  float64 `json:"rate"`
	Conns int     `json:"conns"`
	// Bytes is what one request carries through a proxy, both ways
	// (big and opaque), for MB/s per core.
	Bytes int64 `json:"bytes_per_request,omitempty"`
	// Path is the HTTP request path; "/" when empty (the routes scenario
	// asks for the path its matching route takes).
	Path string `json:"path,omitempty"`
}

// scenarios lists the run's scenarios from the options.
func scenarios(o options) []scenario {
	var out []scenario
	for _, k := range o.kinds {
		switch k {
		case kindHTTP:
			for _, r := range o.rates {
				out = append(out, scenario{Name: fmt.Sprintf("http-%g", r), Kind: k, Rate: r, Conns: o.conns})
			}
		case kindGRPC:
			if o.grpcRate > 0 {
				out = append(out, scenario{Name: fmt.Sprintf("grpc-%g", o.grpcRate), Kind: k, Rate: o.grpcRate, Conns: o.conns})
			}
		case kindBig:
			out = append(out, scenario{Name: "big-1MiB", Kind: k, Rate: o.bigRate, Conns: o.bigConns, Bytes: 2 * bigSize})
		case kindOpaque:
			out = append(out, scenario{Name: "opaque-1MiB", Kind: k, Rate: o.bigRate, Conns: o.bigConns, Bytes: 2*bigSize + 4})
		case kindChurnHTTP, kindChurnTCP:
			out = append(out, scenario{Name: fmt.Sprintf("%s-%g", k, o.churnRate), Kind: k, Rate: o.churnRate, Conns: o.churnConns})
		case kindIdle:
			out = append(out, scenario{Name: fmt.Sprintf("idle-%d", o.idleConns), Kind: k, Conns: o.idleConns})
		}
	}
	return out
}

// timing is the scenario's measured time and warm-up.
func (s scenario) timing(o options) (measure, warmup time.Duration) {
	switch s.Kind {
	case kindHTTP, kindGRPC:
		return o.duration, o.warmup
	}
	return o.extraDuration, o.extraWarmup
}

func (s scenario) title(o options) string {
	var what string
	switch s.Kind {
	case kindHTTP:
		what = fmt.Sprintf("HTTP/1.1 GET, %d-byte body, %d connections", bodySize, s.Conns)
	case kindGRPC:
		what = fmt.Sprintf("gRPC unary echo, %d-byte message, one ClientConn, %d calls in flight at most", bodySize, s.Conns)
	case kindBig:
		what = fmt.Sprintf("HTTP/1.1 POST of 1 MiB answered with 1 MiB, %d connections", s.Conns)
	case kindOpaque:
		what = fmt.Sprintf("opaque TCP (mesh: CONNECT to an opaque port; nginx: stream), 1 MiB up then 1 MiB down per exchange, %d connections", s.Conns)
	case kindChurnHTTP:
		what = fmt.Sprintf("HTTP/1.1 GET with Connection: close: a new app TCP connection per request (mesh hop and nginx upstream pools reused), %d workers", s.Conns)
	case kindChurnTCP:
		what = fmt.Sprintf("opaque TCP, 64 bytes each way, a new app connection per exchange and so a new TLS 1.3 connection (full handshake, client certificate) on the proxy-to-proxy hop, %d workers", s.Conns)
	case kindIdle:
		return fmt.Sprintf("%d idle HTTP/1.1 app connections held open through the front proxy (one request each, then idle)", s.Conns)
	}
	d, w := s.timing(o)
	return fmt.Sprintf("%s at %g rps; %v measured after %v warm-up; %d pass(es)", what, s.Rate, d, w, o.passes)
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
	upstream upstreamAddrs
	mesh     *meshSetup
	nginx    *nginxPair
	measured []measured
	idleRSS  map[string]int64
	idleMem  []idleMemory
	// nginxIdle is the nginx instance of the idle scenario, measured there only.
	nginxIdle *measured
	bigBody   []byte
}

// skipError says a cell cannot run on this machine (and why); the run
// goes on without it and the report says so.
type skipError struct{ why string }

func (e skipError) Error() string { return e.why }

func run(ctx context.Context, o options, log *slog.Logger, out io.Writer) error {
	rep, err := runBench(ctx, o, log)
	if err != nil {
		return err
	}
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

// runBench starts everything, runs every cell and summarizes.
func runBench(ctx context.Context, o options, log *slog.Logger) (report, error) {
	dir, cleanup, err := workDir("meshbench-", o.keep, log)
	if err != nil {
		return report{}, err
	}
	defer cleanup()
	ps := &procs{dir: dir, log: log}
	defer ps.Stop()

	e, err := setup(ctx, o, ps, dir, log)
	if err != nil {
		return report{}, err
	}
	scs := scenarios(o)
	var cells []*cellResult
	var skipped []string
	for pass := 1; pass <= o.passes; pass++ {
		order := slices.Clone(o.paths)
		if pass%2 == 0 {
			slices.Reverse(order) // alternate order so drift favours no path
		}
		for _, sc := range scs {
			for _, path := range order {
				log.Info("cell", "pass", pass, "scenario", sc.Name, "path", path)
				c, err := runAnyCell(ctx, o, e, sc, path, pass)
				var skip skipError
				if errors.As(err, &skip) {
					if pass == 1 {
						skipped = append(skipped, fmt.Sprintf("%s over %s: %s", sc.Name, path, skip.why))
					}
					continue
				}
				if err != nil {
					return report{}, fmt.Errorf("%s over %s (pass %d): %w", sc.Name, path, pass, err)
				}
				if c.Errors > 0 || c.Unsent > 0 {
					log.Warn("requests failed", "scenario", sc.Name, "path", path, "errors", c.Errors, "unsent", c.Unsent, "first", c.FirstError)
				}
				cells = append(cells, c)
			}
		}
	}
	rep := summarize(o, scs, cells, e)
	rep.Skipped = skipped
	rep.IdleMemory = e.idleMem
	if e.nginx != nil && e.nginx.noStream != "" {
		rep.Notes = append(rep.Notes, "no opaque nginx baseline: "+e.nginx.noStream)
	}
	return rep, nil
}

// runAnyCell runs one cell of any kind.
func runAnyCell(ctx context.Context, o options, e *env, sc scenario, path string, pass int) (*cellResult, error) {
	if sc.Kind == kindIdle {
		if pass > 1 {
			return nil, skipError{"idle runs in the first pass only"}
		}
		return runIdle(ctx, e, sc, path)
	}
	return runCell(ctx, o, e, sc, path, pass)
}

func setup(ctx context.Context, o options, ps *procs, dir string, log *slog.Logger) (*env, error) {
	e := &env{idleRSS: map[string]int64{}, bigBody: make([]byte, bigSize)}
	up, addrs, err := startUpstream(ctx, ps)
	if err != nil {
		return nil, err
	}
	e.upstream = addrs
	e.measured = append(e.measured, measured{name: "upstream", group: procstat.Group{up.pid()}})
	log.Info("upstream listening", "http", addrs.http, "opaque", addrs.opaque)

	if slices.Contains(o.paths, pathNginx) {
		if err := setupNginx(ctx, o, ps, dir, e); err != nil {
			return nil, err
		}
		log.Info("nginx yardstick ready", "http", e.nginx.httpAddr, "grpc", e.nginx.grpcAddr, "tcp", e.nginx.tcpAddr, "idle", e.nginx.idleAddr)
	}
	if slices.Contains(o.paths, pathMesh) {
		mdir := dirUnder(dir, "mesh")
		m, err := startMesh(ctx, ps, meshOptions{binDir: o.binDir, gomaxprocs: o.proxyGOMAXPROCS, logLevel: o.proxyLogLevel}, mdir, addrs)
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
	if e.idleMem, err = readIdleMemory(ctx, e); err != nil {
		return nil, err
	}
	return e, nil
}

// nginxGroup is an nginx master and its workers.
func nginxGroup(p *proc) (procstat.Group, error) {
	kids, err := procstat.Children(p.pid())
	if err != nil {
		return nil, err
	}
	return append(procstat.Group{p.pid()}, kids...), nil
}

func setupNginx(ctx context.Context, o options, ps *procs, dir string, e *env) error {
	nopt := nginxOptions{bin: o.nginxBin, opaque: slices.Contains(o.kinds, kindOpaque) || slices.Contains(o.kinds, kindChurnTCP)}
	if slices.Contains(o.kinds, kindIdle) {
		nopt.idleConns = o.idleConns
	}
	n, err := startNginx(ctx, ps, nopt, dirUnder(dir, "nginx"), e.upstream)
	if err != nil {
		return err
	}
	e.nginx = n
	for _, p := range []*proc{n.front, n.back} {
		g, err := nginxGroup(p)
		if err != nil {
			return err
		}
		e.measured = append(e.measured, measured{name: p.name, path: pathNginx, group: g})
	}
	if n.idle != nil {
		g, err := nginxGroup(n.idle)
		if err != nil {
			return err
		}
		e.nginxIdle = &measured{name: n.idle.name, path: pathNginx, group: g}
	}
	return nil
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
	Held        int64      `json:"held_connections,omitempty"` // idle scenario

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
	// HeldDelta is the idle scenario's RSS with the connections held minus
	// RSS just before they were opened.
	HeldDelta int64 `json:"held_rss_delta_bytes,omitempty"`
	// HeldGoroutines is, for a trellis-proxy in the idle scenario, its
	// goroutines with the connections held minus just before (/metrics).
	HeldGoroutines float64 `json:"held_goroutines_delta,omitempty"`
}

// workersFor builds the load generator's workers for a cell.
func workersFor(e *env, sc scenario, path string) ([]loadgen.Worker, io.Closer, error) {
	switch sc.Kind {
	case kindGRPC:
		t := loadgen.GRPCTarget{Addr: e.upstream.http, Payload: bodySize}
		switch path {
		case pathMesh:
			t.Addr, t.Authority = e.mesh.outboundAddr, meshAuthority
		case pathNginx:
			t.Addr = e.nginx.grpcAddr
		}
		w, cc, err := loadgen.GRPCWorkers(t, sc.Conns)
		return w, cc, err
	case kindOpaque, kindChurnTCP:
		t := loadgen.StreamTarget{Addr: e.upstream.opaque, Size: bigSize, NewConnPerRequest: sc.Kind == kindChurnTCP}
		if t.NewConnPerRequest {
			t.Size = bodySize
		}
		switch path {
		case pathMesh:
			t.Addr, t.Connect = e.mesh.outboundAddr, meshOpaqueAuthority
		case pathNginx:
			if e.nginx.tcpAddr == "" {
				return nil, nil, skipError{e.nginx.noStream}
			}
			t.Addr = e.nginx.tcpAddr
		}
		w, c := loadgen.StreamWorkers(t, sc.Conns)
		return w, c, nil
	}
	t := loadgen.HTTPTarget{Addr: e.upstream.http, Path: cmp.Or(sc.Path, "/"), Close: sc.Kind == kindChurnHTTP}
	if sc.Kind == kindBig {
		t.Path, t.Body = bigPath, e.bigBody
	}
	switch path {
	case pathMesh:
		t.Addr, t.Host = e.mesh.outboundAddr, meshAuthority
	case pathNginx:
		t.Addr = e.nginx.httpAddr
	}
	w, c := loadgen.HTTPWorkers(t, sc.Conns)
	return w, c, nil
}

// cellProcs are the processes a cell over path measures.
func (e *env) cellProcs(path string) []measured {
	var procs []measured
	for _, m := range e.measured {
		if m.path == "" || m.path == path {
			procs = append(procs, m)
		}
	}
	return procs
}

// ourCPU is the CPU of everything this run started plus this process: the
// rest of the machine's CPU over a cell is someone else's, and spoils the
// figures.
func (e *env) ourCPU() time.Duration {
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

// peakSampler records the highest RSS of each process every 100 ms until
// stopped.
func peakSampler(ctx context.Context, procs []measured) (stop func() []int64) {
	peaks := make([]int64, len(procs))
	ctx, cancel := context.WithCancel(ctx)
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
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() []int64 {
		cancel()
		wg.Wait()
		return peaks
	}
}

func runCell(ctx context.Context, o options, e *env, sc scenario, path string, pass int) (*cellResult, error) {
	workers, closer, err := workersFor(e, sc, path)
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	duration, warmup := sc.timing(o)
	if warmup > 0 {
		if _, err := loadgen.Run(ctx, loadgen.Config{Rate: sc.Rate, Duration: warmup}, workers); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	procs := e.cellProcs(path)
	cpu0 := make([]time.Duration, len(procs))
	for i, m := range procs {
		if cpu0[i], err = m.group.CPU(); err != nil {
			return nil, fmt.Errorf("%s cpu: %w", m.name, err)
		}
	}
	sys0, sysErr := procstat.ReadSystemCPU()
	ours0 := e.ourCPU()
	stopSampler := peakSampler(ctx, procs)
	start := time.Now()
	res, err := loadgen.Run(ctx, loadgen.Config{Rate: sc.Rate, Duration: duration}, workers)
	wall := time.Since(start)
	peaks := stopSampler()
	if err != nil {
		return nil, err
	}
	other := -1.0
	if sys1, err := procstat.ReadSystemCPU(); err == nil && sysErr == nil {
		other = max(0, (sys1.Busy-sys0.Busy-(e.ourCPU()-ours0)).Seconds()/wall.Seconds())
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
