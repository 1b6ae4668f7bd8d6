package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/trellis-mesh/trellis/bench/procstat"
	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
	"github.com/trellis-mesh/trellis/internal/identity"
	"k8s.io/client-go/kubernetes"
)

// phase is one churn period's figures.
type phase struct {
	name       string
	perStream  []time.Duration
	perChange  []time.Duration
	writes     []time.Duration
	incomplete int
	coalesced  int // (write, stream) pairs that arrived folded into a later write's diff
	failed     int64
	cpu        time.Duration
	wall       time.Duration
	rssEnd     int64
}

type result struct {
	populate    time.Duration
	sync        time.Duration // controller start to serving
	objects     int
	rssSynced   int64 // after the informers' first lists, before any stream
	heapSynced  float64
	rssConns    int64 // with every proxy connected, one policy watch each
	heapConns   float64
	rssStreams  int64 // with every stream open
	heapStreams float64
	streams     int
	connect     time.Duration
	phases      []phase
	rssPeak     int64
	stalled     drained
	liveLast    int64 // MB live heap after the last GC, from gctrace
	liveMax     int64
	// runtime is the controller's Go runtime memory with every stream
	// open (go_* metrics): what RSS holds besides the live heap.
	runtime map[string]float64
	storm   storm
	heapTop string // go tool pprof -top of the controller's heap, with -profile
}

func run(ctx context.Context, log *slog.Logger, cfg config) (*result, error) {
	if cfg.K8sBin == "" {
		return nil, errors.New("no k8s-all binary: set TRELLIS_K8S_BIN or -k8s-bin")
	}
	dir, err := os.MkdirTemp("", "trellis-ctrlscale-")
	if err != nil {
		return nil, err
	}
	if cfg.Keep {
		log.Info("keeping", "dir", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	bin, env, err := controllerBinary(ctx, cfg, dir)
	if err != nil {
		return nil, err
	}
	kubeconfig, stopAPI, err := apiservertest.Start(cfg.K8sBin)
	if err != nil {
		return nil, fmt.Errorf("start kube-apiserver: %w", err)
	}
	defer stopAPI()
	client, err := newClient(kubeconfig)
	if err != nil {
		return nil, err
	}
	res := &result{objects: cfg.Services*(cfg.Endpoints+2) + 2}
	t0 := time.Now()
	if err := populate(ctx, client, cfg.Services, cfg.Endpoints, cfg.Workers); err != nil {
		return nil, err
	}
	res.populate = time.Since(t0)
	log.Info("populated", "services", cfg.Services, "pods", cfg.Services*cfg.Endpoints, "took", res.populate.Round(time.Millisecond))

	t0 = time.Now()
	ctl, err := startController(ctx, log, bin, dir, kubeconfig, env)
	if err != nil {
		return nil, err
	}
	defer ctl.stop()
	res.sync = time.Since(t0)
	time.Sleep(2 * time.Second) // let the first lists' garbage be collected
	if res.rssSynced, res.heapSynced, err = ctl.memory(ctx); err != nil {
		return nil, err
	}
	if err := measure(ctx, log, cfg, client, ctl, res); err != nil {
		return nil, err
	}
	if cfg.Certify {
		log.Info("certify storm", "proxies", cfg.Proxies)
		if res.storm, err = certifyStorm(ctx, client, ctl, cfg.Proxies, cfg.Services, cfg.Workers); err != nil {
			return nil, err
		}
		if m, err := procstat.ReadMemory(ctl.pid()); err == nil {
			res.rssPeak = m.HWM
		}
	}
	return res, nil
}

// controllerBinary is -bin, or a fresh build (with pprof overlaid for
// -profile), and the controller's extra environment.
func controllerBinary(ctx context.Context, cfg config, dir string) (bin string, env []string, err error) {
	env = cfg.ControllerEnv
	if cfg.Profile == "" {
		bin, err = buildController(ctx, cfg.Bin, dir)
		return bin, env, err
	}
	if err := os.MkdirAll(cfg.Profile, 0o755); err != nil {
		return "", nil, err
	}
	env = append(env, "TRELLIS_BENCH_PPROF="+filepath.Join(cfg.Profile, "pprof.addr"))
	bin, err = buildProfiled(ctx, dir)
	return bin, env, err
}

// measure connects the proxies, then churns twice: without and with a
// client that never reads.
func measure(ctx context.Context, log *slog.Logger, cfg config, client kubernetes.Interface, ctl *controller, res *result) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := newTracker()
	want := make([]int, cfg.Services)
	errs := make(chan error, 16)
	t0 := time.Now()
	if err := connect(ctx, log, cfg, ctl, t, want, errs, res); err != nil {
		return err
	}
	res.connect = time.Since(t0)

	ch := newChurner(client, t, cfg.Services, cfg.Endpoints, cfg.HotEvery, want)
	p, err := churnPhase(ctx, log, cfg, ctl, ch, t, errs, "steady")
	if err != nil {
		return err
	}
	res.phases = append(res.phases, p)

	// One proxy that opens a stream on every Service and never reads.
	stalledID := identity.ID{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: "stalled"}
	sp, err := dialProxy(ctl, stalledID, true)
	if err != nil {
		return err
	}
	defer sp.conn.Close()
	held, err := sp.stall(ctx, stalledID, cfg.Services)
	if err != nil {
		return err
	}
	hot0, msgs0 := ch.hotWrites.Load(), t.hotMsgs.Load()
	if p, err = churnPhase(ctx, log, cfg, ctl, ch, t, errs, "with stalled client"); err != nil {
		return err
	}
	res.phases = append(res.phases, p)
	// While every stream, the stalled one included, is still open.
	if res.runtime, err = ctl.metrics(ctx, runtimeMetrics...); err != nil {
		return err
	}
	if cfg.Profile != "" {
		if res.heapTop, err = heapProfile(ctx, filepath.Join(cfg.Profile, "pprof.addr"), filepath.Join(cfg.Profile, "heap.pprof")); err != nil {
			return err
		}
	}
	res.stalled = drain(held, 3*time.Second)
	res.stalled.hotWrites = ch.hotWrites.Load() - hot0
	if want[0] > 0 {
		res.stalled.hotReader = (t.hotMsgs.Load() - msgs0) / int64(want[0])
	}
	if m, err := procstat.ReadMemory(ctl.pid()); err == nil {
		res.rssPeak = m.HWM
	}
	res.liveLast, res.liveMax = ctl.liveHeap.Load(), ctl.maxLive.Load()
	return nil
}

func churnPhase(ctx context.Context, log *slog.Logger, cfg config, ctl *controller, ch *churner, t *tracker, errs <-chan error, name string) (phase, error) {
	st0, err := procstat.ReadStat(ctl.pid())
	if err != nil {
		return phase{}, err
	}
	n0, f0 := ch.n.Load(), ch.failed.Load()
	t0 := time.Now()
	ch.run(ctx, log, cfg.Rate, cfg.Duration)
	wall := time.Since(t0)
	st1, err := procstat.ReadStat(ctl.pid())
	if err != nil {
		return phase{}, err
	}
	// The settle wait is not counted in CPU: it is the tail, not the rate.
	_ = waitFor(ctx, cfg.Settle, errs, func() bool { return t.pendingCount() == 0 })
	p := phase{name: name, cpu: st1.CPU - st0.CPU, wall: wall, failed: ch.failed.Load() - f0}
	p.perStream, p.perChange, p.incomplete, p.coalesced = t.take()
	ch.wmu.Lock()
	p.writes, ch.writes = ch.writes, nil
	ch.wmu.Unlock()
	if m, err := procstat.ReadMemory(ctl.pid()); err == nil {
		p.rssEnd = m.RSS
	}
	log.Info("phase done", "phase", name, "writes", ch.n.Load()-n0, "updates", len(p.perStream), "incomplete", p.incomplete)
	return p, nil
}

// waitFor polls cond until it holds, a stream fails, or limit passes.
func waitFor(ctx context.Context, limit time.Duration, errs <-chan error, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		select {
		case err := <-errs:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", limit)
		}
	}
	return nil
}

