package metrics

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Routes holds the outbound route metrics: requests and latency per route
// rule (only for requests a route matched), injected faults and mirrored
// copies. The route label is the route's "namespace/name" from the
// control plane; series are cached and bounded by MaxRouteSeries.
type Routes struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	faults   *prometheus.CounterVec
	mirrors  *prometheus.CounterVec
	failover *prometheus.CounterVec

	n      atomic.Int64
	series sync.Map // routeKey -> *routeSeries
	other  sync.Map // "faults"/"mirrors" + labels -> prometheus.Counter
}

// RouteKey labels one route's series: Service is the authority the
// client named (the route's parent), Rule the rule's index in the route,
// DstService the backend the rule picked (Service when it has none).
type RouteKey struct {
	Route, Direction, DstService string
	Service, Rule                string
	Class                        string // "2xx", ..., "5xx", or "cancelled"
}

type routeSeries struct {
	requests prometheus.Counter
	latency  prometheus.Observer
}

// MaxRouteSeries bounds the label sets of each route metric; past it,
// new ones are counted under route OtherService.
const MaxRouteSeries = 2000

// Kinds of trellis_fault_injected_total.
const (
	FaultAbort = "abort"
	FaultDelay = "delay"
)

// Results of trellis_mirror_requests_total.
const (
	MirrorSent    = "sent"    // the copy got a response (any status)
	MirrorFailed  = "failed"  // the copy got no response
	MirrorDropped = "dropped" // too many copies in flight
	MirrorSkipped = "skipped" // the body is too large or streamed
)

// NewRoutes registers the route metrics on reg.
func NewRoutes(reg prometheus.Registerer) (*Routes, error) {
	labels := []string{"route", "rule", "direction", "service", "dst_service", "status_class"}
	r := &Routes{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_route_requests_total", Help: "Requests an outbound route matched, by response status class.",
		}, labels),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trellis_route_response_latency_seconds",
			Help:    "Time from request headers received to response stream completed, for requests a route matched.",
			Buckets: latencyBuckets,
		}, labels),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_fault_injected_total", Help: "Faults a route injected on purpose (not real failures).",
		}, []string{"route", "kind"}),
		mirrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_mirror_requests_total", Help: "Copies of requests a route mirrored, by result.",
		}, []string{"route", "result"}),
	}
	r.failover = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_route_failovers_total",
		Help: "Requests whose picked backend had no endpoints in this proxy's view, sent to another backend of the rule instead, by route and the backend without endpoints.",
	}, []string{"route", "from"})
	for _, c := range []prometheus.Collector{r.requests, r.latency, r.faults, r.mirrors, r.failover} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return r, nil
}

var statusClasses = [...]string{"0xx", "1xx", "2xx", "3xx", "4xx", "5xx"}

// StatusClass is the status_class of a status ("0xx": no response).
func StatusClass(status int) string {
	if status < 100 || status > 599 {
		return statusClasses[0]
	}
	return statusClasses[status/100]
}

// Request counts a request a route matched and observes its latency.
func (r *Routes) Request(k RouteKey, seconds float64) {
	if r == nil {
		return
	}
	s := r.seriesOf(k)
	s.requests.Inc()
	if k.Class != ClassCancelled {
		s.latency.Observe(seconds)
	}
}

func (r *Routes) seriesOf(k RouteKey) *routeSeries {
	if v, ok := r.series.Load(k); ok {
		return v.(*routeSeries)
	}
	if r.n.Load() >= MaxRouteSeries {
		k.Route, k.Service, k.DstService, k.Rule = OtherService, OtherService, OtherService, ""
		if v, ok := r.series.Load(k); ok {
			return v.(*routeSeries)
		}
	}
	lv := []string{k.Route, k.Rule, k.Direction, k.Service, k.DstService, k.Class}
	s := &routeSeries{requests: r.requests.WithLabelValues(lv...), latency: r.latency.WithLabelValues(lv...)}
	v, loaded := r.series.LoadOrStore(k, s)
	if !loaded {
		r.n.Add(1)
	}
	return v.(*routeSeries)
}

// Fault counts a fault of kind (FaultAbort, FaultDelay) injected on route.
func (r *Routes) Fault(route, kind string) {
	if r != nil {
		r.counter(r.faults, route, kind).Inc()
	}
}

// Mirror counts a mirrored copy's result on route.
func (r *Routes) Mirror(route, result string) {
	if r != nil {
		r.counter(r.mirrors, route, result).Inc()
	}
}

// Failover counts a request that a route's backend without endpoints
// (from) passed to another backend.
func (r *Routes) Failover(route, from string) {
	if r != nil {
		r.counter(r.failover, route, from).Inc()
	}
}

func (r *Routes) counter(vec *prometheus.CounterVec, route, v string) prometheus.Counter {
	type key struct {
		vec      *prometheus.CounterVec
		route, v string
	}
	k := key{vec, route, v}
	if c, ok := r.other.Load(k); ok {
		return c.(prometheus.Counter)
	}
	if r.n.Load() >= MaxRouteSeries {
		k.route = OtherService
	}
	c, loaded := r.other.LoadOrStore(k, vec.WithLabelValues(k.route, v))
	if !loaded {
		r.n.Add(1)
	}
	return c.(prometheus.Counter)
}
