package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/httpserve"
	"github.com/trellis-mesh/trellis/test/harness"
)

// Finding 4 of issue 9: the mesh is transparent. What one app sends is what
// the other receives, in both directions: every header (names, values,
// several values of one name in their order) and every body byte, except
// the hop-by-hop headers and the message framing, which each hop owns
// (docs/proxy.md, "What the mesh changes"). Nothing is added (no
// User-Agent, Accept-Encoding, Date or sniffed Content-Type of the
// proxies' own), nothing removed, nothing decompressed.
//
// The comparison is of HTTP semantics, not of bytes on the wire: the order
// of different field names and the framing (Content-Length or chunked, the
// Trailer declaration) may differ between hops.

// framing are the fields that describe a message's framing on one hop or
// are hop-by-hop (RFC 9110 7.6.1): they are not compared.
var framing = []string{"Content-Length", "Transfer-Encoding", "Trailer", "Connection", "Keep-Alive"}

// semantic returns h without the framing fields, with nil values (a
// header set to suppress a default) left out.
func semantic(h http.Header) http.Header {
	out := http.Header{}
	for k, vv := range h {
		if slices.Contains(framing, k) || vv == nil {
			continue
		}
		out[k] = slices.Clone(vv)
	}
	return out
}

// headerDiff describes how got differs from want ("" when equal).
func headerDiff(want, got http.Header) string {
	want, got = semantic(want), semantic(got)
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		w, okw := want[k]
		g, okg := got[k]
		switch {
		case okw && !okg:
			fmt.Fprintf(&b, "\n  removed %s: %q", k, w)
		case !okw && okg:
			fmt.Fprintf(&b, "\n  added   %s: %q", k, g)
		case !slices.Equal(w, g):
			fmt.Fprintf(&b, "\n  changed %s: %q -> %q", k, w, g)
		}
	}
	return b.String()
}

// seen is what the recording app received.
type seen struct {
	proto   int
	method  string
	host    string
	uri     string
	header  http.Header
	body    []byte
	trailer http.Header
	err     error
}

// recorder is an app (HTTP/1.1 and h2c on one port) that records each
// request exactly as its server parsed it and answers with a scripted
// response: the headers in resp (nil values suppress the server's own
// Date and Content-Type), body, and trailers.
type recorder struct {
	Addr string

	mu   sync.Mutex
	last map[string]seen // by path
	resp map[string]scripted
}

type scripted struct {
	header  http.Header
	body    []byte
	trailer http.Header // sent as undeclared trailers (TrailerPrefix)
	flush   bool        // flush before the body: unknown length
}

func startRecorder(t *testing.T, resp map[string]scripted) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Addr: ln.Addr().String(), last: map[string]seen{}, resp: resp}
	srv := httpserve.NewServer(http.HandlerFunc(rec.serve), true, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = httpserve.Serve(ctx, srv, ln, nil) }()
	t.Cleanup(func() { cancel(); _ = srv.Close(); <-done })
	return rec
}

func (rec *recorder) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	s := seen{proto: r.ProtoMajor, method: r.Method, host: r.Host, uri: r.RequestURI,
		header: r.Header.Clone(), body: body, trailer: r.Trailer.Clone(), err: err}
	rec.mu.Lock()
	rec.last[r.URL.Path] = s
	sc, ok := rec.resp[r.URL.Path]
	rec.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	for k, vv := range sc.header {
		w.Header()[k] = vv
	}
	w.WriteHeader(http.StatusOK)
	if sc.flush {
		_ = http.NewResponseController(w).Flush()
	}
	_, _ = w.Write(sc.body)
	for k, vv := range sc.trailer {
		w.Header()[http.TrailerPrefix+k] = vv
	}
}

func (rec *recorder) seen(path string) (seen, bool) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	s, ok := rec.last[path]
	return s, ok
}

// protoApp is one service of a protocol mesh: its app's address and the
// protocol its service port declares in the store.
type protoApp struct {
	Service  string
	Protocol string
	Addr     string
}

// protoMesh is a mesh of protoApps: the client proxy and, by service, the
// server proxies.
type protoMesh struct {
	mesh    *harness.Mesh
	client  *harness.Proxy
	servers map[string]*harness.Proxy
}

