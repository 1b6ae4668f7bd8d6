// Package loadgen is an open-loop HTTP load generator: requests go out at
// fixed intended times whatever the responses do, so slow servers show up
// as latency and drops instead of silently lowering the offered load.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/upstream"
)

// Config configures Run.
type Config struct {
	// Target is the authority requests are sent to, e.g. web.demo:80.
	Target string
	// Proxy is the outbound address of the local trellis-proxy; empty
	// sends straight to Target.
	Proxy string
	// RPS is the offered load in requests per second (> 0).
	RPS float64
	// Path of each request. When it ends with "/" and is not "/" itself,
	// an ID cycling through 1..IDs is appended (/books/ -> /books/1,
	// /books/2, ...).
	Path string
	// IDs is the number of distinct IDs appended to Path (0: 10).
	IDs int
	// Duration of the run; 0 runs until ctx ends.
	Duration time.Duration
	// MaxInFlight bounds concurrent requests; a request due while the bound
	// is reached is dropped (0: 64).
	MaxInFlight int
	// Timeout bounds each request (0: 10s).
	Timeout time.Duration
	// Drain is how long Run waits for in-flight requests once it stops
	// sending (0: 2s); requests still running then are cancelled.
	Drain time.Duration
	// ReportEvery is the period of the summary log line (0: 10s; < 0: never).
	ReportEvery time.Duration
	Log         *slog.Logger
}

// Result counts what happened. Sent = Succeeded + Failed + Cancelled;
// Dropped requests were due but never sent because MaxInFlight requests
// were already running.
type Result struct {
	Sent      uint64 `json:"sent"`
	Succeeded uint64 `json:"ok"`     // 2xx and 3xx responses
	Failed    uint64 `json:"failed"` // other statuses, transport errors, timeouts
	Cancelled uint64 `json:"cancelled"`
	Dropped   uint64 `json:"dropped"`
	// Statuses counts responses by HTTP status code; "error" counts
	// requests that got no response.
	Statuses map[string]uint64 `json:"statuses"`
	// MeanLatencyMS and MaxLatencyMS are measured from each request's
	// intended send time, so queueing in the generator counts too.
	MeanLatencyMS float64 `json:"mean_latency_ms"`
	MaxLatencyMS  float64 `json:"max_latency_ms"`
	// P50LatencyMS and P99LatencyMS are quantiles of the same latencies,
	// within 2 %.
	P50LatencyMS float64 `json:"p50_latency_ms"`
	P99LatencyMS float64 `json:"p99_latency_ms"`
	ElapsedS     float64 `json:"elapsed_s"`
}

func (c *Config) validate() error {
	var errs []error
	if c.Target == "" {
		errs = append(errs, errors.New("target is required"))
	}
	if !(c.RPS > 0 && c.RPS <= 1e6) {
		errs = append(errs, fmt.Errorf("rps %v: must be > 0 and <= 1000000", c.RPS))
	}
	if !strings.HasPrefix(c.Path, "/") {
		errs = append(errs, fmt.Errorf("path %q: must start with /", c.Path))
	}
	if c.Duration < 0 || c.IDs < 0 || c.MaxInFlight < 0 || c.Timeout < 0 || c.Drain < 0 {
		errs = append(errs, errors.New("duration, ids, max in flight, timeout and drain must not be negative"))
	}
	return errors.Join(errs...)
}

type counters struct {
	sent, ok, failed, cancelled, dropped atomic.Uint64
	latencySumNS, latencyMaxNS           atomic.Int64
	latencyN                             atomic.Int64
	hist                                 latencyHist

	mu       sync.Mutex
	statuses map[string]uint64
}

func (c *counters) observe(status string, latency time.Duration) {
	c.latencySumNS.Add(int64(latency))
	c.latencyN.Add(1)
	c.hist.observe(latency)
	for {
		cur := c.latencyMaxNS.Load()
		if int64(latency) <= cur || c.latencyMaxNS.CompareAndSwap(cur, int64(latency)) {
			break
		}
	}
	c.mu.Lock()
	c.statuses[status]++
	c.mu.Unlock()
}

func (c *counters) result(elapsed time.Duration) Result {
	r := Result{
		Sent:      c.sent.Load(),
		Succeeded: c.ok.Load(),
		Failed:    c.failed.Load(),
		Cancelled: c.cancelled.Load(),
		Dropped:   c.dropped.Load(),
		ElapsedS:  elapsed.Seconds(),
		Statuses:  map[string]uint64{},
	}
	if n := c.latencyN.Load(); n > 0 {
		r.MeanLatencyMS = float64(c.latencySumNS.Load()) / float64(n) / 1e6
	}
	maxLatency := time.Duration(c.latencyMaxNS.Load())
	r.MaxLatencyMS = float64(maxLatency) / 1e6
	r.P50LatencyMS = float64(c.hist.quantile(0.5, maxLatency)) / 1e6
	r.P99LatencyMS = float64(c.hist.quantile(0.99, maxLatency)) / 1e6
	c.mu.Lock()
	for k, v := range c.statuses {
		r.Statuses[k] = v
	}
	c.mu.Unlock()
	return r
}

