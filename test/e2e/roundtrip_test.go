package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestRoundTrips sends every kind of traffic through client proxy -> mTLS ->
// server proxy -> app and checks that it arrives intact.
func TestRoundTrips(t *testing.T) { testRoundTrips(t, newBasicMesh(t)) }

func testRoundTrips(t *testing.T, b *basicMesh) {
	c := meshClient(b.client.OutboundAddr, 30*time.Second)
	ctx := t.Context()

	t.Run("http1/headers-body-host", func(t *testing.T) {
		body := "hello, mesh"
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+echoAuthority+"/echo", strings.NewReader(body))
		req.Header.Set("Content-Type", "text/x-e2e")
		req.Header.Add("X-Custom", "one")
		req.Header.Add("X-Custom", "two")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || string(got) != body {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, got, body)
		}
		if v := resp.Header.Values("X-Echo-X-Custom"); strings.Join(v, ",") != "one,two" {
			t.Errorf("app saw X-Custom %q, want one,two", v)
		}
		if h := resp.Header.Get("Echo-Host"); h != echoAuthority {
			t.Errorf("app saw Host %q, want %q", h, echoAuthority)
		}
		if p := resp.Header.Get("Echo-Proto"); p != "HTTP/1.1" {
			t.Errorf("app saw proto %q, want HTTP/1.1 restored", p)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/x-e2e" {
			t.Errorf("Content-Type %q, want text/x-e2e", ct)
		}
		if s := resp.Header.Get("Echo-Served-By"); s != "echo-1" {
			t.Errorf("served by %q, want echo-1", s)
		}
		for k := range resp.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-echo-trellis-") {
				t.Errorf("mesh header leaked to the app: %s", k)
			}
		}
	})

	t.Run("http1/chunked-trailers", func(t *testing.T) {
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+echoAuthority+"/echo", pr)
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Req-Trailer": nil}
		// Each chunk is 2 KiB, so that the echo's response exceeds
		// net/http's 4 KiB buffer and is chunked too: a response that fits
		// the buffer gets a Content-Length and cannot carry trailers.
		var want strings.Builder
		go func() {
			for i := range 5 {
				chunk := fmt.Sprintf("chunk-%d;", i) + strings.Repeat("z", 2040)
				fmt.Fprint(pw, chunk)
				time.Sleep(10 * time.Millisecond)
			}
			req.Trailer.Set("X-Req-Trailer", "tval")
			pw.Close()
		}()
		for i := range 5 {
			want.WriteString(fmt.Sprintf("chunk-%d;", i) + strings.Repeat("z", 2040))
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want.String() {
			t.Fatalf("body of %d bytes differs from the %d sent", len(got), want.Len())
		}
		if v := resp.Trailer.Get("X-Req-Trailer"); v != "tval" {
			t.Errorf("response trailer X-Req-Trailer = %q, want tval (trailers: %v)", v, resp.Trailer)
		}
	})

	t.Run("http1/100-continue", func(t *testing.T) {
		var got100 bool
		trace := &httptrace.ClientTrace{Got100Continue: func() { got100 = true }}
		body := strings.Repeat("c", 1000)
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPut, "http://"+echoAuthority+"/echo", strings.NewReader(body))
		req.Header.Set("Expect", "100-continue")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(got) != body {
			t.Fatalf("got %d, %d bytes; want 200 and the body back", resp.StatusCode, len(got))
		}
		if !got100 {
			t.Error("no 100 Continue before the body (client waited 10s and sent it anyway)")
		}
	})

	t.Run("http1/10MiB", func(t *testing.T) {
		bigEcho(t, ctx, c)
	})

	t.Run("h2c/prior-knowledge", func(t *testing.T) {
		hc := h2cClient(b.client.OutboundAddr, 30*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+echoAuthority+"/echo", strings.NewReader("h2 body"))
		req.Header.Set("X-Custom", "h2")
		req.Trailer = http.Header{"X-H2-Trailer": []string{"t2"}}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Errorf("client spoke %s to the proxy, want HTTP/2", resp.Proto)
		}
		if resp.StatusCode != 200 || string(got) != "h2 body" {
			t.Fatalf("got %d %q", resp.StatusCode, got)
		}
		if p := resp.Header.Get("Echo-Proto"); p != "HTTP/2.0" {
			t.Errorf("app saw %q, want HTTP/2.0", p)
		}
		if h := resp.Header.Get("Echo-Host"); h != echoAuthority {
			t.Errorf("app saw :authority %q, want %q", h, echoAuthority)
		}
		if v := resp.Header.Get("X-Echo-X-Custom"); v != "h2" {
			t.Errorf("app saw X-Custom %q", v)
		}
		if v := resp.Trailer.Get("X-H2-Trailer"); v != "t2" {
			t.Errorf("trailer %q, want t2 (trailers %v)", v, resp.Trailer)
		}
		hc.CloseIdleConnections()
	})

	t.Run("h2c/10MiB", func(t *testing.T) {
		hc := h2cClient(b.client.OutboundAddr, 60*time.Second)
		defer hc.CloseIdleConnections()
		bigEcho(t, ctx, hc)
	})

	t.Run("grpc", func(t *testing.T) {
		testGRPC(t, ctx, b.client.OutboundAddr)
	})

	t.Run("opaque-tcp-connect", func(t *testing.T) {
		testConnect(t, b.client.OutboundAddr)
	})

	t.Run("cancelled-request", func(t *testing.T) {
		// Drain what earlier subtests left.
		for len(b.app.slowStarted) > 0 {
			<-b.app.slowStarted
		}
		rctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, _, err := get(rctx, c, "/slow?ms=20000")
			errc <- err
		}()
		select {
		case <-b.app.slowStarted:
		case <-time.After(10 * time.Second):
			cancel()
			t.Fatal("the slow request never reached the app")
		}
		cancel()
		select {
		case err := <-errc:
			if err == nil || !isTimeoutOrCancel(err) {
				t.Errorf("cancelled request: err = %v, want a cancellation", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the client did not return after cancel")
		}
		select {
		case <-b.app.cancelled:
		case <-time.After(10 * time.Second):
			t.Fatal("the cancellation did not reach the app within 10s (request kept running behind the proxies)")
		}
		// The mesh still serves afterwards.
		resp, _, err := get(ctx, c, "/")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request after a cancelled one: %v %v", resp, err)
		}
	})
	c.CloseIdleConnections()
}

