package outbound_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/balance"
)

func TestHTTP1RoundTrip(t *testing.T) {
	type seen struct {
		host, body, conn, keepAlive, mesh, te, custom, trailer string
		proto                                                  string
		chunked                                                bool
	}
	got := make(chan seen, 1)
	p := newPair(t, pairOpts{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{
			host: r.Host, body: string(b), conn: r.Header.Get("X-Hop"), keepAlive: r.Header.Get("Keep-Alive"),
			mesh: r.Header.Get("Trellis-Orig-Proto") + r.Header.Get("Trellis-Target-Port"), te: r.Header.Get("Te"),
			custom: r.Header.Get("X-Custom"), trailer: r.Trailer.Get("X-Req-Trailer"), proto: r.Proto,
			chunked: len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked",
		}
		w.Header().Set("Trailer", "X-Resp-Trailer")
		w.Header().Set("X-Resp", "yes")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "hello ")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "world")
		w.Header().Set("X-Resp-Trailer", "done")
	})})

	// A chunked request body with a trailer, and hop-by-hop headers.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, url("/path?q=1"), pr)
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "must-not-pass")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("X-Custom", "kept")
	req.Header.Set("Trellis-Target-Port", "1") // spoofed: must not reach the app
	req.Trailer = http.Header{"X-Req-Trailer": nil}
	go func() {
		_, _ = io.WriteString(pw, "part1-")
		req.Trailer.Set("X-Req-Trailer", "req-done")
		_, _ = io.WriteString(pw, "part2")
		_ = pw.Close()
	}()
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || body != "hello world" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Resp") != "yes" {
		t.Errorf("response header lost: %v", resp.Header)
	}
	if resp.Trailer.Get("X-Resp-Trailer") != "done" {
		t.Errorf("response trailer = %v", resp.Trailer)
	}
	s := <-got
	want := seen{host: "books.demo", body: "part1-part2", custom: "kept", trailer: "req-done", proto: "HTTP/1.1", chunked: true}
	if s != want {
		t.Errorf("app saw %+v, want %+v", s, want)
	}
	labels := map[string]string{"direction": "outbound", "dst_service": service, "peer_identity": serverID.String(), "tls": "true", "status_code": "201", "classification": "success"}
	eventually(t, "outbound response metric", func() bool { return counter(t, p.outReg, "trellis_responses_total", labels) == 1 })
	inLabels := map[string]string{"direction": "inbound", "dst_service": "books.demo", "peer_identity": clientID.String(), "tls": "true", "status_code": "201"}
	eventually(t, "inbound response metric", func() bool { return counter(t, p.inReg, "trellis_responses_total", inLabels) == 1 })
}

func TestExpectContinue(t *testing.T) {
	p := newPair(t, pairOpts{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})})
	// Raw client: send headers, wait for 100 Continue, then the body.
	c, err := net.Dial("tcp", p.outAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST /x HTTP/1.1\r\nHost: books.demo\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, "100") {
		t.Fatalf("want 100 Continue, got %q %v", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil { // blank line after 100
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, resp.Body); resp.StatusCode != 200 || b != "hello" {
		t.Fatalf("status %d body %q", resp.StatusCode, b)
	}
}

func TestLargeAndSlowBodies(t *testing.T) {
	p := newPair(t, pairOpts{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		w.Header().Set("X-Sum", fmt.Sprintf("%x", h.Sum(nil)))
		w.Header().Set("X-Len", fmt.Sprint(n))
		// Echo a large body back too.
		_, _ = io.Copy(w, io.LimitReader(zeroReader{}, n))
	})})
	const size = 10 << 20
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	resp, err := p.client.Post(url("/big"), "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if want := fmt.Sprintf("%x", sha256.Sum256(data)); resp.Header.Get("X-Sum") != want || n != size {
		t.Fatalf("sum %s len %d, want %s %d", resp.Header.Get("X-Sum"), n, want, size)
	}

	// A slow body: the app must get the first chunk before the client sends
	// the last (streaming, not buffering).
	first := make(chan struct{})
	p2 := newPair(t, pairOpts{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err == nil {
			close(first)
		}
		rest, _ := io.ReadAll(r.Body)
		_, _ = w.Write(append(buf, rest...))
	})})
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, "first")
		select {
		case <-first:
		case <-time.After(10 * time.Second):
		}
		_, _ = io.WriteString(pw, "-second")
		_ = pw.Close()
	}()
	resp, err = p2.client.Post(url("/slow"), "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, resp.Body); b != "first-second" {
		t.Fatalf("body %q", b)
	}
	_ = resp.Body.Close()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestClientCancellationReachesServer(t *testing.T) {
	cancelled := make(chan struct{})
	started := make(chan struct{})
	p := newPair(t, pairOpts{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(20 * time.Second):
		}
	})})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url("/hang"), nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := p.client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	cancel()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("app never saw the cancellation")
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client error = %v", err)
	}
}