// Run sends load until cfg.Duration has passed or ctx ends, waits for
// in-flight requests (at most cfg.Drain) and returns the counts. It returns
// an error only for a bad Config.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.validate(); err != nil {
		return Result{}, fmt.Errorf("loadgen: %w", err)
	}
	if cfg.IDs == 0 {
		cfg.IDs = 10
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 64
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Drain == 0 {
		cfg.Drain = 2 * time.Second
	}
	if cfg.ReportEvery == 0 {
		cfg.ReportEvery = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	client := upstream.NewHTTPClient(cfg.Proxy, cfg.Timeout, cfg.MaxInFlight)
	defer client.Close()

	c := &counters{statuses: map[string]uint64{}}
	start := time.Now()

	// In-flight requests outlive ctx by up to cfg.Drain so that a stop
	// signal does not turn every running request into a failure.
	reqCtx, cancelReqs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelReqs()

	// The reporter stops with the sending loop.
	reportCtx, stopReport := context.WithCancel(ctx)
	defer stopReport()
	var wg sync.WaitGroup
	if cfg.ReportEvery > 0 {
		wg.Go(func() { report(reportCtx, cfg, c, start) })
	}

	sem := make(chan struct{}, cfg.MaxInFlight)
	var reqWG sync.WaitGroup
	interval := time.Duration(float64(time.Second) / cfg.RPS)
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
loop:
	for i := 0; ; i++ {
		intended := start.Add(time.Duration(i) * interval)
		// The schedule, not the clock, ends a timed run, so that it always
		// offers RPS x Duration requests even if the loop runs late.
		if cfg.Duration > 0 && intended.Sub(start) >= cfg.Duration {
			break
		}
		if d := time.Until(intended); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				break loop
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			break loop
		}
		select {
		case sem <- struct{}{}:
		default:
			c.dropped.Add(1)
			continue
		}
		path := cfg.Path
		if path != "/" && strings.HasSuffix(path, "/") {
			path += strconv.Itoa(i%cfg.IDs + 1)
		}
		c.sent.Add(1)
		reqWG.Go(func() {
			defer func() { <-sem }()
			do(reqCtx, client, cfg, c, path, intended)
		})
	}
	stopReport()
	// Let the last requests finish, within bounds.
	done := make(chan struct{})
	go func() { reqWG.Wait(); close(done) }()
	drain := time.NewTimer(cfg.Drain)
	select {
	case <-done:
	case <-drain.C:
		cancelReqs()
		<-done
	}
	drain.Stop()
	wg.Wait()
	return c.result(time.Since(start)), nil
}

func do(ctx context.Context, client *upstream.HTTPClient, cfg Config, c *counters, path string, intended time.Time) {
	req, err := upstream.NewRequest(ctx, http.MethodGet, cfg.Target, path)
	if err != nil {
		c.failed.Add(1)
		c.observe("error", time.Since(intended))
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			c.cancelled.Add(1)
			return
		}
		c.failed.Add(1)
		c.observe("error", time.Since(intended))
		cfg.Log.Debug("request failed", "path", path, "err", err)
		return
	}
	// Read the whole body: the request is done when the response is.
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 16<<20))
	resp.Body.Close()
	switch {
	case err != nil && ctx.Err() != nil:
		c.cancelled.Add(1)
		return
	case err == nil && resp.StatusCode < 400:
		c.ok.Add(1)
	default:
		c.failed.Add(1)
	}
	c.observe(strconv.Itoa(resp.StatusCode), time.Since(intended))
}

// report logs one summary line per period until ctx ends.
func report(ctx context.Context, cfg Config, c *counters, start time.Time) {
	t := time.NewTicker(cfg.ReportEvery)
	defer t.Stop()
	var last Result
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r := c.result(time.Since(start))
		secs := cfg.ReportEvery.Seconds()
		cfg.Log.Info("load",
			"target", cfg.Target,
			"sent", r.Sent, "ok", r.Succeeded, "failed", r.Failed, "dropped", r.Dropped,
			"rps", fmt.Sprintf("%.1f", float64(r.Sent-last.Sent)/secs),
			"success_rate", successRate(r.Succeeded-last.Succeeded, r.Failed-last.Failed),
		)
		last = r
	}
}

func successRate(ok, failed uint64) string {
	if ok+failed == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(ok)/float64(ok+failed))
}