// runtimeMetrics split the controller's memory beyond the heap.
var runtimeMetrics = []string{"go_goroutines", "go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes",
	"go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_sys_bytes"}

// memory is the controller's RSS (from /proc) and Go heap in use (from
// its /metrics).
func (c *controller) memory(ctx context.Context) (rss int64, heap float64, err error) {
	m, err := procstat.ReadMemory(c.pid())
	if err != nil {
		return 0, 0, err
	}
	mt, err := c.metrics(ctx, "go_memstats_heap_inuse_bytes")
	if err != nil {
		return 0, 0, err
	}
	return m.RSS, mt["go_memstats_heap_inuse_bytes"], nil
}

// connect opens the proxies' connections with their policy watches, then
// their Destination.Get streams, measuring the controller's memory after
// each step: the first is the cost of a connection, the second of a watch.
func connect(ctx context.Context, log *slog.Logger, cfg config, ctl *controller, t *tracker, want []int, errs chan error, res *result) error {
	proxies := make([]*proxy, cfg.Proxies)
	for p := range proxies {
		id := proxyID(p, cfg.Services)
		px, err := dialProxy(ctl, id, false)
		if err != nil {
			return err
		}
		context.AfterFunc(ctx, func() { px.conn.Close() })
		if err := px.watchPolicy(ctx, t, id); err != nil {
			return err
		}
		proxies[p] = px
	}
	if err := waitFor(ctx, 5*time.Minute, errs, func() bool { return t.policyReady.Load() == int64(cfg.Proxies) }); err != nil {
		return fmt.Errorf("policy answers (%d of %d): %w", t.policyReady.Load(), cfg.Proxies, err)
	}
	time.Sleep(2 * time.Second)
	var err error
	if res.rssConns, res.heapConns, err = ctl.memory(ctx); err != nil {
		return err
	}
	log.Info("connections open", "proxies", cfg.Proxies)
	for p, px := range proxies {
		for a := range cfg.Authorities {
			svc := (p*cfg.Authorities + a) % cfg.Services
			if err := px.watch(ctx, t, proxyID(p, cfg.Services), svc, errs); err != nil {
				return err
			}
			want[svc]++
		}
	}
	res.streams = cfg.Proxies * cfg.Authorities
	if err := waitFor(ctx, 5*time.Minute, errs, func() bool { return t.ready.Load() == int64(res.streams) }); err != nil {
		return fmt.Errorf("first answers (%d of %d): %w", t.ready.Load(), res.streams, err)
	}
	log.Info("streams open", "streams", res.streams)
	time.Sleep(2 * time.Second)
	res.rssStreams, res.heapStreams, err = ctl.memory(ctx)
	return err
}
