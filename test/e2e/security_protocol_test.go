package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/demoapp/echo"
	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/test/harness"
)

// Finding 10 of issue 9: the service port's protocol decides the protocol
// towards the app. Each client (HTTP/1.1, h2c, gRPC) calls each app (one
// that speaks only HTTP/1.1, one only h2c, one both) through real proxies.
// Only gRPC to an HTTP/1.1-only app cannot work;
// it gets a 502 that says why.

// startEchoProto serves the echo handler (HTTP and gRPC) speaking only
// HTTP/1.1 ("http1"), only HTTP/2 with prior knowledge ("h2c"), or both.
func startEchoProto(t *testing.T, name, speaks string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := echo.NewHandler(echo.Config{Name: name, Log: slog.New(slog.DiscardHandler)})
	var p http.Protocols
	switch speaks {
	case "http1":
		p.SetHTTP1(true)
	case "h2c":
		p.SetUnencryptedHTTP2(true)
	default:
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
	}
	srv := &http.Server{Handler: h, Protocols: &p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { h.Stop(); _ = srv.Close() })
	return ln.Addr().String()
}

func TestSecurityProtocolHint(t *testing.T) {
	// service: app speaks -> the protocol its service port declares.
	apps := []struct{ service, speaks, protocol string }{
		{"only-h1", "http1", "http"},
		{"only-h2c", "h2c", "h2c"},
		{"both", "both", ""}, // no hint: the caller's protocol
	}
	var pa []protoApp
	for _, a := range apps {
		pa = append(pa, protoApp{Service: a.service, Protocol: a.protocol, Addr: startEchoProto(t, a.service, a.speaks)})
	}
	pm := startProtoMesh(t, pa)
	client := pm.client
	h1c := meshClient(client.OutboundAddr, 20*time.Second)
	h2c := h2cClient(client.OutboundAddr, 20*time.Second)
	for _, a := range apps {
		authority := a.service + ".e2e:80"
		wantProto := map[string]string{"http1": "HTTP/1.1", "h2c": "HTTP/2.0"}
		for _, c := range []struct {
			name string
			c    *http.Client
		}{{"http1", h1c}, {"h2c", h2c}} {
			t.Run(c.name+"-to-"+a.service, func(t *testing.T) {
				proto := wantProto[a.speaks]
				if a.speaks == "both" {
					proto = wantProto[c.name]
				}
				checkEchoHTTP(t, c.c, authority, proto)
			})
		}
		t.Run("grpc-to-"+a.service, func(t *testing.T) {
			if a.speaks == "http1" {
				checkGRPCRefused(t, client.OutboundAddr, h2c, authority)
				return
			}
			checkEchoGRPC(t, client.OutboundAddr, authority, a.service)
		})
	}
	t.Run("hint-is-hostile-input", func(t *testing.T) {
		checkHintHandling(t, pm, "only-h2c")
	})
	t.Run("routing-name-is-mesh-tls", func(t *testing.T) {
		checkRoutingName(t, pm, "only-h2c")
	})
}

// checkRoutingName: a mesh peer whose TLS server name is a routing name of
// this cluster (<port>.<svc>.<ns>.svc.cluster.local, what a client sends
// through a multicluster gateway) is taken for mesh TLS and reaches the
// app; the same peer with a name that is neither an identity nor a
// routing name is the app's own TLS, passed to the app untouched (which,
// speaking h2c, cannot answer it).
func checkRoutingName(t *testing.T, pm *protoMesh, service string) {
	t.Helper()
	server := pm.servers[service]
	get := func(sni string) (*http.Response, error) {
		c := meshPeerClientSNI(t, pm.mesh, server.InboundAddr, sni)
		c.Timeout = 5 * time.Second
		return c.Get("https://" + service + ".e2e:80/echo")
	}
	resp, err := get("80." + service + ".e2e.svc.cluster.local")
	if err != nil {
		t.Fatalf("mesh peer with a routing name: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Echo-Proto") != "HTTP/2.0" {
		t.Errorf("mesh peer with a routing name: status %d, proto %q, trellis-error %q; want 200 from the app", resp.StatusCode, resp.Header.Get("Echo-Proto"), resp.Header.Get("Trellis-Error"))
	}
	if resp, err := get("80." + service + ".e2e.svc.example.org"); err == nil {
		resp.Body.Close()
		t.Errorf("a routing name of another cluster domain was terminated by the proxy: status %d; want the app's own TLS (no answer)", resp.StatusCode)
	}
}

// checkEchoHTTP posts a streamed body with a trailer and checks the echo
// app answered it in proto, with the body and trailer intact.
func checkEchoHTTP(t *testing.T, c *http.Client, authority, proto string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte("hello "))
		_, _ = pw.Write([]byte("mesh"))
		_ = pw.Close()
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+authority+"/echo", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Trailer = http.Header{"X-Req-Trailer": {"t1"}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, trellis-error %q, body %q", resp.StatusCode, resp.Header.Get("Trellis-Error"), body)
	}
	if got := resp.Header.Get("Echo-Proto"); got != proto {
		t.Errorf("the app was spoken to in %q, want %q", got, proto)
	}
	if got := resp.Header.Get("Echo-Host"); got != authority {
		t.Errorf("the app saw Host %q, want %q", got, authority)
	}
	if !bytes.Contains(body, []byte("hello mesh")) {
		t.Errorf("body %q does not echo the request body", body)
	}
	if got := resp.Trailer.Get("X-Req-Trailer"); got != "t1" {
		t.Errorf("request trailer echoed as %q, want t1 (response trailers %v)", got, resp.Trailer)
	}
}