// startProtoMesh starts a controller, one server workload and proxy per
// app (service <name>.e2e:80) and a client proxy.
func startProtoMesh(t *testing.T, apps []protoApp) *protoMesh {
	t.Helper()
	requireBinaries(t)
	store := harness.Store{Workloads: []harness.Workload{{Name: "client", Namespace: ns, ServiceAccount: "client"}}}
	for _, a := range apps {
		store.Services = append(store.Services, harness.Service{Name: a.Service, Namespace: ns,
			Ports: []harness.ServicePort{{Port: 80, Protocol: a.Protocol}}})
		store.Workloads = append(store.Workloads, harness.Workload{Name: a.Service + "-w", Namespace: ns, ServiceAccount: a.Service,
			Endpoints: []harness.Endpoint{{Service: a.Service, Port: 80}}})
	}
	pm := &protoMesh{mesh: harness.NewMesh(t, bins, &ports, store), servers: map[string]*harness.Proxy{}}
	pm.mesh.StartController()
	for _, a := range apps {
		pm.servers[a.Service] = pm.mesh.StartProxy(harness.ProxySpec{Workload: a.Service + "-w", AppAddr: a.Addr})
	}
	pm.client = pm.mesh.StartProxy(harness.ProxySpec{Workload: "client"})
	waitReady(t, append(slices.Collect(maps.Values(pm.servers)), pm.client)...)
	return pm
}

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := io.WriteString(zw, s); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// grpcFrame is one length-prefixed gRPC message (uncompressed).
func grpcFrame(msg []byte) []byte {
	b := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:5], uint32(len(msg)))
	copy(b[5:], msg)
	return b
}

func TestSecurityTransparency(t *testing.T) {
	const authority = "rec.e2e:80"
	gz := gzipped(t, strings.Repeat("the mesh must not decompress this. ", 200))
	script := map[string]scripted{
		// A compressed body of known length, and no Date or Content-Type:
		// the app's server is told not to add them, so neither may a proxy.
		"/gzip": {header: http.Header{
			"Content-Encoding": {"gzip"},
			"X-Resp-Multi":     {"a", "b, c", "d"},
			"X-Resp-Empty":     {""},
			"Cache-Control":    {"no-store"},
			"Content-Length":   {fmt.Sprint(len(gz))},
			"Date":             nil,
			"Content-Type":     nil,
		}, body: gz},
		// A streamed body (unknown length) with trailers.
		"/stream": {header: http.Header{
			"X-Resp-Multi": {"z", "y"},
			"Date":         nil,
			"Content-Type": nil,
		}, body: []byte("<html>sniffable but not sniffed</html>"), trailer: http.Header{"X-Resp-Trailer": {"t1", "t2"}}, flush: true},
		// gRPC as the wire sees it: headers, a framed message, trailers.
		"/pkg.Svc/Method": {header: http.Header{
			"Content-Type": {"application/grpc"},
			"X-Md":         {"m1", "m2"},
			"Date":         nil,
		}, body: grpcFrame([]byte("reply")), trailer: http.Header{"Grpc-Status": {"0"}, "Grpc-Message": {"ok"}, "X-Trl": {"1", "2"}}, flush: true},
	}
	// tap: the same with taps capturing bodies open on both proxies.
	for _, run := range []string{"plain", "tap"} {
		t.Run(run, func(t *testing.T) {
			rec := startRecorder(t, script)
			pm := startProtoMesh(t, []protoApp{{Service: "rec", Addr: rec.Addr}})
			client := pm.client
			if run == "tap" {
				tapEverything(t, pm)
			}
			clients := map[string]*http.Client{
				"http1": meshClient(client.OutboundAddr, 30*time.Second),
				"h2c":   h2cClient(client.OutboundAddr, 30*time.Second),
			}
			for _, cname := range []string{"http1", "h2c"} {
				c := clients[cname]
				t.Run(cname+"/gzip", func(t *testing.T) {
					// No User-Agent, no Accept-Encoding (the client has
					// compression off), a known-length body.
					sent := bytes.Repeat([]byte{0, 1, 2, 0xff}, 40000)
					req := newTransparentRequest(t, authority, "/gzip?q=1&q=2", bytes.NewReader(sent))
					checkExchange(t, c, req, sent, rec, "/gzip", script["/gzip"], cname)
				})
				t.Run(cname+"/stream", func(t *testing.T) {
					// A body of unknown length with trailers, and a
					// User-Agent and Accept-Encoding the app must see
					// as they were sent.
					pr, pw := io.Pipe()
					go func() {
						_, _ = pw.Write([]byte("part one;"))
						_, _ = pw.Write([]byte("part two"))
						_ = pw.Close()
					}()
					req := newTransparentRequest(t, authority, "/stream", pr)
					req.Header["User-Agent"] = []string{"my-app/1.0"}
					req.Header["Accept-Encoding"] = []string{"br"}
					req.Trailer = http.Header{"X-Req-Trailer": {"r1", "r2"}}
					checkExchange(t, c, req, []byte("part one;part two"), rec, "/stream", script["/stream"], cname)
				})
			}
			t.Run("grpc", func(t *testing.T) {
				sent := grpcFrame([]byte("request"))
				req := newTransparentRequest(t, authority, "/pkg.Svc/Method", bytes.NewReader(sent))
				req.Header["Content-Type"] = []string{"application/grpc"}
				req.Header["Te"] = []string{"trailers"}
				req.Header["Grpc-Timeout"] = []string{"10S"}
				req.Header["User-Agent"] = []string{"grpc-go/1.70.0"}
				checkExchange(t, clients["h2c"], req, sent, rec, "/pkg.Svc/Method", script["/pkg.Svc/Method"], "h2c")
			})
		})
	}
}

