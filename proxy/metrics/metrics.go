// Package metrics holds the proxy's data-path Prometheus metrics (HTTP, TCP,
// protocol detection, TLS handshake errors) as documented in docs/metrics.md.
//
// Per-request recording is on the hot path, so label-bound counters and
// observers are cached per (direction, dst_service, peer_identity, tls) and
// per response class instead of calling WithLabelValues on every request.
package metrics

import (
	"crypto/tls"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Directions, the values of the direction label.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// Reasons for trellis_request_errors_total and trellis_retries_total.
const (
	ReasonNoEndpoints    = "no_endpoints"
	ReasonTimeout        = "timeout"
	ReasonConnectError   = "connect_error"
	ReasonBadRequest     = "bad_request"
	ReasonUnknownService = "unknown_service"
	// ReasonProtocolMismatch: the request needs a protocol the app does
	// not speak, per the service port's protocol hint (gRPC to an
	// HTTP/1.1-only app).
	ReasonProtocolMismatch = "protocol_mismatch"
	// ReasonUnprocessed: the peer proved the request was not processed
	// (REFUSED_STREAM, above a GOAWAY's last stream, or its inbound proxy
	// could not reach its app), so it was sent to another endpoint.
	ReasonUnprocessed = "unprocessed"
	// ReasonForbiddenPort: a mesh peer named a port that is not the
	// app's (one of the proxy's own listeners, or in explicit mode any
	// port but --app-addr's and --app-ports); ReasonUnauthenticated: a
	// caller without mesh mTLS under --default-inbound-policy
	// all-authenticated. Both are also counted in trellis_inbound_refused_total.
	ReasonForbiddenPort   = "forbidden_port"
	ReasonUnauthenticated = "unauthenticated"
)

// LatencyBuckets spans sub-millisecond proxy hops to slow 10 s requests.
var latencyBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// LatencyBuckets returns a copy of the response latency histogram buckets.
func LatencyBuckets() []float64 { return append([]float64(nil), latencyBuckets...) }

var routeLabels = []string{"direction", "dst_service", "peer_identity", "tls"}

// Metrics is the set of data-path metrics registered on one registry.
type Metrics struct {
	requests   *prometheus.CounterVec
	responses  *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	retries    *prometheus.CounterVec
	reqErrors  *prometheus.CounterVec
	tcpOpen    *prometheus.CounterVec
	tcpClose   *prometheus.CounterVec
	tcpConns   *prometheus.GaugeVec
	tcpRead    *prometheus.CounterVec
	tcpWrite   *prometheus.CounterVec
	detect     *prometheus.CounterVec
	handshakes *prometheus.CounterVec
	tlsGroups  *prometheus.CounterVec
	protocol   *prometheus.CounterVec
	refused    *prometheus.CounterVec
	protoErrs  *prometheus.CounterVec
	retry      retryMetrics

	// routes counts the label sets in http and tcp (capped at MaxRoutes).
	routes atomic.Int64
	http   sync.Map // Key -> *HTTP
	tcp    sync.Map // Key -> *TCP
}

// New creates the metrics and registers them on reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	with := func(extra ...string) []string {
		return append(append([]string(nil), routeLabels...), extra...)
	}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_requests_total", Help: "HTTP requests started.",
		}, routeLabels),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_responses_total", Help: "HTTP responses ended.",
		}, with("status_code", "grpc_status", "classification")),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trellis_response_latency_seconds",
			Help:    "Time from request headers received to response stream completed.",
			Buckets: latencyBuckets,
		}, routeLabels),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_retries_total", Help: "Requests sent again: provably never processed, or retried under the route's retry policy.",
		}, with("reason")),
		reqErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_request_errors_total", Help: "Requests the proxy answered itself.",
		}, with("reason")),
		tcpOpen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_tcp_open_total", Help: "Connections accepted (inbound) or opened to peers (outbound).",
		}, routeLabels),
		tcpClose: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_tcp_close_total", Help: "Connections closed.",
		}, with("errno")),
		tcpConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_tcp_open_connections", Help: "Connections open now.",
		}, routeLabels),
		tcpRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_tcp_read_bytes_total", Help: "Bytes read from the peer.",
		}, routeLabels),
		tcpWrite: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_tcp_write_bytes_total", Help: "Bytes written to the peer.",
		}, routeLabels),
		detect: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_protocol_detect_total", Help: "Protocol detection outcomes.",
		}, []string{"direction", "protocol", "result"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_tls_handshake_errors_total", Help: "Failed mesh TLS handshakes.",
		}, []string{"direction", "reason"}),
		tlsGroups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_tls_handshakes_total",
			Help: "Completed TLS handshakes (mesh peers and the controller) by key exchange group.",
		}, []string{"direction", "group"}),
		protocol: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_protocol_errors_total", Help: "Protocol errors the HTTP libraries reported (one per log line they would have printed).",
		}, []string{"direction", "cause"}),
		refused: newRefused(),
		protoErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_http1_protocol_errors_total", Help: "Malformed or ambiguous HTTP/1 messages refused.",
		}, []string{"direction", "side", "reason"}),
		retry: newRetryMetrics(),
	}
	for _, c := range append([]prometheus.Collector{
		m.requests, m.responses, m.latency, m.retries, m.reqErrors,
		m.tcpOpen, m.tcpClose, m.tcpConns, m.tcpRead, m.tcpWrite,
		m.detect, m.handshakes, m.tlsGroups, m.protocol, m.refused, m.protoErrs,
	}, m.retry.collectors()...) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Key is the common label set of a route.
