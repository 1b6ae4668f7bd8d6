package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/test/harness"
)

// controllerID is the identity the proxies accept as tap client: the
// default controller identity of the test trust domain.
func controllerID(t testing.TB, m *harness.Mesh) identity.ID {
	t.Helper()
	return identity.Controller(m.TrustDomain())
}

// tapTLS is the client side of the tap listener of px for clientID, with
// a certificate the mesh's issuer (the controller's state directory)
// signs here, as the controller's own would be.
func tapTLS(t testing.TB, m *harness.Mesh, clientID identity.ID, px *harness.Proxy) *tls.Config {
	t.Helper()
	chain, key := issueChain(t, m.StateDir, clientID, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	anchors, err := pki.ParseCertsPEM(mustRead(t, m.AnchorPath()))
	if err != nil {
		t.Fatal(err)
	}
	store, err := meshtls.NewStore(clientID, anchors)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetCertificate(chain, key); err != nil {
		t.Fatal(err)
	}
	sid, err := identity.Parse(px.Identity)
	if err != nil {
		t.Fatal(err)
	}
	return store.ClientConfig(sid, []string{"h2"})
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawCodec is the proto codec, keeping the bytes of every message
// received: what crossed the wire, for assertions on raw bytes.
type rawCodec struct {
	mu  sync.Mutex
	raw bytes.Buffer
}

func (c *rawCodec) Marshal(v any) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }
func (c *rawCodec) Name() string                  { return "proto" }
func (c *rawCodec) Unmarshal(data []byte, v any) error {
	c.mu.Lock()
	c.raw.Write(data)
	c.mu.Unlock()
	return proto.Unmarshal(data, v.(proto.Message))
}

func (c *rawCodec) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.raw.Bytes())
}

// tapStream is one open tap, its events collected as they come.
type tapStream struct {
	codec  rawCodec
	mu     sync.Mutex
	events []*apiv1.TapEvent
	err    error
	done   chan struct{}
	more   chan struct{}
	cancel context.CancelFunc
}

// stop closes the tap and waits for its reader.
func (ts *tapStream) stop() {
	ts.cancel()
	<-ts.done
}