func TestUnknownServiceAndTimeout(t *testing.T) {
	p := newPair(t, pairOpts{requestTimeout: 200 * time.Millisecond, app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})})
	resp, err := p.client.Get("http://nope.demo/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(resp.Header.Get("Trellis-Error"), "unknown service") {
		t.Fatalf("unknown service: %d %q", resp.StatusCode, resp.Header.Get("Trellis-Error"))
	}
	if got := counter(t, p.outReg, "trellis_request_errors_total", map[string]string{"reason": "unknown_service", "dst_service": "nope.demo:80"}); got != 1 {
		t.Errorf("unknown_service errors = %v", got)
	}
	resp, err = p.client.Get(url("/slow"))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("Trellis-Error") == "" {
		t.Fatalf("timeout: %d %q", resp.StatusCode, resp.Header.Get("Trellis-Error"))
	}
	eventually(t, "timeout metric", func() bool {
		return counter(t, p.outReg, "trellis_request_errors_total", map[string]string{"reason": "timeout", "dst_service": service}) == 1
	})
}

func TestWrongIdentityRefused(t *testing.T) {
	other := identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "impostor"}
	served := make(chan struct{}, 1)
	p := newPair(t, pairOpts{expectID: other, app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served <- struct{}{}
	})})
	get := func() {
		t.Helper()
		resp, err := p.client.Get(url("/"))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Trellis-Error") == "" {
			t.Fatalf("status %d, trellis-error %q", resp.StatusCode, resp.Header.Get("Trellis-Error"))
		}
	}
	// The real inbound proxy terminates any mesh-form name with its own
	// certificate, so the client refuses it as the wrong identity.
	get()
	if got := counter(t, p.outReg, "trellis_tls_handshake_errors_total", map[string]string{"direction": "outbound", "reason": "wrong_identity"}); got < 1 {
		t.Fatalf("wrong_identity handshake errors against the real inbound = %v, want >= 1", got)
	}
	before := counter(t, p.outReg, "trellis_tls_handshake_errors_total", map[string]string{"direction": "outbound", "reason": "wrong_identity"})
	// A server that answers any name with a valid certificate of another
	// identity is refused as wrong_identity.
	srvStore := p.ca.store(t, serverID)
	ln := tls.NewListener(listen(t), srvStore.ServerConfig([]string{"h2"}))
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				served <- struct{}{}
				_ = c.Close()
			}()
		}
	}()
	p.bal.Update([]balance.Endpoint{{Addr: ln.Addr().String(), Weight: 1, Identity: other}})
	get()
	if got := counter(t, p.outReg, "trellis_tls_handshake_errors_total", map[string]string{"direction": "outbound", "reason": "wrong_identity"}); got <= before {
		t.Fatalf("wrong_identity handshake errors = %v, want more than %v", got, before)
	}
	select {
	case <-served:
	case <-time.After(5 * time.Second):
	}
	select {
	case <-served:
		t.Fatal("app served despite the wrong identity")
	default:
	}
}

func TestRetryOnRefusedEndpoint(t *testing.T) {
	// An address nothing listens on.
	ln := listen(t)
	refused := ln.Addr().String()
	_ = ln.Close()
	p := newPair(t, pairOpts{
		extraEndpoints: []balance.Endpoint{{Addr: refused, Weight: 1000, Identity: serverID}},
		app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "ok")
		}),
	})
	const n = 10
	for i := 0; i < n; i++ {
		resp, err := p.client.Get(url("/"))
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, resp.Body); resp.StatusCode != 200 || b != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
		_ = resp.Body.Close()
	}
	eventually(t, "exact counts", func() bool {
		return counter(t, p.outReg, "trellis_responses_total", map[string]string{"status_code": "200", "dst_service": service}) == n &&
			counter(t, p.outReg, "trellis_requests_total", map[string]string{"dst_service": service}) == n
	})
	if counter(t, p.outReg, "trellis_retries_total", map[string]string{"reason": "connect_error"}) < 1 {
		t.Fatal("no retry counted")
	}
}

func TestStatusCountsExact(t *testing.T) {
	p := newPair(t, pairOpts{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})})
	for i := 0; i < 7; i++ {
		path := "/ok"
		if i%3 == 0 {
			path = "/fail"
		}
		resp, err := p.client.Get(url(path))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	eventually(t, "status counts", func() bool {
		return counter(t, p.outReg, "trellis_responses_total", map[string]string{"status_code": "500", "classification": "failure"}) == 3 &&
			counter(t, p.outReg, "trellis_responses_total", map[string]string{"status_code": "200", "classification": "success"}) == 4 &&
			counter(t, p.inReg, "trellis_responses_total", map[string]string{"status_code": "500", "classification": "failure"}) == 3 &&
			counter(t, p.inReg, "trellis_responses_total", map[string]string{"status_code": "200", "classification": "success"}) == 4 &&
			counter(t, p.outReg, "trellis_response_latency_seconds", map[string]string{"dst_service": service}) == 7
	})
}