// newTransparentRequest is a POST with multi-valued, empty and odd-spaced
// fields and no User-Agent (nil suppresses the Go client's own).
func newTransparentRequest(t *testing.T, authority, uri string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+authority+uri, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = http.Header{
		"X-Multi":    {"a", "b, c", "d"},
		"X-Spaces":   {"a  b\tc"},
		"X-Empty":    {""},
		"Accept":     {"*/*"},
		"User-Agent": nil,
	}
	return req
}

// checkExchange sends req, then compares what the app received with what
// was sent, and what the client received with what the app sent.
func checkExchange(t *testing.T, c *http.Client, req *http.Request, sentBody []byte, rec *recorder, path string, sc scripted, cname string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, trellis-error %q, body %q", resp.StatusCode, resp.Header.Get("Trellis-Error"), body)
	}

	// Request direction: client app -> client proxy -> server proxy -> app.
	got, ok := rec.seen(path)
	if !ok {
		t.Fatal("the app saw no request")
	}
	wantProto := 1
	if cname == "h2c" {
		wantProto = 2
	}
	if got.proto != wantProto {
		t.Errorf("app saw HTTP/%d, the client spoke HTTP/%d", got.proto, wantProto)
	}
	if got.method != req.Method || got.host != req.Host || got.uri != req.URL.RequestURI() {
		t.Errorf("app saw %s %s Host %s, sent %s %s Host %s", got.method, got.uri, got.host, req.Method, req.URL.RequestURI(), req.Host)
	}
	if d := headerDiff(req.Header, got.header); d != "" {
		t.Errorf("request headers the app received differ from those sent:%s", d)
	}
	if got.err != nil {
		t.Errorf("app reading the request body: %v", got.err)
	}
	if !bytes.Equal(got.body, sentBody) {
		t.Errorf("request body: app received %d bytes %q..., %d sent %q...", len(got.body), head(got.body), len(sentBody), head(sentBody))
	}
	if d := headerDiff(req.Trailer, got.trailer); d != "" {
		t.Errorf("request trailers the app received differ from those sent:%s", d)
	}

	// Response direction: app -> server proxy -> client proxy -> client.
	if d := headerDiff(sc.header, resp.Header); d != "" {
		t.Errorf("response headers the client received differ from those the app sent:%s", d)
	}
	if resp.Uncompressed {
		t.Error("the response was decompressed on the way")
	}
	if !bytes.Equal(body, sc.body) {
		t.Errorf("response body: client received %d bytes %q..., app sent %d bytes %q...", len(body), head(body), len(sc.body), head(sc.body))
	}
	if d := headerDiff(sc.trailer, resp.Trailer); d != "" {
		t.Errorf("response trailers the client received differ from those the app sent:%s", d)
	}
}

func head(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}