// openTap opens a tap on px with cfg and collects its events until the
// test ends. The first Recv error (the refusal, for a refused client) is
// kept.
func openTap(t testing.TB, px *harness.Proxy, cfg *tls.Config, req *apiv1.ObserveRequest, opts ...grpc.DialOption) *tapStream {
	t.Helper()
	creds := grpc.WithTransportCredentials(insecureCreds())
	if cfg != nil {
		creds = grpc.WithTransportCredentials(credentials.NewTLS(cfg))
	}
	conn, err := grpc.NewClient(px.TapAddr, append([]grpc.DialOption{creds}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &tapStream{done: make(chan struct{}), more: make(chan struct{}, 1), cancel: cancel}
	t.Cleanup(func() { ts.stop(); _ = conn.Close() })
	stream, err := apiv1.NewTapClient(conn).Observe(ctx, req, grpc.ForceCodec(&ts.codec))
	go func() {
		defer close(ts.done)
		for err == nil {
			var ev *apiv1.TapEvent
			if ev, err = stream.Recv(); err == nil {
				ts.mu.Lock()
				ts.events = append(ts.events, ev)
				ts.mu.Unlock()
				select {
				case ts.more <- struct{}{}:
				default:
				}
			}
		}
		ts.mu.Lock()
		ts.err = err
		ts.mu.Unlock()
	}()
	return ts
}

// insecureCreds is plain TLS without a client certificate, trusting any
// server: an outsider.
func insecureCreds() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
}

// wait returns the events once pred holds of them (or fails past a
// generous ceiling), printing how long it took.
func (ts *tapStream) wait(t *testing.T, what string, pred func([]*apiv1.TapEvent) bool) []*apiv1.TapEvent {
	t.Helper()
	start := time.Now()
	deadline := time.After(30 * time.Second)
	for {
		ts.mu.Lock()
		evs := append([]*apiv1.TapEvent(nil), ts.events...)
		err := ts.err
		ts.mu.Unlock()
		if pred(evs) {
			t.Logf("tap: %s after %s", what, time.Since(start).Round(time.Millisecond))
			return evs
		}
		if err != nil {
			t.Fatalf("tap: waiting for %s: the stream ended: %v (%d events)", what, err, len(evs))
		}
		select {
		case <-ts.more:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("tap: no %s within 30s; %d events: %v", what, len(evs), evs)
		}
	}
}

// refusal waits for the stream's end and returns its error.
func (ts *tapStream) refusal(t *testing.T) error {
	t.Helper()
	select {
	case <-ts.done:
	case <-time.After(30 * time.Second):
		t.Fatal("a refused tap is still open after 30s")
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.events) > 0 {
		t.Errorf("a refused client received %d events", len(ts.events))
	}
	return ts.err
}

// exchanges groups events by id: complete ones have all three.
func exchanges(evs []*apiv1.TapEvent) map[uint64][]*apiv1.TapEvent {
	out := map[uint64][]*apiv1.TapEvent{}
	for _, ev := range evs {
		out[ev.Id] = append(out[ev.Id], ev)
	}
	return out
}

func ended(path string, n int) func([]*apiv1.TapEvent) bool {
	return func(evs []*apiv1.TapEvent) bool {
		count := 0
		for _, x := range exchanges(evs) {
			if len(x) == 3 && x[0].GetRequestInit().GetPath() == path && x[2].GetResponseEnd() != nil {
				count++
			}
		}
		return count >= n
	}
}

// exchangeOf is the first complete exchange of path.
func exchangeOf(t *testing.T, evs []*apiv1.TapEvent, path string) (*apiv1.TapEvent, *apiv1.TapEvent, *apiv1.TapEvent) {
	t.Helper()
	for _, x := range exchanges(evs) {
		if len(x) == 3 && x[0].GetRequestInit().GetPath() == path {
			return x[0], x[1], x[2]
		}
	}
	t.Fatalf("no complete exchange of %s in %v", path, evs)
	return nil, nil, nil
}

const tapSecret = "tap-s3cret-never-on-the-wire"

func tapScript() map[string]scripted {
	return map[string]scripted{
		"/books/1": {header: http.Header{"Set-Cookie": {"session=" + tapSecret}, "Content-Type": {"text/plain"}},
			body: []byte("the body of book one, longer than the limit")},
		"/pkg.Svc/Method": {header: http.Header{"Content-Type": {"application/grpc"}},
			body: grpcFrame([]byte("reply")), trailer: http.Header{"Grpc-Status": {"7"}, "Grpc-Message": {"denied"}}, flush: true},
		"/big": {header: http.Header{"Content-Type": {"application/octet-stream"}}, body: bytes.Repeat([]byte("x"), 4096)},
	}
}

// secretRequest is a request carrying credentials in every header a
// tap must never capture a value of.
func secretRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tapSecret)
	req.Header.Set("Proxy-Authorization", "Basic "+tapSecret)
	req.Header.Set("Cookie", "id="+tapSecret)
	req.Header.Set("X-Custom", tapSecret)
	return req
}

func do(t *testing.T, c *http.Client, req *http.Request) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d", req.URL, resp.StatusCode)
	}
}

