package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/bench/procstat"
)

// routesOptions are the flags of `meshbench routes`.
type routesOptions struct {
	counts            []int // routes on the service, one config each
	retry             bool  // also "1 route" with and without a retry policy
	rate              float64
	conns, rounds     int
	duration, warmup  time.Duration
	gomaxprocs        int
	binDir, logLevel  string
	keep              bool
	maxAddedPercent   float64 // the target at the largest count
	routeHeaderMarker string  // response header the matching route sets
}

func parseRoutesFlags(args []string, stderr io.Writer) (routesOptions, error) {
	fs := flag.NewFlagSet("meshbench routes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := routesOptions{maxAddedPercent: 5, routeHeaderMarker: "x-bench-config"}
	var counts string
	fs.StringVar(&counts, "routes", "0,10,100", "HTTPRoutes on the service, one config each, comma-separated; the first is the baseline")
	fs.BoolVar(&o.retry, "retry", true, "also measure one route with a retry policy and budget against the same route without")
	fs.Float64Var(&o.rate, "rate", 1000, "HTTP/1.1 requests per second through the mesh")
	fs.IntVar(&o.conns, "conns", 16, "keep-alive connections")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds; each runs every config once, in an order rotated by one each round")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measured time per cell")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "load before each cell, after the new routes are seen applied (not measured)")
	fs.IntVar(&o.gomaxprocs, "proxy-gomaxprocs", 1, "GOMAXPROCS of each trellis-proxy")
	fs.StringVar(&o.binDir, "bin", "bin", "directory holding trellis-controller and trellis-proxy")
	fs.StringVar(&o.logLevel, "proxy-log-level", "warn", "--log-level of the proxies")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (store files, process logs)")
	if err := fs.Parse(args); err != nil {
		return routesOptions{}, err
	}
	if fs.NArg() > 0 {
		return routesOptions{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, f := range strings.Split(counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 1000 {
			return routesOptions{}, fmt.Errorf("-routes: %q: want counts in [0, 1000]", f)
		}
		if !slices.Contains(o.counts, n) {
			o.counts = append(o.counts, n)
		}
	}
	switch {
	case len(o.counts) == 0:
		return routesOptions{}, errors.New("-routes: no count")
	case !(o.rate > 0 && o.rate <= 1e6) || o.conns < 1 || o.gomaxprocs < 1 || o.rounds < 1:
		return routesOptions{}, errors.New("-rate must be in (0, 1000000], -conns, -rounds and -proxy-gomaxprocs at least 1")
	case o.duration <= 0 || o.warmup < 0:
		return routesOptions{}, errors.New("-duration must be positive and -warmup not negative")
	}
	return o, nil
}

// routeConfig is one store file the routes scenario measures: n HTTPRoutes
// on echo.bench:80, the request matching the middle one; with retry, that
// route carries a retry policy and budget.
type routeConfig struct {
	name  string
	n     int
	retry bool
	// marker is what the matching route's response header modifier sets,
	// so the bench can tell the client proxy applies this config; "" with
	// no routes.
	marker string
}

// routeConfigs lists the configs: the counts, then (with retry) "1 route"
// unless counted already and "1 route + retry".
func routeConfigs(o routesOptions) []routeConfig {
	var cs []routeConfig
	add := func(n int, retry bool) {
		c := routeConfig{name: fmt.Sprintf("%d routes", n), n: n, retry: retry}
		if n == 1 {
			c.name = "1 route"
		}
		if retry {
			c.name += " + retry"
		}
		if n > 0 {
			c.marker = "c" + strconv.Itoa(len(cs))
		}
		cs = append(cs, c)
	}
	for _, n := range o.counts {
		add(n, false)
	}
	if o.retry {
		if !slices.Contains(o.counts, 1) {
			add(1, false)
		}
		add(1, true)
	}
	return cs
}

// requestPath is the path of the benchmarked request: the middle route's
// prefix (a prefix route: see routesYAML).
func (c routeConfig) requestPath() string { return fmt.Sprintf("/r%d/books", c.n/2) }

// routesYAML is the store file's routes: section for c. Most routes match
// a path prefix and the method, every tenth a header and every tenth a
// regex (scanned for every request no prefix takes); each sets a request
// header and sends to the service itself. The middle route, the one the
// request takes, is always a prefix route and sets the config's marker as
// a response header.
func routesYAML(c routeConfig, marker string) string {
	if c.n == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("routes:\n")
	for i := 0; i < c.n; i++ {
		fmt.Fprintf(&b, `  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata:
      name: r%d
      namespace: %s
`, i, meshNamespace)
		match := i == c.n/2
		if match && c.retry {
			b.WriteString(`      annotations:
        retry.trellis.io/limit: "2"
        retry.trellis.io/http-statuses: "502-504"
        retry.trellis.io/budget-percent: "20"
        retry.trellis.io/budget-min-per-second: "10"
`)
		}
		fmt.Fprintf(&b, `    spec:
      parentRefs: [{kind: Service, name: %s, port: 80}]
      rules:
      - matches:
`, meshService)
		switch {
		case !match && i%10 == 8:
			fmt.Fprintf(&b, "        - headers: [{name: x-user, value: u%d}]\n", i)
		case !match && i%10 == 9:
			fmt.Fprintf(&b, "        - path: {type: RegularExpression, value: \"/re%d/[a-z]+\"}\n", i)
		default:
			fmt.Fprintf(&b, "        - path: {type: PathPrefix, value: /r%d}\n          method: GET\n", i)
		}
		fmt.Fprintf(&b, `        filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-route, value: r%d}]}
`, i)
		if match {
			fmt.Fprintf(&b, `        - type: ResponseHeaderModifier
          responseHeaderModifier: {set: [{name: %s, value: %s}]}
`, marker, c.marker)
		}
		fmt.Fprintf(&b, "        backendRefs: [{name: %s, port: 80}]\n", meshService)
	}
	return b.String()
}

// runRoutesReport runs the routes scenario and prints its report.
func runRoutesReport(ctx context.Context, o routesOptions, log *slog.Logger, out io.Writer) error {
	rep, err := runRoutes(ctx, o, log)
	if err != nil {
		return err
	}
	printRoutes(out, o, rep)
	return nil
}

// routesReport is every cell of the run, by config then round.
type routesReport struct {
	configs []routeConfig
	cells   [][]*cellResult
}

// runRoutes starts the upstream and one mesh, then per round rewrites the
// store file with each config in turn, waits until the client proxy
// applies it, and measures a cell.
func runRoutes(ctx context.Context, o routesOptions, log *slog.Logger) (routesReport, error) {
	dir, cleanup, err := workDir("meshbench-routes-", o.keep, log)
	if err != nil {
		return routesReport{}, err
	}
	defer cleanup()
	ps := &procs{dir: dir, log: log}
	defer ps.Stop()
	up, addrs, err := startUpstream(ctx, ps)
	if err != nil {
		return routesReport{}, err
	}
	m, err := startMesh(ctx, ps, meshOptions{binDir: o.binDir, gomaxprocs: o.gomaxprocs, logLevel: o.logLevel}, dirUnder(dir, "mesh"), addrs)
	if err != nil {
		return routesReport{}, err
	}
	e := &env{upstream: addrs, mesh: m, idleRSS: map[string]int64{}, measured: []measured{
		{name: "upstream", group: procstat.Group{up.pid()}},
		{name: m.client.name, path: pathMesh, group: procstat.Group{m.client.pid()}, proxy: true},
		{name: m.server.name, path: pathMesh, group: procstat.Group{m.server.pid()}, proxy: true},
	}}
	rep := routesReport{configs: routeConfigs(o)}
	rep.cells = make([][]*cellResult, len(rep.configs))
	co := options{duration: o.duration, warmup: o.warmup}
	for round := 0; round < o.rounds; round++ {
		for k := range rep.configs {
			i := (k + round) % len(rep.configs)
			c := rep.configs[i]
			if err := applyRoutes(ctx, m, c, o.routeHeaderMarker); err != nil {
				return routesReport{}, fmt.Errorf("%s: %w", c.name, err)
			}
			log.Info("cell", "round", round+1, "config", c.name)
			sc := scenario{Name: c.name, Kind: kindHTTP, Rate: o.rate, Conns: o.conns, Path: c.requestPath()}
			cell, err := runCell(ctx, co, e, sc, pathMesh, round+1)
			if err != nil {
				return routesReport{}, fmt.Errorf("%s (round %d): %w", c.name, round+1, err)
			}
			if cell.Errors > 0 || cell.Unsent > 0 {
				return routesReport{}, fmt.Errorf("%s (round %d): %d failed, %d unsent (first error: %s)", c.name, round+1, cell.Errors, cell.Unsent, cell.FirstError)
			}
			rep.cells[i] = append(rep.cells[i], cell)
		}
	}
	return rep, nil
}

// applyRoutes rewrites the store file with c's routes (a rename, so the
// controller never reads half a file) and waits until a request through
// the client proxy comes back with c's marker, or without one for no
// routes: the previous config always had another marker.
func applyRoutes(ctx context.Context, m *meshSetup, c routeConfig, marker string) error {
	tmp := m.storePath + ".new"
	if err := os.WriteFile(tmp, []byte(m.storeBase+routesYAML(c, marker)), 0o600); err != nil {
		return fmt.Errorf("store file: %w", err)
	}
	if err := os.Rename(tmp, m.storePath); err != nil {
		return fmt.Errorf("store file: %w", err)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	url := "http://" + m.outboundAddr + c.requestPath()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Host = meshAuthority
		if resp, err := client.Do(req); err != nil {
			last = err.Error()
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			got := resp.Header.Get(marker)
			if resp.StatusCode == http.StatusOK && got == c.marker {
				return nil
			}
			last = fmt.Sprintf("status %d, %s %q", resp.StatusCode, marker, got)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the client proxy did not apply the routes in 30 s (last answer: %s)\n  controller log:\n%s", last, m.controller.tail(10))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// routesRow is one config's figures: medians over the rounds.
type routesRow struct {
	client, server float64 // µs per request
	// ratio is the median over rounds of the pair's CPU (client + server)
	// against the baseline's in the same round; clientRatio the client
	// proxy's alone (it applies the routes).
	ratio, clientRatio float64
	// lo, hi are the lowest and highest of the rounds' client ratios: the
	// noise a ratio is read against.
	lo, hi float64
	p50    float64 // ms, corrected
	other  float64 // cores used by others, the highest of the rounds
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// proxyCPU is the client and server proxy µs per request of a cell.
func proxyCPU(c *cellResult) (client, server float64) {
	for _, p := range c.Procs {
		switch p.Name {
		case "client-proxy":
			client = p.CPUMicrosReq
		case "server-proxy":
			server = p.CPUMicrosReq
		}
	}
	return client, server
}

// routesRows summarizes config i against config base, round by round.
func routesRow0(rep routesReport, i, base int) routesRow {
	var cl, sv, ratio, cratio, p50 []float64
	row := routesRow{}
	for r, c := range rep.cells[i] {
		a, b := proxyCPU(c)
		ba, bb := proxyCPU(rep.cells[base][r])
		cl, sv, p50 = append(cl, a), append(sv, b), append(p50, float64(c.Corrected.P50)/1000)
		if ba > 0 && ba+bb > 0 {
			ratio, cratio = append(ratio, (a+b)/(ba+bb)), append(cratio, a/ba)
		}
		row.other = max(row.other, c.OtherCores)
	}
	row.client, row.server, row.ratio, row.clientRatio, row.p50 = median(cl), median(sv), median(ratio), median(cratio), median(p50)
	if len(cratio) > 0 {
		row.lo, row.hi = slices.Min(cratio), slices.Max(cratio)
	}
	return row
}

// printRoutes prints one line per config against the first count, the
// retry config against "1 route", and the target's verdict.
func printRoutes(out io.Writer, o routesOptions, rep routesReport) {
	fmt.Fprintf(out, "routes: HTTP/1.1 GET through the mesh at %g rps over %d connections; %d rounds of %v per config (after %v warm-up), configs interleaved\n",
		o.rate, o.conns, o.rounds, o.duration, o.warmup)
	fmt.Fprintf(out, "CPU µs per request (median over rounds); ratio: the median of each round's ratio against %q in the same round\n\n", rep.configs[0].name)
	const row = "%-30s %10s %10s %12s %13s %12s %8s %11s\n"
	fmt.Fprintf(out, row, "config", "client µs", "server µs", "client ratio", "rounds range", "pair ratio", "p50 ms", "other load")
	one := -1
	for i, c := range rep.configs {
		if c.n == 1 && !c.retry {
			one = i
		}
	}
	rows := make([]routesRow, len(rep.configs))
	for i, c := range rep.configs {
		base := 0
		label := c.name
		if c.retry && one >= 0 {
			base, label = one, c.name+" (vs 1 route)"
		}
		r := routesRow0(rep, i, base)
		rows[i] = r
		fmt.Fprintf(out, row, label, fmt.Sprintf("%.1f", r.client), fmt.Sprintf("%.1f", r.server),
			fmt.Sprintf("%.3f", r.clientRatio), fmt.Sprintf("%.2f-%.2f", r.lo, r.hi), fmt.Sprintf("%.3f", r.ratio), fmt.Sprintf("%.3f", r.p50), fmt.Sprintf("%.2f cores", r.other))
	}
	largest := -1
	for i, c := range rep.configs {
		if !c.retry && c.n == slices.Max(o.counts) && i > 0 {
			largest = i
		}
	}
	if largest < 0 {
		return
	}
	added := 100 * (rows[largest].clientRatio - 1)
	verdict := routesVerdict(rows[largest], o.maxAddedPercent)
	fmt.Fprintf(out, "\ntarget: added CPU per request of the client proxy with %d routes under %g %%: %+.1f %% (rounds %+.1f to %+.1f %%), %s\n",
		rep.configs[largest].n, o.maxAddedPercent, added, 100*(rows[largest].lo-1), 100*(rows[largest].hi-1), verdict)
	if rows[largest].other > 0.2 {
		fmt.Fprintln(out, "note: other processes used over 0.2 cores during some cells: compare ratios only, and re-run on a quiet machine")
	}
}

// routesVerdict judges the target on the rounds, not their median alone:
// met when every round is under the limit, missed when every round is
// over it, undecided when the rounds straddle it (the noise is larger
// than the effect).
func routesVerdict(r routesRow, maxAddedPercent float64) string {
	limit := 1 + maxAddedPercent/100
	switch {
	case r.hi <= limit:
		return "met"
	case r.lo > limit:
		return fmt.Sprintf("missed by %.1f points", 100*(r.clientRatio-limit))
	}
	return "undecided: the rounds straddle the limit (noise wider than the target; more rounds or a quieter machine)"
}