type Key struct {
	Direction    string
	DstService   string
	PeerIdentity string
	TLS          bool
}

func (k Key) values() []string {
	return []string{k.Direction, k.DstService, k.PeerIdentity, strconv.FormatBool(k.TLS)}
}

// HTTP holds the label-bound HTTP metrics of one route.
type HTTP struct {
	m         *Metrics
	key       Key
	labels    []string
	Requests  prometheus.Counter
	Latency   prometheus.Observer
	responses sync.Map // respKey -> prometheus.Counter
	errors    sync.Map // reason -> prometheus.Counter
	retries   sync.Map // reason -> prometheus.Counter
	skipped   sync.Map // reason -> prometheus.Counter
	exhausted sync.Map // dst_service -> prometheus.Counter
}

type respKey struct {
	status int
	grpc   string
	class  string
}

// Classifications of trellis_responses_total.
const (
	ClassSuccess   = "success"
	ClassFailure   = "failure"
	ClassCancelled = "cancelled"
)

// Classify is the classification of a response that ended: failure for a
// 5xx, a non-zero grpc-status, no response at all or a broken stream;
// success otherwise.
func Classify(status int, grpcStatus string, streamErr bool) string {
	if streamErr || status >= 500 || status == 0 || (grpcStatus != "" && grpcStatus != "0") {
		return ClassFailure
	}
	return ClassSuccess
}

// HTTP returns the cached HTTP metrics of a route.
func (m *Metrics) HTTP(k Key) *HTTP {
	if v, ok := m.http.Load(k); ok {
		return v.(*HTTP)
	}
	if k = m.capRoute(k); k.DstService == OtherService {
		if v, ok := m.http.Load(k); ok {
			return v.(*HTTP)
		}
	}
	lv := k.values()
	h := &HTTP{
		m: m, key: k, labels: lv,
		Requests: m.requests.WithLabelValues(lv...),
		Latency:  m.latency.WithLabelValues(lv...),
	}
	v, loaded := m.http.LoadOrStore(k, h)
	if !loaded {
		m.routes.Add(1)
	}
	return v.(*HTTP)
}

// MaxRoutes bounds the label sets a proxy keeps (HTTP and TCP together): the
// dst_service label comes from a caller's Host or :authority, so a caller
// sending random names could otherwise grow the proxy's memory and the
// metrics without bound. Past it, new destinations are counted as
// OtherService.
const MaxRoutes = 2000

// OtherService is the dst_service of destinations past MaxRoutes.
const OtherService = "(other)"

// capRoute returns k, or k with DstService OtherService once MaxRoutes
// label sets exist.
func (m *Metrics) capRoute(k Key) Key {
	if m.routes.Load() >= MaxRoutes {
		k.DstService = OtherService
	}
	return k
}

// Response counts one ended response. status 0: no response headers were
// sent; grpcStatus is "" for non-gRPC responses.
func (h *HTTP) Response(status int, grpcStatus string, streamErr bool) {
	grpcStatus = grpcCode(grpcStatus)
	h.count(respKey{status: status, grpc: grpcStatus, class: Classify(status, grpcStatus, streamErr)})
}

// Cancelled counts a stream the client reset or abandoned before its
// response ended (status 0: before any response headers): it is neither a
// success nor the app's failure, and its latency (the client's patience)
// is not observed.
func (h *HTTP) Cancelled(status int) {
	h.count(respKey{status: status, class: ClassCancelled})
}

func (h *HTTP) count(k respKey) {
	if c, ok := h.responses.Load(k); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := h.m.responses.WithLabelValues(append(append([]string(nil), h.labels...), strconv.Itoa(k.status), k.grpc, k.class)...)
	v, _ := h.responses.LoadOrStore(k, c)
	v.(prometheus.Counter).Inc()
}