func checkEchoGRPC(t *testing.T, outbound, authority, served string) {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+outbound,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := demopb.NewEchoClient(cc).Unary(ctx, &demopb.EchoRequest{Payload: []byte("ping")})
	if err != nil {
		t.Fatalf("gRPC: %v", err)
	}
	if string(resp.GetPayload()) != "ping" || resp.GetServedBy() != served {
		t.Errorf("response %v", resp)
	}
}

// checkGRPCRefused: gRPC cannot reach an HTTP/1.1-only app. The gRPC client
// gets an error, and the HTTP response under it is a 502 whose
// trellis-error names the cause (not an HTTP/2 framing error).
func checkGRPCRefused(t *testing.T, outbound string, h2c *http.Client, authority string) {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+outbound,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = demopb.NewEchoClient(cc).Unary(ctx, &demopb.EchoRequest{Payload: []byte("ping")})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "gRPC needs HTTP/2") {
		t.Fatalf("gRPC to an HTTP/1.1-only app: %v; want UNAVAILABLE naming the protocol mismatch", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+authority+"/demo.Echo/Unary", bytes.NewReader(grpcFrame(nil)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	resp, err := h2c.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	why := resp.Header.Get("Trellis-Error")
	// Trailers-only: the proxy's own answer to a gRPC call.
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Grpc-Status") != "14" || !strings.Contains(why, "gRPC needs HTTP/2") {
		t.Errorf("status %d, grpc-status %q, trellis-error %q; want 200, 14 and the protocol mismatch", resp.StatusCode, resp.Header.Get("Grpc-Status"), why)
	}
}

// checkHintHandling sends trellis-app-proto to the server proxy of an
// h2c-only app straight: from a plain caller it is not honoured (the app is
// still spoken to in HTTP/2) and never reaches the app; from a mesh peer a
// value other than http1, http2 or grpc is refused with 400 naming it.
func checkHintHandling(t *testing.T, pm *protoMesh, service string) {
	t.Helper()
	server := pm.servers[service]
	authority := service + ".e2e:80"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	do := func(c *http.Client, scheme, value string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+authority+"/echo", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header["Trellis-App-Proto"] = []string{value}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, body
	}

	plain := h2cClient(server.InboundAddr, 20*time.Second)
	resp, body := do(plain, "http", "http1")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Echo-Proto") != "HTTP/2.0" {
		t.Errorf("plain caller's trellis-app-proto: status %d, app spoken to in %q (trellis-error %q, body %q); want 200 in HTTP/2.0",
			resp.StatusCode, resp.Header.Get("Echo-Proto"), resp.Header.Get("Trellis-Error"), body)
	}
	if v := resp.Header.Values("X-Echo-Trellis-App-Proto"); len(v) > 0 {
		t.Errorf("the app received trellis-app-proto %q", v)
	}

	peer := meshPeerClient(t, pm.mesh, server.InboundAddr, mustID(t, service))
	for _, bad := range []string{"bogus", "HTTP1", "http1, grpc", ""} {
		resp, body := do(peer, "https", bad)
		why := resp.Header.Get("Trellis-Error")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(why, "trellis-app-proto") {
			t.Errorf("mesh peer's trellis-app-proto %q: status %d, trellis-error %q (body %q); want 400 naming the header", bad, resp.StatusCode, why, body)
		}
	}
	// A valid value from a mesh peer is honoured: it is the peer's word.
	resp, body = do(peer, "https", "http2")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Echo-Proto") != "HTTP/2.0" {
		t.Errorf("mesh peer's trellis-app-proto http2: status %d, proto %q, body %q", resp.StatusCode, resp.Header.Get("Echo-Proto"), body)
	}
}

// meshPeerClient is an HTTP/2 client that presents a certificate the mesh's
// own issuer (from the controller's state directory) signed for the
// client workload, to the server proxy at inbound, as a client proxy would.
func meshPeerClient(t *testing.T, m *harness.Mesh, inbound string, server identity.ID) *http.Client {
	t.Helper()
	return meshPeerClientSNI(t, m, inbound, server.ServerName())
}

// meshPeerClientSNI is meshPeerClient sending sni as its TLS server name.
func meshPeerClientSNI(t *testing.T, m *harness.Mesh, inbound, sni string) *http.Client {
	t.Helper()
	chain, key := validChain(t, m.StateDir, mustID(t, "client"))
	cfg := &tls.Config{
		ServerName:         sni,
		NextProtos:         []string{"h2"},
		Certificates:       []tls.Certificate{{Certificate: chain, PrivateKey: key}},
		InsecureSkipVerify: true, // the server proxy is not what is under test here
		MinVersion:         tls.VersionTLS13,
	}
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := tls.Dialer{Config: cfg}
			return d.DialContext(ctx, "tcp", inbound)
		},
		TLSClientConfig:    cfg,
		ForceAttemptHTTP2:  true,
		DisableCompression: true,
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// validChain issues a certificate for id with the mesh's issuer, valid now.
func validChain(t *testing.T, stateDir string, id identity.ID) ([][]byte, crypto.Signer) {
	t.Helper()
	return issueChain(t, stateDir, id, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
}
