// Package scrape is the model.Source of local mode (`trellis demo`,
// `trellis run`): it reads every proxy's /metrics directly, keeps the
// scrapes of the last minutes, and computes the views from the difference
// between two of them (viz/stats: parsing, deltas, quantiles as PromQL's
// histogram_quantile computes them).
package scrape

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/meshconfig"
	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/stats"
)

// Target is one proxy to scrape.
type Target struct {
	// Resource is the workload (Kind "workloads", Namespace "").
	Resource model.Resource
	// Identity is the workload's SPIFFE ID.
	Identity string
	// MetricsURL is the proxy's admin /metrics.
	MetricsURL string
}

// Targets are the workloads of a local store file that name their proxy's
// admin address (the demo's do).
func Targets(f meshconfig.File) []Target {
	td := f.TrustDomain
	if td == "" {
		td = "cluster.local"
	}
	var out []Target
	for _, w := range f.Workloads {
		if w.AdminAddr == "" {
			continue
		}
		out = append(out, Target{
			Resource:   model.Resource{Kind: Kind, Name: w.Name},
			Identity:   fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", td, w.Namespace, w.ServiceAccount),
			MetricsURL: "http://" + w.AdminAddr + "/metrics",
		})
	}
	return out
}

// Kind of every local resource.
const Kind = "workloads"

// maxMetrics bounds one scrape: a proxy's exposition is tens of kilobytes.
const maxMetrics = 16 << 20

// keep bounds the history: scrapes older than this are dropped.
const keep = 15 * time.Minute

// Source is the model.Source over directly scraped proxies. It is safe
// for concurrent use; long-lived users (the dashboard) get windows from
// the scrapes they already made, a one-shot command waits Sample once.
type Source struct {
	Targets []Target
	HTTP    *http.Client
	// Sample is how long to wait for a second scrape when the history has
	// none older (default 2 s).
	Sample time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	mu      sync.Mutex
	history []scrapeSet
}

var _ model.Source = (*Source)(nil)

// scrapeSet is one scrape of every target (nil: unreachable).
type scrapeSet struct {
	at     time.Time
	snaps  []stats.Snapshot
	routes []stats.Routes
	errs   []error
}

func (s *Source) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Source) scrapeAll(ctx context.Context) scrapeSet {
	n := len(s.Targets)
	set := scrapeSet{at: s.now(), snaps: make([]stats.Snapshot, n), routes: make([]stats.Routes, n), errs: make([]error, n)}
	var wg sync.WaitGroup
	for i, t := range s.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sc stats.Scrape
			sc, set.errs[i] = s.one(ctx, t.MetricsURL)
			set.snaps[i], set.routes[i] = sc.Snapshot, sc.Routes
		}()
	}
	wg.Wait()
	return set
}

func (s *Source) one(ctx context.Context, url string) (stats.Scrape, error) {
	hc := s.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return stats.Scrape{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return stats.Scrape{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return stats.Scrape{}, fmt.Errorf("scrape %s: HTTP %d", url, resp.StatusCode)
	}
	sc, err := stats.ParseScrape(io.LimitReader(resp.Body, maxMetrics))
	if err != nil {
		return stats.Scrape{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	return sc, nil
}

// window is the change over (about) w: the current scrape minus the oldest
// kept scrape no older than w, waiting Sample for a second scrape when
// there is none. Targets unreachable in either scrape are nil.
type window struct {
	seconds float64
	delta   []stats.Snapshot
	routes  []stats.Routes
	cur     scrapeSet
}

func (s *Source) window(ctx context.Context, w time.Duration) (window, error) {
	if len(s.Targets) == 0 {
		return window{}, errors.New("no proxy to scrape: the store file names no admin address")
	}
	if w <= 0 {
		w = time.Minute
	}
	cur := s.scrapeAll(ctx)
	s.mu.Lock()
	var base *scrapeSet
	for i := range s.history {
		if h := s.history[i]; cur.at.Sub(h.at) <= w && cur.at.After(h.at) {
			base = &h
			break
		}
	}
	s.mu.Unlock()
	if base == nil {
		wait := s.Sample
		if wait <= 0 {
			wait = 2 * time.Second
		}
		select {
		case <-ctx.Done():
			return window{}, ctx.Err()
		case <-time.After(wait):
		}
		first := cur
		base, cur = &first, s.scrapeAll(ctx)
		s.remember(first)
	}
	s.remember(cur)
	if err := allFailed(cur); err != nil {
		return window{}, err
	}
	n := len(s.Targets)
	out := window{seconds: cur.at.Sub(base.at).Seconds(), delta: make([]stats.Snapshot, n), routes: make([]stats.Routes, n), cur: cur}
	for i := range s.Targets {
		if cur.snaps[i] != nil && base.snaps[i] != nil {
			out.delta[i] = cur.snaps[i].Sub(base.snaps[i])
			out.routes[i] = cur.routes[i].Sub(base.routes[i])
		}
	}
	return out, nil
}

func (s *Source) remember(set scrapeSet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.history = append(s.history, set)
	for len(s.history) > 0 && set.at.Sub(s.history[0].at) > keep {
		s.history = s.history[1:]
	}
}

func allFailed(set scrapeSet) error {
	for _, e := range set.errs {
		if e == nil {
			return nil
		}
	}
	return fmt.Errorf("no proxy answered: %w", errors.Join(set.errs...))
}
