package trace

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/credentials"
)

const (
	defaultQueue = 2048
	batchSize    = 512
	batchDelay   = time.Second
	// exportTimeout bounds one export, retries included: a slow collector
	// fills the queue (drops, counted), it never holds a request.
	exportTimeout = 10 * time.Second
)

// newExporter is the OTLP/gRPC exporter to addr: TLS verified against the
// PEM bundle caFile when set, plain text otherwise.
func newExporter(ctx context.Context, addr, caFile string) (sdktrace.SpanExporter, error) {
	opts := []otlptracegrpc.Option{
		otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithTimeout(exportTimeout),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: true, InitialInterval: time.Second, MaxInterval: 2 * time.Second, MaxElapsedTime: exportTimeout}),
	}
	if caFile == "" {
		opts = append(opts, otlptracegrpc.WithInsecure())
	} else {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--trace-collector-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--trace-collector-ca: %s holds no PEM certificate", caFile)
		}
		host, _, _ := net.SplitHostPort(addr)
		opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12,
		})))
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("--trace-collector %s: %w", addr, err)
	}
	return exp, nil
}

// queue is the span processor: a bounded queue in front of the exporter,
// drained in batches by one goroutine. OnEnd never blocks: a full queue
// drops the span and counts it (the SDK's batch processor drops too, but
// does not say how many).
type queue struct {
	exp      sdktrace.SpanExporter
	ch       chan sdktrace.ReadOnlySpan
	flush    chan chan struct{}
	done     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	log      *slog.Logger

	exported, dropped, failed prometheus.Counter
}

func newQueue(exp sdktrace.SpanExporter, size int, reg prometheus.Registerer, log *slog.Logger) (*queue, error) {
	if size <= 0 {
		size = defaultQueue
	}
	spans := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_trace_spans_total",
		Help: "Spans recorded by the tracing stage, by outcome: exported to the collector, dropped (export queue full) or failed (the collector refused them or could not be reached).",
	}, []string{"outcome"})
	if reg != nil {
		if err := reg.Register(spans); err != nil {
			return nil, fmt.Errorf("trace metrics: %w", err)
		}
	}
	q := &queue{
		exp: exp, ch: make(chan sdktrace.ReadOnlySpan, size), flush: make(chan chan struct{}), done: make(chan struct{}), stop: make(chan struct{}), log: log,
		exported: spans.WithLabelValues("exported"), dropped: spans.WithLabelValues("dropped"), failed: spans.WithLabelValues("failed"),
	}
	go q.run()
	return q, nil
}

func (q *queue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (q *queue) OnEnd(s sdktrace.ReadOnlySpan) {
	select {
	case q.ch <- s:
	default:
		q.dropped.Inc()
	}
}

// run sends batches: when batchSize spans wait, every batchDelay, on a
// flush, and at shutdown (what is left).
func (q *queue) run() {
	defer close(q.done)
	t := time.NewTicker(batchDelay)
	defer t.Stop()
	batch := make([]sdktrace.ReadOnlySpan, 0, batchSize)
	for {
		select {
		case <-q.stop:
			q.drain(batch)
			return
		case s := <-q.ch:
			if batch = append(batch, s); len(batch) == batchSize {
				batch = q.export(batch)
			}
		case <-t.C:
			batch = q.export(batch)
		case ack := <-q.flush:
			batch = q.drain(batch)
			close(ack)
		}
	}
}

// drain exports everything queued now.
func (q *queue) drain(batch []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	for {
		select {
		case s := <-q.ch:
			if batch = append(batch, s); len(batch) == batchSize {
				batch = q.export(batch)
			}
		default:
			return q.export(batch)
		}
	}
}

func (q *queue) export(batch []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	if len(batch) == 0 {
		return batch
	}
	ctx, cancel := context.WithTimeout(context.Background(), exportTimeout)
	err := q.exp.ExportSpans(ctx, batch)
	cancel()
	if err != nil {
		q.failed.Add(float64(len(batch)))
		q.log.Debug("trace export failed", "spans", len(batch), "err", err)
	} else {
		q.exported.Add(float64(len(batch)))
	}
	clear(batch)
	return batch[:0]
}

// ForceFlush exports what is queued, within ctx.
func (q *queue) ForceFlush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case q.flush <- ack:
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued and closes the exporter, within ctx.
// The channel of spans is never closed: a span ending late is dropped.
func (q *queue) Shutdown(ctx context.Context) error {
	q.stopOnce.Do(func() { close(q.stop) })
	select {
	case <-q.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return q.exp.Shutdown(ctx)
}
