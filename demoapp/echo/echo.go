// Package echo is a server for tests and benchmarks of the mesh: HTTP/1.1,
// h2c (prior knowledge) and gRPC on one port.
//
// HTTP endpoints:
//
//	/               a 64-byte body
//	/echo           echoes the request: body; each request header as a
//	                response header prefixed "X-Echo-"; Echo-Method,
//	                Echo-Proto and Echo-Host; request trailers as response
//	                trailers
//	/status/{code}  answers with that status (200..599)
//	/slow?ms=N      answers after N ms
//	/stream?chunks=N&ms=M  N chunks, each flushed, M ms apart
//	/healthz        "ok"
//	/admin          "admin ok" (a stand-in privileged endpoint for
//	                per-route authorization tests)
//
// With Config.SlowStart every request but /healthz waits SlowStart.Delay
// during the first SlowStart.For after the first request (Config.Clock).
//
// With Config.AccessLog every request (gRPC calls too) is logged at info
// as "access" with its method, URI, protocol, remote address and
// User-Agent: the end-to-end suites read it to prove which calls reached
// the app and which never did.
//
// Requests with content-type application/grpc over HTTP/2 go to the Echo
// gRPC service (see demoapp/pb/demo.proto). Every response carries
// Echo-Served-By (HTTP) or the header metadata echo-served-by (gRPC).
package echo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/faults"
	"github.com/trellis-mesh/trellis/demoapp/httpserve"
	"google.golang.org/grpc"
)

// rootBody is the body of GET / without its final newline.
var rootBody = bytes.Repeat([]byte("x"), 63)

// RootBodySize is the length of the body of GET / (63 bytes and a newline).
const RootBodySize = 64

// Config configures an echo server.
type Config struct {
	Name   string           // sent as Echo-Served-By / echo-served-by
	Faults *faults.Injector // nil: never fail
	Log    *slog.Logger
	// AccessLog logs every request the app receives.
	AccessLog bool
	// Clock marks the first request (health checks too): the start of
	// the Faults' limit and of SlowStart. Nil: neither is limited.
	Clock *faults.Clock
	// SlowStart delays every request but /healthz during its window (nil:
	// never).
	SlowStart *faults.SlowStart
}

// Handler serves HTTP/1.1, h2c and gRPC requests.
type Handler struct {
	cfg  Config
	mux  *http.ServeMux
	grpc *grpc.Server
}

// NewHandler returns the echo handler. Serve it with an http.Server that
// allows unencrypted HTTP/2 (httpserve.NewServer(h, true, log)) for h2c and
// gRPC.
func NewHandler(cfg Config) *Handler {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.grpc = grpc.NewServer()
	registerGRPC(h.grpc, cfg)
	h.mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	h.mux.HandleFunc("/admin", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "admin ok\n")
	})
	h.mux.HandleFunc("/{$}", h.root)
	h.mux.HandleFunc("/echo", h.echo)
	h.mux.HandleFunc("/status/{code}", h.status)
	h.mux.HandleFunc("/slow", h.slow)
	h.mux.HandleFunc("/stream", h.stream)
	return h
}

// ServeHTTP dispatches gRPC requests to the gRPC server and the rest to the
// HTTP endpoints.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.cfg.Clock.Mark()
	if h.cfg.AccessLog {
		h.cfg.Log.Info("access", "method", r.Method, "uri", r.RequestURI, "proto", r.Proto,
			"remote", r.RemoteAddr, "ua", r.UserAgent())
	}
	// The readiness probe stays fast: the pod becomes ready while slow.
	if r.URL.Path != "/healthz" && !h.cfg.SlowStart.Serve(r.Context()) {
		return
	}
	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		h.grpc.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Echo-Served-By", h.cfg.Name)
	if r.URL.Path != "/healthz" && h.cfg.Faults.Fail() {
		http.Error(w, "injected failure", http.StatusInternalServerError)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// Stop ends the in-flight gRPC calls.
func (h *Handler) Stop() { h.grpc.Stop() }

func (h *Handler) root(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", fmt.Sprint(RootBodySize))
	_, _ = w.Write(rootBody)
	_, _ = w.Write([]byte{'\n'})
}

// maxBufferedEcho is how much of a request body /echo reads before it
// starts answering. Bodies up to this size are read whole first, which
// suits clients that send everything before reading; larger ones are
// streamed back while they arrive (full duplex).
const maxBufferedEcho = 1 << 20

func (h *Handler) echo(w http.ResponseWriter, r *http.Request) {
	head, err := io.ReadAll(io.LimitReader(r.Body, maxBufferedEcho+1))
	if err != nil {
		h.cfg.Log.Debug("echo: reading body", "err", err)
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	streaming := len(head) > maxBufferedEcho
	if streaming {
		// HTTP/1 servers stop reading the body once the response starts
		// unless full duplex is on; HTTP/2 always is (and says so with an
		// error we ignore).
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	hdr := w.Header()
	for k, vs := range r.Header {
		hdr["X-Echo-"+k] = append([]string(nil), vs...)
	}
	hdr.Set("Echo-Method", r.Method)
	hdr.Set("Echo-Proto", r.Proto)
	hdr.Set("Echo-Host", r.Host)
	if ct := r.Header.Get("Content-Type"); ct != "" {
		hdr.Set("Content-Type", ct)
	} else {
		hdr.Set("Content-Type", "application/octet-stream")
	}
	if !streaming {
		// The body was read to EOF, so its trailers are known: declaring
		// them makes HTTP/1.1 answer chunked, the only framing that can
		// carry trailers, even for a small body.
		for k := range r.Trailer {
			hdr.Add("Trailer", k)
		}
	}
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(head); err != nil {
		return
	}
	if streaming {
		if _, err := io.Copy(w, r.Body); err != nil {
			h.cfg.Log.Debug("echo: copying body", "err", err)
			return
		}
	}
	// Trailers are known only after the body has been read to EOF;
	// TrailerPrefix lets us send ones we did not declare up front.
	for k, vs := range r.Trailer {
		for _, v := range vs {
			hdr.Add(http.TrailerPrefix+k, v)
		}
	}
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	code, err := ParseStatus(r.PathValue("code"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, "%d %s\n", code, http.StatusText(code))
}

func (h *Handler) slow(w http.ResponseWriter, r *http.Request) {
	ms, err := ParseSlow(r.URL.RawQuery)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !faults.Sleep(r.Context(), time.Duration(ms)*time.Millisecond) {
		return
	}
	_, _ = fmt.Fprintf(w, "slept %d ms\n", ms)
}

func (h *Handler) stream(w http.ResponseWriter, r *http.Request) {
	p, err := ParseStream(r.URL.RawQuery)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	for i := 0; i < p.Chunks; i++ {
		if i > 0 && !faults.Sleep(r.Context(), time.Duration(p.MS)*time.Millisecond) {
			return
		}
		if _, err := fmt.Fprintf(w, "chunk %d\n", i); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// Serve runs an echo server on ln until ctx ends, then shuts it down
// gracefully.
func Serve(ctx context.Context, ln net.Listener, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	h := NewHandler(cfg)
	srv := httpserve.NewServer(h, true, cfg.Log)
	defer h.Stop()
	return httpserve.Serve(ctx, srv, ln, nil)
}
