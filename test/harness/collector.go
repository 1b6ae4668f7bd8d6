package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/httpget"
)

// The trace collector of the tests: Jaeger v2, built from the test-only
// module test/collector (pinned there), with its config test/collector/
// jaeger.yaml: OTLP/gRPC in, memory storage, the query API out.
const collectorPkg = "github.com/jaegertracing/jaeger/cmd/jaeger"

// collectorDir is test/collector, beside this package.
func collectorDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "collector")
}

// BuildCollector builds Jaeger into dir and returns its path. A cold build
// is long (minutes: docs/observability.md, "Tracing"); the Go build cache
// makes the next ones quick.
func BuildCollector(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "jaeger")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, collectorPkg)
	cmd.Dir = collectorDir()
	// The collector's module is its own (no workspace); static, with the
	// flags the cluster harness builds its image with
	// (test/cluster/k8s/cmd/cluster/collector.go): one build cache serves
	// both.
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s (in %s): %w\n%s", collectorPkg, cmd.Dir, err, out.String())
	}
	return bin, nil
}

// Collector is a running Jaeger: OTLP is where proxies send spans
// (--trace-collector), Query its HTTP query API.
type Collector struct {
	OTLP, Query string
	Process     *Process
}

// StartCollector runs the Jaeger at bin on fresh loopback ports and waits
// until its query API answers.
func StartCollector(t testing.TB, bin, logDir string, ports *Ports) *Collector {
	t.Helper()
	c := &Collector{OTLP: ports.Addr(t), Query: ports.Addr(t)}
	c.Process = StartProcess(t, "jaeger", logDir, "/usr/bin/env",
		"TRELLIS_OTLP_GRPC_ADDR="+c.OTLP, "TRELLIS_QUERY_HTTP_ADDR="+c.Query, "TRELLIS_QUERY_GRPC_ADDR="+ports.Addr(t),
		bin, "--config", filepath.Join(collectorDir(), "jaeger.yaml"))
	began := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		code, _, err := HTTPStatus(ctx, "http://"+c.Query+"/api/services")
		cancel()
		if err == nil && code == http.StatusOK {
			t.Logf("jaeger ready in %s", time.Since(began).Round(time.Millisecond))
			return c
		}
		if c.Process.Exited() || time.Since(began) > time.Minute {
			t.Fatalf("jaeger not ready after %s (%v, %d)\n%s", time.Since(began), err, code, c.Process.LogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Trace is a trace as Jaeger's query API returns it (/api/traces).
type Trace struct {
	TraceID   string                  `json:"traceID"`
	Spans     []Span                  `json:"spans"`
	Processes map[string]TraceProcess `json:"processes"`
}

// Span is a span of a Trace.
type Span struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags      []Tag  `json:"tags"`
	ProcessID string `json:"processID"`
}

// TraceProcess is the process (service) of a span.
type TraceProcess struct {
	ServiceName string `json:"serviceName"`
	Tags        []Tag  `json:"tags"`
}

// Tag is an attribute.
type Tag struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Tag returns the span's attribute key as text ("" when absent).
func (s Span) Tag(key string) string {
	for _, tg := range s.Tags {
		if tg.Key == key {
			return fmt.Sprint(tg.Value)
		}
	}
	return ""
}

// Parent is the span's parent span ID ("" for a root).
func (s Span) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Traces returns the traces Jaeger holds that have a span of service (the
// most recent first, at most limit).
func (c *Collector) Traces(ctx context.Context, service string, limit int) ([]Trace, error) {
	return QueryTraces(ctx, http.DefaultClient, "http://"+c.Query, service, limit)
}

// QueryTraces asks the Jaeger query API at base for the traces of service.
func QueryTraces(ctx context.Context, client *http.Client, base, service string, limit int) ([]Trace, error) {
	u := strings.TrimSuffix(base, "/") + TracesPath(service, limit)
	// Bounded: the test asks for a few traces of a few spans each.
	b, err := httpget.Body(ctx, client, u, 64<<20)
	if err != nil {
		return nil, err
	}
	return ParseTraces(b)
}

// ParseTraces decodes an answer of Jaeger's /api/traces.
func ParseTraces(b []byte) ([]Trace, error) {
	var body struct {
		Data []Trace `json:"data"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("jaeger's traces: %w", err)
	}
	return body.Data, nil
}

// TracesPath is the query API's path of the traces of service.
func TracesPath(service string, limit int) string {
	return fmt.Sprintf("/api/traces?service=%s&limit=%d&lookback=1h", url.QueryEscape(service), limit)
}

// Hop is one call of a trace: from the client's service (its proxy's
// client span) to the server's (its proxy's server span), with the
// identities each proxy must have recorded.
type Hop struct {
	Client, Server                 string // service.name: the service accounts
	ClientIdentity, ServerIdentity string
}

// CheckHops reports what trace lacks of hops: for each, a client span of
// the client's service naming both identities over mTLS, and a server span
// of the server's service that is that client span's child, naming them
// too. nil when every hop is there.
func CheckHops(tr Trace, hops []Hop) error {
	var missing []string
	for _, h := range hops {
		if !hasHop(tr, h) {
			missing = append(missing, h.Client+" -> "+h.Server)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("trace %s (%d spans) lacks the hops %s", tr.TraceID, len(tr.Spans), strings.Join(missing, ", "))
	}
	return nil
}

func hasHop(tr Trace, h Hop) bool {
	ids := func(s Span) bool {
		return s.Tag("trellis.client.identity") == h.ClientIdentity && s.Tag("trellis.server.identity") == h.ServerIdentity &&
			s.Tag("trellis.tls") == "true"
	}
	for _, c := range tr.Spans {
		if tr.Processes[c.ProcessID].ServiceName != h.Client || c.Tag("span.kind") != "client" || !ids(c) {
			continue
		}
		for _, s := range tr.Spans {
			if tr.Processes[s.ProcessID].ServiceName == h.Server && s.Tag("span.kind") == "server" && s.Parent() == c.SpanID && ids(s) {
				return true
			}
		}
	}
	return false
}

// Services are the services with spans in tr.
func (tr Trace) Services() []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range tr.Spans {
		if n := tr.Processes[s.ProcessID].ServiceName; !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
