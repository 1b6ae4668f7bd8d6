// Package tap is the proxy side of Tap.Observe: a stage of both request
// chains that, only while a tap is open, reports each matching request as
// request_init, response_init and response_end events (api/v1/tap.proto),
// and the gRPC server the controller opens taps on. A tap can never hurt
// the data plane: with none open the stage costs one atomic load; an open
// tap has a token bucket (max_rps) and a bounded queue, and what exceeds
// either is dropped and counted, never queued or waited for. Header values
// are never captured; bodies only when asked, bounded.
package tap

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/tapreq"
)

// Limits of an ObserveRequest, as tap.proto states them.
const (
	DefaultMaxRPS = 100
	MaxMaxRPS     = 1000
	MaxBodyBytes  = tapreq.MaxBodyBytes
	// QueueLen is each tap's queue of events: a client slower than this
	// loses events (counted), the requests never wait for it.
	QueueLen = 512
	// maxFieldLen bounds each string an event copies from a request
	// (method, authority, path, route): a path may be about 1 MiB, and
	// events wait in queues. Longer than tapreq.MaxMatchLen, so that cutting
	// changes no filter's verdict.
	maxFieldLen = 8192
	// BodyBudget bounds the body bytes that all the requests being tapped
	// hold at once, whatever their number: beyond it, bodies are cut
	// (*_truncated).
	BodyBudget = 16 << 20
)

// Reasons of trellis_tap_events_dropped_total.
const (
	DropRate  = "rate"  // over the tap's max_rps
	DropQueue = "queue" // the tap client did not keep up
)

// Metrics are the tap's series on the proxy's registry.
type Metrics struct {
	Dropped *prometheus.CounterVec // events not sent, by reason
	Sent    prometheus.Counter     // events queued to a tap stream
	Refused *prometheus.CounterVec // tap calls refused, by reason
	Open    prometheus.Gauge       // taps open now
}

// NewMetrics registers the tap's metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_tap_events_dropped_total",
			Help: "Tap events the proxy did not send: reason rate (over the tap's max_rps; the whole request is left out) or queue (the tap client did not keep up).",
		}, []string{"reason"}),
		Sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_tap_events_total",
			Help: "Tap events queued to open tap streams.",
		}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_tap_refused_total",
			Help: "Tap connections and calls refused: reason handshake (TLS failed or not the controller's identity), identity, too_many (concurrent taps), bad_request.",
		}, []string{"reason"}),
		Open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_tap_streams",
			Help: "Tap streams open now.",
		}),
	}
	for _, c := range []prometheus.Collector{m.Dropped, m.Sent, m.Refused, m.Open} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("tap metrics: %w", err)
		}
	}
	for _, r := range []string{DropRate, DropQueue} {
		m.Dropped.WithLabelValues(r)
	}
	return m, nil
}

// Hub holds the open taps. The request path reads only n (one atomic
// load) until a tap opens; subs is replaced, never changed in place.
type Hub struct {
	n    atomic.Int32
	subs atomic.Pointer[[]*Sub]
	mu   sync.Mutex // serializes Subscribe and Unsubscribe
	self string     // this proxy's identity
	m    *Metrics
	now  func() time.Time

	// bodyHeld counts the body bytes copied by requests in flight, at
	// most bodyBudget.
	bodyHeld   atomic.Int64
	bodyBudget int64
}

// NewHub returns a hub for the proxy whose identity is self.
func NewHub(self string, m *Metrics) *Hub {
	return &Hub{self: self, m: m, now: time.Now, bodyBudget: BodyBudget}
}

// reserve takes up to n bytes of the body budget and returns how many.
func (h *Hub) reserve(n int) int {
	for {
		held := h.bodyHeld.Load()
		got := min(int64(n), h.bodyBudget-held)
		if got <= 0 {
			return 0
		}
		if h.bodyHeld.CompareAndSwap(held, held+got) {
			return int(got)
		}
	}
}

// release gives n bytes back to the body budget.
func (h *Hub) release(n int) {
	if n > 0 {
		h.bodyHeld.Add(-int64(n))
	}
}

// Open reports how many taps are open.
func (h *Hub) Open() int { return int(h.n.Load()) }

// ErrInvalid marks an ObserveRequest the proxy cannot serve.
var ErrInvalid = errors.New("invalid tap request")