func bigEcho(t *testing.T, ctx context.Context, c *http.Client) {
	t.Helper()
	data := make([]byte, 10<<20)
	_, _ = rand.Read(data)
	want := sha256.Sum256(data)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+echoAuthority+"/echo", bytes.NewReader(data))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("reading the echoed body after %d bytes: %v", n, err)
	}
	if resp.StatusCode != 200 || n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("got %d, %d bytes (sha ok=%v), want 200 and %d identical bytes", resp.StatusCode, n, bytes.Equal(h.Sum(nil), want[:]), len(data))
	}
}

func dialGRPC(t *testing.T, outbound string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+outbound,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(echoAuthority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func testGRPC(t *testing.T, ctx context.Context, outbound string) {
	cc := dialGRPC(t, outbound)
	ec := demopb.NewEchoClient(cc)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	mdCtx := metadata.AppendToOutgoingContext(ctx, "x-md", "v1")

	t.Run("unary", func(t *testing.T) {
		var hdr, tlr metadata.MD
		resp, err := ec.Unary(mdCtx, &demopb.EchoRequest{Payload: []byte("ping")}, grpc.Header(&hdr), grpc.Trailer(&tlr))
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.GetPayload()) != "ping" || resp.GetServedBy() != "echo-1" {
			t.Errorf("response %v", resp)
		}
		if v := hdr.Get("x-echo-x-md"); len(v) != 1 || v[0] != "v1" {
			t.Errorf("header metadata x-echo-x-md = %v, want [v1] (all: %v)", v, hdr)
		}
		if v := tlr.Get("x-echo-trailer"); len(v) != 1 || v[0] != "Unary" {
			t.Errorf("trailer x-echo-trailer = %v, want [Unary]", v)
		}
		if a := resp.GetMetadata()[":authority"]; a != "" && a != echoAuthority {
			t.Errorf("server saw :authority %q", a)
		}
	})

	t.Run("unary-status", func(t *testing.T) {
		var tlr metadata.MD
		_, err := ec.Unary(mdCtx, &demopb.EchoRequest{StatusCode: uint32(codes.NotFound), StatusMessage: "no such thing"}, grpc.Trailer(&tlr))
		st, _ := status.FromError(err)
		if st.Code() != codes.NotFound || st.Message() != "no such thing" {
			t.Errorf("status %v, want NotFound \"no such thing\"", err)
		}
		if v := tlr.Get("x-echo-trailer"); len(v) != 1 || v[0] != "Unary" {
			t.Errorf("trailer on error = %v", tlr)
		}
	})

	t.Run("server-stream", func(t *testing.T) {
		s, err := ec.ServerStream(mdCtx, &demopb.EchoRequest{Payload: []byte("s"), Responses: 5, IntervalMs: 5, StatusCode: uint32(codes.FailedPrecondition)})
		if err != nil {
			t.Fatal(err)
		}
		var n uint32
		for {
			r, err := s.Recv()
			if err != nil {
				if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition {
					t.Errorf("stream ended with %v, want FailedPrecondition", err)
				}
				break
			}
			if r.GetSequence() != n || string(r.GetPayload()) != "s" {
				t.Errorf("message %d: %v", n, r)
			}
			n++
		}
		if n != 5 {
			t.Errorf("got %d messages, want 5", n)
		}
		if v := s.Trailer().Get("x-echo-trailer"); len(v) != 1 || v[0] != "ServerStream" {
			t.Errorf("trailer %v", s.Trailer())
		}
	})

	t.Run("client-stream", func(t *testing.T) {
		s, err := ec.ClientStream(mdCtx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"a", "b", "c"} {
			if err := s.Send(&demopb.EchoRequest{Payload: []byte(p)}); err != nil {
				t.Fatal(err)
			}
		}
		r, err := s.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		if string(r.GetPayload()) != "abc" || r.GetSequence() != 3 {
			t.Errorf("got %v, want abc/3", r)
		}
		if r.GetMetadata()["x-md"] != "v1" {
			t.Errorf("server saw metadata %v", r.GetMetadata())
		}
	})

	t.Run("bidi-stream", func(t *testing.T) {
		s, err := ec.BidiStream(mdCtx)
		if err != nil {
			t.Fatal(err)
		}
		// Lock-step: each message must come back before the next is sent,
		// which proves the proxies do not buffer a stream.
		for i := range 4 {
			p := fmt.Sprintf("m%d", i)
			if err := s.Send(&demopb.EchoRequest{Payload: []byte(p)}); err != nil {
				t.Fatal(err)
			}
			r, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if string(r.GetPayload()) != p || r.GetSequence() != uint32(i) {
				t.Fatalf("got %v, want %s/%d", r, p, i)
			}
		}
		if err := s.Send(&demopb.EchoRequest{StatusCode: uint32(codes.Aborted), StatusMessage: "stop"}); err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		if st, _ := status.FromError(err); st.Code() != codes.Aborted || st.Message() != "stop" {
			t.Errorf("stream ended with %v, want Aborted stop", err)
		}
		hdr, _ := s.Header()
		if v := hdr.Get("echo-served-by"); len(v) != 1 || v[0] != "echo-1" {
			t.Errorf("header metadata %v", hdr)
		}
	})
}

// connectTCP opens an opaque stream to authority through the outbound
// listener with HTTP CONNECT.
func connectTCP(t *testing.T, outbound, authority string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", outbound, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		conn.Close()
		t.Fatalf("CONNECT %s: %v", authority, err)
	}
	if resp.StatusCode != 200 {
		conn.Close()
		t.Fatalf("CONNECT %s: %s", authority, resp.Status)
	}
	return conn, br
}

func testConnect(t *testing.T, outbound string) {
	conn, br := connectTCP(t, outbound, tcpAuthority)
	defer conn.Close()
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	// A first round trip, before the half-close, shows bytes flow both ways
	// while both sides are open.
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 4)
	if _, err := io.ReadFull(br, first); err != nil || string(first) != "ping" {
		t.Fatalf("first echo: %q %v", first, err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(data)
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading the echo after %d bytes: %v", len(got), err)
	}
	if werr := <-errc; werr != nil {
		t.Fatalf("writing: %v", werr)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes, want %d identical bytes (half-close must reach the server and its close come back)", len(got), len(data))
	}
}
