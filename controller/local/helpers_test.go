package local

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

const (
	tokenV1 = "token-books-v1-0123456789"
	tokenV2 = "token-books-v2-0123456789"
	tokenW  = "token-web-0123456789abcd"
)

const meshYAML = `
certificateLifetime: 1h
services:
  - name: books
    namespace: demo
    ports:
      - port: 80
        protocol: http
  - name: authors
    namespace: demo
    ports: [{port: 7000, protocol: grpc}]
  - name: empty
    namespace: demo
    ports: [{port: 80}]
workloads:
  - name: books-v1
    namespace: demo
    serviceAccount: books
    token: ` + tokenV1 + `
    proxyAddr: 127.0.0.1:4243
    zone: zone-a
    labels: {version: v1}
    endpoints:
      - service: books
        port: 80
        targetPort: 9101
  - name: books-v2
    namespace: demo
    serviceAccount: books
    token: ` + tokenV2 + `
    proxyAddr: 127.0.0.2:4243
    labels: {version: v2}
    endpoints:
      - {service: books, port: 80, targetPort: 9102, weight: 3}
  - name: web
    namespace: demo
    serviceAccount: web
    token: ` + tokenW + `
    proxyAddr: 127.0.0.1:4250
`

var (
	booksID = identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "books"}
	webID   = identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "web"}
)

type env struct {
	c      *Controller
	dir    string
	mesh   string
	anchor *x509.CertPool
	stop   context.CancelFunc
}

// startController runs a controller on loopback ports with the given store
// file, stopping it (and checking it stopped cleanly) at cleanup.
func startController(t *testing.T, yaml string) *env {
	t.Helper()
	return startControllerWith(t, yaml, func(dir string, cfg *Config) { cfg.StateDir = filepath.Join(dir, "state") })
}

// startControllerWith is startController with the CA settings chosen by
// setCA (dir is the test's directory).
func startControllerWith(t *testing.T, yaml string, setCA func(dir string, cfg *Config)) *env {
	t.Helper()
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(mesh, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{
		ConfigPath: mesh,
		Listen:     "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	setCA(dir, &cfg)
	c, err := Start(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controller stopped with %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("controller did not stop")
		}
	})
	// Trust comes from the file a proxy would get, not from memory.
	data, err := os.ReadFile(c.CA.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &env{c: c, dir: dir, mesh: mesh, anchor: pool, stop: cancel}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// clientTLS verifies the controller exactly as a proxy must: chain to the
// anchor and the controller's SPIFFE ID. Go's hostname check cannot express
// SPIFFE IDs, so it is replaced by pki.Verify, not skipped.
func clientTLS(anchors *x509.CertPool, clientCert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := pki.Verify(raw, anchors, x509.ExtKeyUsageServerAuth, identity.Controller("cluster.local"), time.Now())
			return err
		},
	}
	if clientCert != nil {
		// Always send it: Go would otherwise silently skip a certificate
		// whose issuer the server did not list as acceptable.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return clientCert, nil }
	}
	return cfg
}

func (e *env) dial(t *testing.T, clientCert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(e.c.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(e.anchor, clientCert))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// writeAtomic replaces the store file the way editors and `kubectl cp` do.
func (e *env) writeAtomic(t *testing.T, content string) {
	t.Helper()
	tmp := e.mesh + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, e.mesh); err != nil {
		t.Fatal(err)
	}
}

func (e *env) writeInPlace(t *testing.T, content string) {
	t.Helper()
	if err := os.WriteFile(e.mesh, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e *env) get(t *testing.T, path string) string {
	t.Helper()
	code, body := e.getStatus(t, path)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	return body
}

// getStatus returns the status code and body of an admin path.
func (e *env) getStatus(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + e.c.AdminAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// stream pumps a server stream into a channel so tests can wait with a bound.
type stream[T any] struct {
	ch     chan T
	errc   chan error
	cancel context.CancelFunc
}

func openStream[T any](t *testing.T, open func(ctx context.Context) (interface{ Recv() (T, error) }, error)) *stream[T] {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream[T]{ch: make(chan T, 64), errc: make(chan error, 1), cancel: cancel}
	st, err := open(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := st.Recv()
			if err != nil {
				s.errc <- err
				return
			}
			s.ch <- m
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func (s *stream[T]) next(t *testing.T) T {
	t.Helper()
	select {
	case m := <-s.ch:
		return m
	case err := <-s.errc:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	var zero T
	return zero
}

func destinationStream(t *testing.T, conn *grpc.ClientConn, path, caller string) *stream[*apiv1.Update] {
	t.Helper()
	client := apiv1.NewDestinationClient(conn)
	return openStream[*apiv1.Update](t, func(ctx context.Context) (interface {
		Recv() (*apiv1.Update, error)
	}, error) {
		return client.Get(ctx, &apiv1.GetDestination{Path: path, CallerIdentity: caller})
	})
}

// eventually polls cond, bounded in time.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue() + d.GetGauge().GetValue()
}
