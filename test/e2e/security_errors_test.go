package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/metadata"

	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"github.com/trellis-mesh/trellis/test/harness"
)

// Issue 9, findings 5 (errors name the wrong culprit), 11 (library logs a
// peer can flood) and 12 (client cancellations counted as failures).

const proxyErrorHeader = "Trellis-Proxy-Error"

// proxyErrorOf is the trellis-proxy-error value a proxy renders.
func proxyErrorOf(reason, culprit, direction string, px *harness.Proxy) string {
	return reason + "; culprit=" + culprit + "; proxy=" + direction + "; identity=" + px.Identity
}

// TestSecurityErrorsHeadersTooLarge: a request whose header list exceeds
// the mesh hop's limit is the client's fault: 431 from the client proxy,
// which says so, not 502 with x/net's words.
func TestSecurityErrorsHeadersTooLarge(t *testing.T) {
	b := newBasicMesh(t)
	c := meshClient(b.client.OutboundAddr, 20*time.Second)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+echoAuthority+"/", nil)
	// Under the outbound's HTTP/1 limit (1 MiB + 4 KiB for the whole head),
	// over the mesh hop's HTTP/2 header list limit (1 MiB + 320).
	req.Header.Set("X-Big", strings.Repeat("a", 1_050_000))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := proxyErrorOf("headers_too_large", "client", "outbound", b.client)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || resp.Header.Get(proxyErrorHeader) != want {
		t.Fatalf("got %s, %s %q, trellis-error %q, body %q; want 431 and %q", resp.Status, proxyErrorHeader,
			resp.Header.Get(proxyErrorHeader), resp.Header.Get("Trellis-Error"), truncate(body, 200), want)
	}
	if n := b.app.served.Load(); n != 0 {
		t.Errorf("the app served %d requests", n)
	}
	metricAtLeast(t, b.client, "trellis_request_errors_total", map[string]string{"direction": "outbound", "reason": "headers_too_large"}, 1, 5*time.Second)
}

// TestSecurityErrorsTruncatedBody: a client that announces a body and sends
// less is at fault: 400, whether the proxy buffers the body for a retry
// (small) or streams it (large).
func TestSecurityErrorsTruncatedBody(t *testing.T) {
	b := newBasicMesh(t)
	for _, size := range []int{1000, 200_000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", b.client.OutboundAddr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			fmt.Fprintf(conn, "POST /echo HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\nonly this", echoAuthority, size)
			_ = conn.(*net.TCPConn).CloseWrite()
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer to a truncated body: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.Header.Get(proxyErrorHeader), "bad_request_body; culprit=client; proxy=") {
				t.Fatalf("got %s, %s %q, trellis-error %q; want 400 bad_request_body (headers %v)", resp.Status, proxyErrorHeader,
					resp.Header.Get(proxyErrorHeader), resp.Header.Get("Trellis-Error"), resp.Header)
			}
		})
	}
}

// TestSecurityErrorsAppDownOrProxyDown: the client's app can tell the
// server's app being down (the server proxy says so, named) from the
// server proxy being down (the client proxy says so), and both proxies log
// the cause once, however many requests fail.
func TestSecurityErrorsAppDownOrProxyDown(t *testing.T) {
	testAppDownOrProxyDown(t, newBasicMesh(t))
}