// TestTap: the controller's identity receives the events of real
// requests from both proxies of a hop, with the right fields and never a
// header value; bodies only when asked, bounded.
func TestTap(t *testing.T) {
	rec := startRecorder(t, tapScript())
	pm := startProtoMesh(t, []protoApp{{Service: "rec", Addr: rec.Addr}})
	client, server := pm.client, pm.servers["rec"]
	ctrl := controllerID(t, pm.mesh)
	all := &apiv1.ObserveRequest{HeaderNames: true}
	out := openTap(t, client, tapTLS(t, pm.mesh, ctrl, client), all)
	in := openTap(t, server, tapTLS(t, pm.mesh, ctrl, server), all)
	bodies := openTap(t, server, tapTLS(t, pm.mesh, ctrl, server), &apiv1.ObserveRequest{BodyBytes: 8, Match: &apiv1.TapMatch{PathPrefix: "/books"}})
	onlyGRPC := openTap(t, client, tapTLS(t, pm.mesh, ctrl, client), &apiv1.ObserveRequest{Match: &apiv1.TapMatch{Method: "POST", PathPrefix: "/pkg."}})
	// The taps are live once the proxies count them open.
	waitOpen(t, client, 2)
	waitOpen(t, server, 2)
	c := meshClient(client.OutboundAddr, 30*time.Second)
	h2 := h2cClient(client.OutboundAddr, 30*time.Second)

	do(t, c, secretRequest(t, http.MethodPost, "http://rec.e2e:80/books/1?token="+tapSecret, strings.NewReader("request body over eight bytes")))
	g := secretRequest(t, http.MethodPost, "http://rec.e2e:80/pkg.Svc/Method", bytes.NewReader(grpcFrame([]byte("request"))))
	g.Header.Set("Content-Type", "application/grpc")
	g.Header.Set("Te", "trailers")
	do(t, h2, g)

	clientID, serverID := client.Identity, server.Identity
	for _, tc := range []struct {
		ts    *tapStream
		dir   string
		dest  string
		names []string
	}{
		{out, "outbound", server.InboundAddr, []string{"authorization", "cookie", "proxy-authorization", "x-custom"}},
		// Proxy-Authorization is hop-by-hop: the client proxy drops it.
		{in, "inbound", rec.Addr, []string{"authorization", "cookie", "x-custom"}},
	} {
		evs := tc.ts.wait(t, tc.dir+" events of /books/1 and the gRPC call", func(evs []*apiv1.TapEvent) bool {
			return ended("/books/1", 1)(evs) && ended("/pkg.Svc/Method", 1)(evs)
		})
		ri, rs, re := exchangeOf(t, evs, "/books/1")
		for _, ev := range []*apiv1.TapEvent{ri, rs, re} {
			t.Logf("%s event: %s", tc.dir, protojson.Format(ev))
			if ev.Direction != tc.dir || ev.SourceIdentity != clientID || ev.DestinationIdentity != serverID || !ev.Tls ||
				ev.Destination != tc.dest || ev.Time == nil || ev.Pod != "" {
				t.Errorf("%s: common fields %v", tc.dir, ev)
			}
			if tc.dir == "outbound" && ev.Route != "rec.e2e:80" {
				t.Errorf("outbound route %q", ev.Route)
			}
		}
		r := ri.GetRequestInit()
		if r.Method != "POST" || r.Path != "/books/1" || r.Authority != "rec.e2e:80" ||
			!hasAll(r.HeaderNames, tc.names...) || hasAny(r.HeaderNames, "trellis-orig-proto") {
			t.Errorf("%s: request_init %v", tc.dir, r)
		}
		if s := rs.GetResponseInit(); s.HttpStatus != 200 || !hasAll(s.HeaderNames, "set-cookie", "content-type") {
			t.Errorf("%s: response_init %v", tc.dir, s)
		}
		e := re.GetResponseEnd()
		if e.GrpcStatus != -1 || e.ResponseBytes != uint64(len(tapScript()["/books/1"].body)) || e.RequestBytes != 29 ||
			e.Error != "" || e.RequestBody != nil || e.ResponseBody != nil || e.SinceRequestInit.AsDuration() < e.SinceResponseInit.AsDuration() {
			t.Errorf("%s: response_end %v", tc.dir, e)
		}
		_, _, ge := exchangeOf(t, evs, "/pkg.Svc/Method")
		if ge.GetResponseEnd().GrpcStatus != 7 {
			t.Errorf("%s: grpc_status %v, want 7 (from the trailers)", tc.dir, ge)
		}
		if raw := tc.ts.codec.bytes(); bytes.Contains(raw, []byte(tapSecret)) || len(raw) == 0 {
			t.Errorf("%s: a header value or the query is in the tap stream's %d bytes", tc.dir, len(raw))
		}
	}
	// Bodies: only that tap, bounded to its 8 bytes.
	evs := bodies.wait(t, "the body tap's /books/1", ended("/books/1", 1))
	_, _, re := exchangeOf(t, evs, "/books/1")
	if e := re.GetResponseEnd(); string(e.RequestBody) != "request " || !e.RequestBodyTruncated ||
		string(e.ResponseBody) != "the body" || !e.ResponseBodyTruncated {
		t.Errorf("bodies %q %v %q %v", e.RequestBody, e.RequestBodyTruncated, e.ResponseBody, e.ResponseBodyTruncated)
	}
	for _, ev := range evs {
		if p := ev.GetRequestInit().GetPath(); p != "" && !strings.HasPrefix(p, "/books") {
			t.Errorf("the /books tap got %s", p)
		}
	}
	// The filtered tap: only the gRPC call.
	evs = onlyGRPC.wait(t, "the gRPC-only tap's call", ended("/pkg.Svc/Method", 1))
	for _, ev := range evs {
		if p := ev.GetRequestInit().GetPath(); p != "" && p != "/pkg.Svc/Method" {
			t.Errorf("the gRPC-only tap got %s", p)
		}
	}
}

