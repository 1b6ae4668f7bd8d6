package loadgen

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// Worker sends one request and waits for its whole response. Each worker is
// used by exactly one goroutine, so it may own a connection: the number of
// workers is the number of requests in flight at most.
type Worker func(ctx context.Context) error

// Config describes one run.
type Config struct {
	Rate     float64       // requests per second
	Duration time.Duration // length of the schedule
	// DrainTimeout bounds the wait for queued and in-flight requests after
	// the schedule ends; requests not sent by then count as Unsent.
	// Default 10s.
	DrainTimeout time.Duration
}

// Histogram range: 1 µs to 100 s at 3 significant digits.
const (
	histMinMicros = 1
	histMaxMicros = 100_000_000
	histSigFigs   = 3
)

// NewHistogram returns an empty latency histogram in microseconds.
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMinMicros, histMaxMicros, histSigFigs)
}

// Result holds what one run measured. Latencies are in microseconds.
type Result struct {
	Scheduled   int64 // requests on the schedule
	Completed   int64 // requests that got a full, good response
	Errors      int64 // requests that failed
	Unsent      int64 // requests never sent (drain timeout or cancellation)
	Corrected   *hdrhistogram.Histogram
	Uncorrected *hdrhistogram.Histogram
	Elapsed     time.Duration // from the first intended time to the last completion
	FirstError  string        // the first error seen, for the report
}

// Run sends requests on an open-loop schedule at cfg.Rate for cfg.Duration,
// each taken by the next free worker. It returns when every scheduled
// request has completed, failed, or been abandoned after the drain timeout.
func Run(ctx context.Context, cfg Config, workers []Worker) (*Result, error) {
	if cfg.Rate <= 0 || cfg.Duration <= 0 {
		return nil, fmt.Errorf("loadgen: rate %v and duration %v must be positive", cfg.Rate, cfg.Duration)
	}
	if len(workers) == 0 {
		return nil, errors.New("loadgen: no workers")
	}
	drain := cfg.DrainTimeout
	if drain <= 0 {
		drain = 10 * time.Second
	}
	sched := Schedule{Start: time.Now().Add(time.Millisecond), Rate: cfg.Rate}
	n := sched.Count(cfg.Duration)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The deadline for everything: schedule plus drain. Requests still queued
	// then are abandoned rather than waited on forever.
	stopAt := sched.At(n).Add(drain)
	stopTimer := time.AfterFunc(time.Until(stopAt), cancel)
	defer stopTimer.Stop()

	// The queue is large enough to hold a long stall's worth of intents, so
	// the scheduler rarely blocks; when it does, intended times stay exact
	// because they come from the schedule, not from when they were queued.
	queue := make(chan time.Time, 65536)
	go dispatch(runCtx, sched, n, queue)

	type partial struct {
		corr, unc        *hdrhistogram.Histogram
		ok, errs, unsent int64
		last             time.Time
		firstErr         error
	}
	parts := make([]partial, len(workers))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[w]
			p.corr, p.unc = NewHistogram(), NewHistogram()
			for intended := range queue {
				if runCtx.Err() != nil {
					p.unsent++
					continue
				}
				sent := time.Now()
				err := workers[w](runCtx)
				end := time.Now()
				p.last = end
				if err != nil {
					if runCtx.Err() != nil {
						p.unsent++ // abandoned, not the target's fault
						continue
					}
					p.errs++
					if p.firstErr == nil {
						p.firstErr = err
					}
					continue
				}
				p.ok++
				_ = p.corr.RecordValue(micros(end.Sub(intended)))
				_ = p.unc.RecordValue(micros(end.Sub(sent)))
			}
		}()
	}
	wg.Wait()

	res := &Result{Scheduled: n, Corrected: NewHistogram(), Uncorrected: NewHistogram()}
	var last time.Time
	for _, p := range parts {
		res.Completed += p.ok
		res.Errors += p.errs
		res.Unsent += p.unsent
		res.Corrected.Merge(p.corr)
		res.Uncorrected.Merge(p.unc)
		if p.last.After(last) {
			last = p.last
		}
		if res.FirstError == "" && p.firstErr != nil {
			res.FirstError = p.firstErr.Error()
		}
	}
	// Intents the dispatcher never queued because of cancellation.
	res.Unsent += n - res.Completed - res.Errors - res.Unsent
	if !last.IsZero() {
		res.Elapsed = last.Sub(sched.Start)
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("loadgen: %w", err)
	}
	return res, nil
}

// dispatch queues the intended time of each request when it is due. It runs
// on its own OS thread and sleeps with nanosleep and a 1 ns timer slack:
// the Go runtime rounds sub-millisecond sleeps of an idle process up to
// about a millisecond, which would be charged to every request as latency.
func dispatch(ctx context.Context, sched Schedule, n int64, queue chan<- time.Time) {
	defer close(queue)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) // best effort: only affects this thread
	for i := int64(0); i < n; i++ {
		t := sched.At(i)
		for {
			d := time.Until(t)
			if d <= 0 {
				break
			}
			if ctx.Err() != nil {
				return
			}
			// Short slices so cancellation is seen even at low rates;
			// EINTR only wakes us early and the loop re-checks.
			ts := unix.NsecToTimespec(int64(min(d, 50*time.Millisecond)))
			_ = unix.Nanosleep(&ts, nil)
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case queue <- t:
		case <-ctx.Done():
			return
		}
	}
}

func micros(d time.Duration) int64 {
	us := d.Microseconds()
	if us < histMinMicros {
		return histMinMicros
	}
	if us > histMaxMicros {
		return histMaxMicros
	}
	return us
}