// RequestError counts a request the proxy answered itself.
func (h *HTTP) RequestError(reason string) {
	boundInc(&h.errors, h.m.reqErrors, h.labels, reason)
}

// Retry counts a retried request.
func (h *HTTP) Retry(reason string) {
	boundInc(&h.retries, h.m.retries, h.labels, reason)
}

func boundInc(cache *sync.Map, vec *prometheus.CounterVec, labels []string, extra string) {
	if c, ok := cache.Load(extra); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := vec.WithLabelValues(append(append([]string(nil), labels...), extra)...)
	v, _ := cache.LoadOrStore(extra, c)
	v.(prometheus.Counter).Inc()
}

// TCP holds the label-bound TCP metrics of one route.
type TCP struct {
	m      *Metrics
	labels []string
	opens  prometheus.Counter
	conns  prometheus.Gauge
	read   prometheus.Counter
	write  prometheus.Counter
	closes sync.Map // errno -> Counter
}

// TCP returns the cached TCP metrics of a route.
func (m *Metrics) TCP(k Key) *TCP {
	if v, ok := m.tcp.Load(k); ok {
		return v.(*TCP)
	}
	if k = m.capRoute(k); k.DstService == OtherService {
		if v, ok := m.tcp.Load(k); ok {
			return v.(*TCP)
		}
	}
	lv := k.values()
	t := &TCP{
		m: m, labels: lv,
		opens: m.tcpOpen.WithLabelValues(lv...),
		conns: m.tcpConns.WithLabelValues(lv...),
		read:  m.tcpRead.WithLabelValues(lv...),
		write: m.tcpWrite.WithLabelValues(lv...),
	}
	v, loaded := m.tcp.LoadOrStore(k, t)
	if !loaded {
		m.routes.Add(1)
	}
	return v.(*TCP)
}

// Open counts an opened connection.
func (t *TCP) Open() { t.opens.Inc(); t.conns.Inc() }

// Close counts a closed connection; errno is "" for a clean close.
func (t *TCP) Close(errno string) {
	t.conns.Dec()
	boundInc(&t.closes, t.m.tcpClose, t.labels, errno)
}

// Read adds bytes read from the peer.
func (t *TCP) Read(n int64) {
	if n > 0 {
		t.read.Add(float64(n))
	}
}

// Write adds bytes written to the peer.
func (t *TCP) Write(n int64) {
	if n > 0 {
		t.write.Add(float64(n))
	}
}

// Detect counts a protocol detection outcome.
func (m *Metrics) Detect(direction, protocol, result string) {
	m.detect.WithLabelValues(direction, protocol, result).Inc()
}

// ProtocolError counts a protocol error an HTTP library reported (x/net/http2,
// net/http); cause is one of ratelog's bounded causes.
func (m *Metrics) ProtocolError(direction, cause string) {
	m.protocol.WithLabelValues(direction, cause).Inc()
}

// HandshakeError counts a failed mesh TLS handshake.
func (m *Metrics) HandshakeError(direction, reason string) {
	m.handshakes.WithLabelValues(direction, reason).Inc()
}

// DirControlPlane is the direction label of a handshake with the controller.
const DirControlPlane = "control_plane"

// Handshake counts a completed TLS handshake by its negotiated key
// exchange group (tls.CurveID's name, e.g. X25519MLKEM768, the hybrid
// post-quantum one), so a security team can show what protects the mesh.
// The label is bounded: Go knows a handful of groups.
func (m *Metrics) Handshake(direction string, group tls.CurveID) {
	m.tlsGroups.WithLabelValues(direction, group.String()).Inc()
}

// Sides of trellis_http1_protocol_errors_total.
const (
	SideClient = "client" // the request (head or body) from the caller
	SideApp    = "app"    // the response from the local app
)

// HTTP1Error counts a malformed HTTP/1 message
// (trellis_http1_protocol_errors_total); reason is one of the fixed
// proxy/http1 reasons.
func (m *Metrics) HTTP1Error(direction, side, reason string) {
	m.protoErrs.WithLabelValues(direction, side, reason).Inc()
}

// grpcCode returns a gRPC status code as sent when it is one of the 17
// codes (0-16), "" for none, and "other" for anything else: the value
// comes from the app or a peer and must not grow the label set.
func grpcCode(s string) string {
	if s == "" {
		return ""
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 16 && strconv.Itoa(n) == s {
		return s
	}
	return "other"
}