func hasAll(names []string, want ...string) bool {
	for _, w := range want {
		if !hasAny(names, w) {
			return false
		}
	}
	return true
}

func hasAny(names []string, want ...string) bool {
	for _, n := range names {
		for _, w := range want {
			if n == w {
				return true
			}
		}
	}
	return false
}

// TestTapRefusals: only the controller's identity may tap; a workload's
// identity, a client without a certificate and one from another CA are
// refused (and counted), and get no event.
func TestTapRefusals(t *testing.T) {
	b := newBasicMesh(t)
	px := b.server
	workload := mustID(t, "client")
	rogueChain, rogueKey := selfMadeChain(t, controllerID(t, b.mesh))
	rogue := tapTLS(t, b.mesh, controllerID(t, b.mesh), px)
	rogue.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &tls.Certificate{Certificate: rogueChain, PrivateKey: rogueKey}, nil
	}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"workload identity", tapTLS(t, b.mesh, workload, px)},
		{"no certificate", nil},
		{"controller identity from another CA", rogue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tapMetric(t, px, "trellis_tap_refused_total")
			ts := openTap(t, px, tc.cfg, &apiv1.ObserveRequest{})
			err := ts.refusal(t)
			if code := status.Code(err); code != codes.Unavailable && code != codes.PermissionDenied {
				t.Errorf("refused with %v, want Unavailable (handshake) or PermissionDenied", err)
			}
			// The client may see the alert before the proxy counts.
			after := tapMetric(t, px, "trellis_tap_refused_total")
			for start := time.Now(); after <= before && time.Since(start) < 10*time.Second; {
				time.Sleep(20 * time.Millisecond)
				after = tapMetric(t, px, "trellis_tap_refused_total")
			}
			if after <= before {
				t.Errorf("trellis_tap_refused_total %v -> %v: the refusal was not counted", before, after)
			}
			t.Logf("refused: %v", err)
		})
	}
	// The controller's identity is served (the same listener).
	ts := openTap(t, px, tapTLS(t, b.mesh, controllerID(t, b.mesh), px), &apiv1.ObserveRequest{})
	c := meshClient(b.client.OutboundAddr, 30*time.Second)
	ts.wait(t, "the controller's first event", func(evs []*apiv1.TapEvent) bool {
		if len(evs) == 0 {
			do(t, c, secretRequest(t, http.MethodGet, "http://"+echoAuthority+"/", nil))
		}
		return len(evs) > 0
	})
}

func tapMetric(t testing.TB, px *harness.Proxy, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ms, err := px.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := ms.Sum(name, nil)
	return v
}

