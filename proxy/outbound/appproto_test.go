package outbound_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
)

// TestUnmeshedEndpointProtocol: an endpoint outside the mesh is spoken to
// by the client proxy itself, in the protocol its hint names, and receives
// no trellis-* header and no User-Agent of the proxy's own.
func TestUnmeshedEndpointProtocol(t *testing.T) {
	type seen struct {
		proto  string
		header http.Header
	}
	got := make(chan seen, 4)
	// net/http without TLS and without Protocols: HTTP/1.1 only.
	p := newPair(t, pairOpts{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got <- seen{proto: r.Proto, header: r.Header.Clone()}
		_, _ = io.WriteString(w, "ok")
	})})
	p.bal.Update([]balance.Endpoint{{Addr: p.appAddr, Weight: 1, Protocol: apiv1.ProtocolHint_HTTP1}})

	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{
		Protocols:          &h2,
		DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", p.outAddr)
		},
	}}
	defer h2c.CloseIdleConnections()

	for _, tc := range []struct {
		name string
		c    *http.Client
	}{{"http1", p.client}, {"h2c", h2c}} {
		req, _ := http.NewRequest(http.MethodGet, url("/"), nil)
		req.Header["User-Agent"] = nil
		resp, err := tc.c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body := readAll(t, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || body != "ok" {
			t.Fatalf("%s: status %d body %q trellis-error %q", tc.name, resp.StatusCode, body, resp.Header.Get("Trellis-Error"))
		}
		s := <-got
		if s.proto != "HTTP/1.1" {
			t.Errorf("%s client: the HTTP/1.1-only app was spoken to in %s", tc.name, s.proto)
		}
		for k, v := range s.header {
			if strings.HasPrefix(k, "Trellis-") || k == "User-Agent" || k == "Accept-Encoding" {
				t.Errorf("%s client: the app received %s: %q", tc.name, k, v)
			}
		}
	}

	// gRPC cannot reach it: refused with the reason, never sent.
	req, _ := http.NewRequest(http.MethodPost, url("/pkg.Svc/M"), strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := h2c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	// The proxy's answer to a gRPC call is a grpc-status (trailers-only)
	// with its reason as grpc-message, which a gRPC client shows.
	if why, msg := resp.Header.Get("Trellis-Error"), resp.Header.Get("Grpc-Message"); resp.StatusCode != http.StatusOK ||
		resp.Header.Get("Grpc-Status") != "14" || !strings.Contains(why, "gRPC needs HTTP/2") || !strings.Contains(msg, "gRPC needs HTTP/2") {
		t.Errorf("gRPC to an HTTP/1.1-only endpoint: status %d, grpc-status %q, grpc-message %q, trellis-error %q", resp.StatusCode, resp.Header.Get("Grpc-Status"), msg, why)
	}
	if n := counter(t, p.outReg, "trellis_request_errors_total", map[string]string{"reason": "protocol_mismatch"}); n != 1 {
		t.Errorf("protocol_mismatch errors = %g, want 1", n)
	}
	select {
	case s := <-got:
		t.Errorf("the app received the gRPC request (%s)", s.proto)
	default:
	}
}