// Sub is one open tap: its filter, its limits and its queue.
type Sub struct {
	match       filter
	sample      float64
	headerNames bool
	bodyBytes   int
	limit       uint32

	bucket   bucket
	events   chan *apiv1.TapEvent
	admitted atomic.Uint32 // requests reported (limit)
	ended    atomic.Uint32 // of those, the ones whose response_end was sent
	ids      atomic.Uint64
	finished chan struct{}
	finish   sync.Once
	rnd      func() float64
	m        *Metrics
}

// Subscribe opens a tap for req, with a queue of queueLen events (0:
// QueueLen). The caller must Unsubscribe.
func (h *Hub) Subscribe(req *apiv1.ObserveRequest, queueLen int) (*Sub, error) {
	s, err := newSub(req, queueLen, h.now())
	if err != nil {
		return nil, err
	}
	s.m = h.m
	h.mu.Lock()
	defer h.mu.Unlock()
	var list []*Sub
	if p := h.subs.Load(); p != nil {
		list = append(list, *p...)
	}
	list = append(list, s)
	h.subs.Store(&list)
	h.n.Store(int32(len(list)))
	return s, nil
}

// Unsubscribe closes s: no event is queued to it afterwards.
func (h *Hub) Unsubscribe(s *Sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.subs.Load()
	if p == nil {
		return
	}
	list := make([]*Sub, 0, len(*p))
	for _, o := range *p {
		if o != s {
			list = append(list, o)
		}
	}
	h.subs.Store(&list)
	h.n.Store(int32(len(list)))
}

func newSub(req *apiv1.ObserveRequest, queueLen int, now time.Time) (*Sub, error) {
	if req == nil {
		req = &apiv1.ObserveRequest{}
	}
	// The controller checks the same (internal/tapreq) before any proxy
	// is asked.
	if err := tapreq.Check(req); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	sample := req.GetSample()
	if sample == 0 {
		sample = 1
	}
	m := req.GetMatch()
	f := filter{
		Authority: m.GetAuthority(), PathPrefix: m.GetPathPrefix(), Method: m.GetMethod(),
		PeerIdentity: m.GetPeerIdentity(), Direction: m.GetDirection(),
		FromIdentity: m.GetFromIdentity(), ToIdentity: m.GetToIdentity(),
	}
	rps := int(req.GetMaxRps())
	if rps == 0 {
		rps = DefaultMaxRPS
	}
	rps = min(rps, MaxMaxRPS)
	if queueLen <= 0 {
		queueLen = QueueLen
	}
	s := &Sub{
		match:       f,
		sample:      sample,
		headerNames: req.GetHeaderNames(),
		bodyBytes:   int(min(req.GetBodyBytes(), MaxBodyBytes)),
		limit:       req.GetLimit(),
		bucket:      newBucket(rps, now),
		events:      make(chan *apiv1.TapEvent, queueLen),
		finished:    make(chan struct{}),
		rnd:         rand.Float64,
	}
	return s, nil
}

// Events is the tap's queue.
func (s *Sub) Events() <-chan *apiv1.TapEvent { return s.events }

// Finished is closed once limit requests were reported in full.
func (s *Sub) Finished() <-chan struct{} { return s.finished }

// MaxRPS is the tap's effective rate.
func (s *Sub) MaxRPS() int { return s.bucket.rate }

// BodyBytes is the tap's effective body capture limit.
func (s *Sub) BodyBytes() int { return s.bodyBytes }

// send queues ev, or drops and counts it when the client lags.
func (s *Sub) send(ev *apiv1.TapEvent) {
	select {
	case s.events <- ev:
		s.m.Sent.Inc()
	default:
		s.m.Dropped.WithLabelValues(DropQueue).Inc()
	}
}

// ended records a request reported in full; the limit-th closes Finished.
func (s *Sub) endOne() {
	if s.limit > 0 && s.ended.Add(1) >= s.limit {
		s.finish.Do(func() { close(s.finished) })
	}
}

// filter is a tap's TapMatch: every field set must equal (path: prefix).
type filter struct {
	Authority, PathPrefix, Method, PeerIdentity, Direction, FromIdentity, ToIdentity string
}

// bucket is a token bucket of rate tokens a second, holding at most
// rate (a burst of one second).
type bucket struct {
	mu     sync.Mutex
	rate   int
	tokens float64
	last   time.Time
}

func newBucket(rate int, now time.Time) bucket {
	return bucket{rate: rate, tokens: float64(rate), last: now}
}

func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(b.rate), b.tokens+d.Seconds()*float64(b.rate))
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