// TestTapBlockedClient: a tap client that stops reading costs the
// requests nothing: they all succeed, and the proxy drops (and counts)
// the events it cannot queue.
func TestTapBlockedClient(t *testing.T) {
	rec := startRecorder(t, tapScript())
	pm := startProtoMesh(t, []protoApp{{Service: "rec", Addr: rec.Addr}})
	client := pm.client
	c := meshClient(client.OutboundAddr, 30*time.Second)
	run := func(n int) time.Duration {
		start := time.Now()
		for range n {
			do(t, c, secretRequest(t, http.MethodGet, "http://rec.e2e:80/big", nil))
		}
		return time.Since(start)
	}
	const n = 600
	free := run(n)
	// A client that opens a tap of big events and never reads: small
	// fixed HTTP/2 windows (no BDP growth), so the proxy's sends block.
	cfg := tapTLS(t, pm.mesh, controllerID(t, pm.mesh), client)
	conn, err := grpc.NewClient(client.TapAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithInitialWindowSize(65535), grpc.WithInitialConnWindowSize(65535))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := apiv1.NewTapClient(conn).Observe(ctx, &apiv1.ObserveRequest{MaxRps: 1000, BodyBytes: 4096}); err != nil {
		t.Fatal(err)
	}
	waitOpen(t, client, 1)
	blocked := run(n)
	t.Logf("%d requests: %s with no tap, %s with a blocked tap open", n, free.Round(time.Millisecond), blocked.Round(time.Millisecond))
	ctxm, cancelm := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelm()
	ms, err := client.Metrics(ctxm)
	if err != nil {
		t.Fatal(err)
	}
	queue := ms.Value("trellis_tap_events_dropped_total", map[string]string{"reason": "queue"})
	sent := ms.Value("trellis_tap_events_total", nil)
	if queue == 0 {
		t.Errorf("no event dropped for the blocked client (%v queued)", sent)
	}
	t.Logf("events queued %v, dropped for the blocked client %v", sent, queue)
}

// waitOpen waits until px serves n taps (trellis_tap_streams; n = 0:
// none).
func waitOpen(t testing.TB, px *harness.Proxy, n float64) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		if v := tapMetric(t, px, "trellis_tap_streams"); v >= n && (n > 0 || v == 0) {
			t.Logf("%s: %v taps open after %s", px.Name, n, time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %v taps not open within 30s", px.Name, n)
}

// TestTapTooMany: the proxy serves a bounded number of taps and says so.
func TestTapTooMany(t *testing.T) {
	b := newBasicMesh(t)
	px := b.server
	cfg := tapTLS(t, b.mesh, controllerID(t, b.mesh), px)
	conn, err := grpc.NewClient(px.TapAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 16 {
		if _, err := apiv1.NewTapClient(conn).Observe(ctx, &apiv1.ObserveRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	waitOpen(t, px, 16)
	s, err := apiv1.NewTapClient(conn).Observe(ctx, &apiv1.ObserveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "16") {
		t.Errorf("the 17th tap: %v, want ResourceExhausted naming the maximum", err)
	}
	if v := tapMetric(t, px, "trellis_tap_refused_total"); v != 1 {
		t.Errorf("trellis_tap_refused_total = %v, want 1", v)
	}
}

// tapEverything opens, on every proxy of pm, a tap of every request with
// header names and the largest body capture, and checks at the end of the
// test that it did see requests: the transparency test's requests are
// then checked with taps open.
func tapEverything(t *testing.T, pm *protoMesh) {
	t.Helper()
	ctrl := controllerID(t, pm.mesh)
	req := &apiv1.ObserveRequest{HeaderNames: true, BodyBytes: 65536, MaxRps: 1000}
	for _, px := range append([]*harness.Proxy{pm.client}, slices.Collect(maps.Values(pm.servers))...) {
		ts := openTap(t, px, tapTLS(t, pm.mesh, ctrl, px), req)
		waitOpen(t, px, 1)
		t.Cleanup(func() {
			ts.mu.Lock()
			n := len(ts.events)
			ts.mu.Unlock()
			if n == 0 && !t.Failed() {
				t.Errorf("%s: the tap saw no request", px.Name)
			}
		})
	}
}