func testAppDownOrProxyDown(t *testing.T, b *basicMesh) {
	c := meshClient(b.client.OutboundAddr, 20*time.Second)
	defer c.CloseIdleConnections()
	if resp, _, err := get(t.Context(), c, "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("warm-up: %v %v", resp, err)
	}
	start := time.Now()
	b.app.stop()
	const n = 20
	want := proxyErrorOf("app_unreachable", "app", "inbound", b.server)
	for i := range n {
		resp, body, err := get(t.Context(), c, "/")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(proxyErrorHeader) != want ||
			!strings.Contains(resp.Header.Get("Trellis-Error"), "connecting to app "+b.app.Addr) {
			t.Fatalf("request %d with the app down: %s, %s %q, trellis-error %q, body %q; want 502 and %q",
				i, resp.Status, proxyErrorHeader, resp.Header.Get(proxyErrorHeader), resp.Header.Get("Trellis-Error"), truncate(body, 200), want)
		}
	}
	// One info line per proxy for n failures of one cause (one more per
	// minute the test took).
	most := 1 + int(time.Since(start)/time.Minute)
	for _, px := range []*harness.Proxy{b.server, b.client} {
		lines := logLines(t, px, "level=INFO", "reason=app_unreachable")
		if len(lines) < 1 || len(lines) > most {
			t.Errorf("%s: %d info lines for reason=app_unreachable, want 1..%d:\n%s", px.Name, len(lines), most, strings.Join(lines, "\n"))
		}
	}

	// Now the server proxy itself is gone: another reason, from the client
	// proxy.
	b.server.Process.Kill()
	wantDown := proxyErrorOf("connect_error", "mesh", "outbound", b.client)
	var last string
	err := eventually(10*time.Second, func() error {
		resp, _, err := get(t.Context(), c, "/")
		if err != nil {
			return err
		}
		last = fmt.Sprintf("%s, %s %q, trellis-error %q", resp.Status, proxyErrorHeader, resp.Header.Get(proxyErrorHeader), resp.Header.Get("Trellis-Error"))
		if got := resp.Header.Get(proxyErrorHeader); resp.StatusCode != http.StatusBadGateway || got != wantDown {
			if strings.HasPrefix(got, "app_unreachable") {
				t.Fatalf("server proxy down reported as its app down: %s", last)
			}
			return fmt.Errorf("%s; want 502 and %q", last, wantDown)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server proxy down: %s", last)
	if lines := logLines(t, b.client, "level=INFO", "reason=connect_error"); len(lines) < 1 {
		t.Errorf("the client proxy did not log the connect error at info")
	}
}

// logLines returns the lines of px's log holding every part.
func logLines(t *testing.T, px *harness.Proxy, parts ...string) []string {
	t.Helper()
	data, err := os.ReadFile(px.Process.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
next:
	for _, l := range strings.Split(string(data), "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// TestSecurityErrorsLibraryLogs: broken HPACK and invalid frames sent to
// the inbound port (h2c) and the outbound port do not reach the proxies'
// output as plain x/net lines at the default level; they are counted.
func TestSecurityErrorsLibraryLogs(t *testing.T) {
	b := newBasicMesh(t)
	const rounds = 10
	for _, side := range []struct {
		px   *harness.Proxy
		addr string
		dir  string
	}{{b.server, b.server.InboundAddr, "inbound"}, {b.client, b.client.OutboundAddr, "outbound"}} {
		for range rounds {
			sendBrokenH2(t, side.addr, func(fr *http2.Framer) error {
				// Index 0 is never valid in HPACK: COMPRESSION_ERROR.
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x80}, EndHeaders: true, EndStream: true})
			})
			sendBrokenH2(t, side.addr, func(fr *http2.Framer) error {
				// DATA on stream 0: PROTOCOL_ERROR.
				return fr.WriteRawFrame(http2.FrameData, 0, 0, []byte("x"))
			})
		}
		for _, cause := range []string{"compression_error", "protocol_error"} {
			metricAtLeast(t, side.px, "trellis_protocol_errors_total", map[string]string{"direction": side.dir, "cause": cause}, rounds, 10*time.Second)
		}
	}
	for _, px := range []*harness.Proxy{b.server, b.client} {
		data, err := os.ReadFile(px.Process.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if !strings.HasPrefix(l, "time=") && !strings.HasPrefix(l, "=== ") {
				t.Errorf("%s: unstructured line in the output: %q", px.Name, l)
			}
			if strings.Contains(l, "http2:") {
				t.Errorf("%s: x/net line at the default level: %q", px.Name, l)
			}
		}
	}
}

// sendBrokenH2 opens an h2c connection, sends the preface and SETTINGS,
// then what write sends, and reads until the proxy closes it.
func sendBrokenH2(t *testing.T, addr string, write func(*http2.Framer) error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := write(fr); err != nil {
		t.Fatal(err)
	}
	// The proxy answers with GOAWAY and closes; read until then.
	_, _ = io.Copy(io.Discard, conn)
}

// TestSecurityErrorsClientCancellations: requests the calling app abandons
// in flight (HTTP/1.1 and gRPC) are counted as cancelled on both proxies,
// never as failures.
func TestSecurityErrorsClientCancellations(t *testing.T) {
	testClientCancellations(t, newBasicMesh(t))
}

func testClientCancellations(t *testing.T, b *basicMesh) {
	const n = 5
	c := meshClient(b.client.OutboundAddr, 60*time.Second)
	defer c.CloseIdleConnections()
	for i := range n {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			resp, _, err := get(ctx, c, "/slow?ms=30000")
			if err == nil {
				err = fmt.Errorf("answered %s", resp.Status)
			}
			done <- err
		}()
		select {
		case <-b.app.slowStarted:
		case <-time.After(20 * time.Second):
			t.Fatalf("request %d never reached the app", i)
		}
		cancel()
		if err := <-done; !isTimeoutOrCancel(err) {
			t.Fatalf("request %d: %v, want a cancellation", i, err)
		}
	}
	ec := demopb.NewEchoClient(dialGRPC(t, b.client.OutboundAddr))
	for i := range n {
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(t.Context(), "x-n", fmt.Sprint(i)))
		s, err := ec.BidiStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&demopb.EchoRequest{Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		cancel() // in flight: the app still waits for the next message
	}
	for _, side := range []struct {
		px  *harness.Proxy
		dir string
	}{{b.client, "outbound"}, {b.server, "inbound"}} {
		labels := map[string]string{"direction": side.dir, "dst_service": echoAuthority}
		with := func(k, v string) map[string]string {
			out := map[string]string{k: v}
			for k, v := range labels {
				out[k] = v
			}
			return out
		}
		ms := metricAtLeast(t, side.px, "trellis_responses_total", with("classification", "cancelled"), 2*n, 20*time.Second)
		if v := ms.Value("trellis_responses_total", with("classification", "failure")); v != 0 {
			t.Errorf("%s: %g failures for streams the client cancelled\n%s", side.dir, v, ms.Series("trellis_responses_total"))
		}
	}
}

// TestSecurityErrorsPeerIdentity: a peer that cannot prove the identity the
// control plane gave is a mesh fault the client proxy names as tls_error.
func TestSecurityErrorsPeerIdentity(t *testing.T) {
	requireBinaries(t)
	rogue := listenFakePeer(t)
	store := harness.Store{
		Services: []harness.Service{{Name: "rogue", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client"},
			{Name: "rogue", Namespace: ns, ServiceAccount: "rogue", ProxyAddr: rogue.Addr(), Endpoints: []harness.Endpoint{
				{Service: "rogue", Port: 80, TargetPort: 9},
			}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	chain, key := selfMadeChain(t, mustID(t, "rogue"))
	rogue.serve(t, chain, key)
	client := m.StartReadyProxy(harness.ProxySpec{Workload: "client"})
	c := meshClient(client.OutboundAddr, 20*time.Second)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://rogue.e2e:80/", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := proxyErrorOf("tls_error", "mesh", "outbound", client)
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(proxyErrorHeader) != want {
		t.Fatalf("got %s, %s %q, trellis-error %q; want 502 and %q", resp.Status, proxyErrorHeader,
			resp.Header.Get(proxyErrorHeader), resp.Header.Get("Trellis-Error"), want)
	}
	if h, b := rogue.handshakes.Load(), rogue.appBytes.Load(); h != 0 || b != 0 {
		t.Errorf("untrusted peer completed %d handshakes and got %d bytes", h, b)
	}
}
