package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
)

// Issue 9, findings 2, 3, 6 and 8: no malformed or ambiguous HTTP/1 message
// may hang a proxy, be framed differently by the proxy and the app
// (smuggling), or be answered on the app's behalf. Every form is sent as
// raw bytes to both HTTP/1 listeners of real proxies: the inbound port
// (plain-text callers) and the outbound port (the app's own requests, then
// over the mesh's HTTP/2).

// framingApp is an HTTP/1.1 app that records what reached it.
type framingApp struct {
	addr   string
	paths  chan string // every request path, in order
	mu     sync.Mutex
	states map[net.Conn]http.ConnState
	bodies atomic.Int64 // requests whose body was read in full
}

func startFramingApp(t *testing.T) *framingApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &framingApp{addr: ln.Addr().String(), paths: make(chan string, 1000), states: make(map[net.Conn]http.ConnState)}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.paths <- r.URL.Path
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				return
			}
			a.bodies.Add(1)
			_, _ = fmt.Fprintf(w, "got %d bytes", n)
		}),
		ConnState: func(c net.Conn, st http.ConnState) {
			a.mu.Lock()
			defer a.mu.Unlock()
			if st == http.StateClosed || st == http.StateHijacked {
				delete(a.states, c)
				return
			}
			a.states[c] = st
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return a
}

// active counts the app's connections in the middle of a request.
func (a *framingApp) active() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, st := range a.states {
		if st == http.StateActive {
			n++
		}
	}
	return n
}

// drainPaths returns the paths recorded so far.
func (a *framingApp) drainPaths() []string {
	var out []string
	for {
		select {
		case p := <-a.paths:
			out = append(out, p)
		default:
			return out
		}
	}
}

type framingMesh struct {
	app    *framingApp
	client *harness.Proxy
	server *harness.Proxy
}

func newFramingMesh(t *testing.T, args ...string) *framingMesh {
	t.Helper()
	requireBinaries(t)
	a := startFramingApp(t)
	store := harness.Store{
		Services: []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client"},
			{Name: "echo-1", Namespace: ns, ServiceAccount: "echo", Endpoints: []harness.Endpoint{
				{Service: "echo", Port: 80, TargetPort: port(t, a.addr)}}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	fm := &framingMesh{app: a}
	fm.server = m.StartProxy(harness.ProxySpec{Workload: "echo-1", AppAddr: a.addr, Args: args})
	fm.client = m.StartProxy(harness.ProxySpec{Workload: "client", Args: args})
	waitReady(t, fm.server, fm.client)
	// The mesh works: a well-formed chunked request goes through both ways.
	for _, addr := range []string{fm.server.InboundAddr, fm.client.OutboundAddr} {
		out, _ := rawExchange(t, addr, "POST /ok HTTP/1.1\r\nHost: "+echoAuthority+"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false)
		if !strings.HasPrefix(out, "HTTP/1.1 200 ") || !strings.Contains(out, "got 3 bytes") {
			t.Fatalf("sanity request via %s: %q", addr, out)
		}
	}
	a.drainPaths()
	return fm
}

// rawExchange sends raw bytes (half-closing when closeWrite is set) and
// reads until the proxy closes, with a 10 s ceiling; it reports whether the
// proxy closed.
func rawExchange(t *testing.T, addr, raw string, closeWrite bool) (string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		_ = c.(*net.TCPConn).CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	t.Logf("%s: answered in %v", addr, time.Since(start).Round(time.Millisecond))
	return string(b), err == nil
}

// Heads that must be refused before anything reaches the app. The body of
// each smuggles a second request, /smuggled, for a parser that frames the
// message differently.
var framingHeadVectors = []struct {
	name   string
	head   string
	status string
}{
	{"CL.TE", "POST /a HTTP/1.1\r\nHost: H\r\nContent-Length: 45\r\nTransfer-Encoding: chunked\r\n\r\n", "400"},
	{"TE.CL", "POST /a HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", "400"},
	{"TE xchunked", "POST /a HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: xchunked\r\n\r\n", "400"},
	{"TE chunked, identity", "POST /a HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: chunked, identity\r\n\r\n", "400"},
	{"TE gzip, chunked", "POST /a HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "501"},
	{"two TE lines", "POST /a HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", "400"},
	{"TE space before colon", "POST /a HTTP/1.1\r\nHost: H\r\nTransfer-Encoding : chunked\r\n\r\n", "400"},
	{"TE obs-fold", "POST /a HTTP/1.1\r\nHost: H\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", "400"},
	{"obs-fold", "POST /a HTTP/1.1\r\nHost: H\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n", "400"},
	{"duplicate CL", "POST /a HTTP/1.1\r\nHost: H\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", "400"},
	{"listed CL", "POST /a HTTP/1.1\r\nHost: H\r\nContent-Length: 0, 0\r\n\r\n", "400"},
	{"negative CL", "POST /a HTTP/1.1\r\nHost: H\r\nContent-Length: -1\r\n\r\n", "400"},
	{"plus CL", "POST /a HTTP/1.1\r\nHost: H\r\nContent-Length: +0\r\n\r\n", "400"},
	{"bare LF", "POST /a HTTP/1.1\r\nHost: H\nContent-Length: 0\r\n\r\n", "400"},
	{"bare CR", "POST /a HTTP/1.1\r\nHost: H\rX: 1\r\nContent-Length: 0\r\n\r\n", "400"},
	{"NUL", "POST /a HTTP/1.1\r\nHost: H\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n", "400"},
	{"TE in HTTP/1.0", "POST /a HTTP/1.0\r\nHost: H\r\nTransfer-Encoding: chunked\r\n\r\n", "400"},
	{"head too large", "GET /a HTTP/1.1\r\nHost: H\r\nX: " + strings.Repeat("y", 1100<<10) + "\r\n\r\n", "431"},
}

const smuggledTail = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: H\r\n\r\n"

func TestSecurityFramingRefusesAmbiguousHeads(t *testing.T) {
	fm := newFramingMesh(t)
	for _, dir := range []struct{ name, addr string }{{"inbound", fm.server.InboundAddr}, {"outbound", fm.client.OutboundAddr}} {
		for _, v := range framingHeadVectors {
			raw := strings.ReplaceAll(v.head, "Host: H", "Host: "+echoAuthority) + smuggledTail
			out, closed := rawExchange(t, dir.addr, raw, false)
			if !strings.HasPrefix(out, "HTTP/1.1 "+v.status+" ") || !strings.Contains(out, "Connection: close\r\n") || !closed {
				t.Errorf("%s %s: want %s and a close, got closed=%v %q", dir.name, v.name, v.status, closed, clipStr(out))
			}
		}
	}
	if got := fm.app.drainPaths(); len(got) > 0 {
		t.Errorf("requests reached the app: %v", got)
	}
	metricAtLeast(t, fm.server, "trellis_http1_protocol_errors_total", map[string]string{"direction": "inbound", "side": "client"}, float64(len(framingHeadVectors)), 10*time.Second)
	metricAtLeast(t, fm.client, "trellis_http1_protocol_errors_total", map[string]string{"direction": "outbound", "side": "client"}, float64(len(framingHeadVectors)), 10*time.Second)
}

// Chunked bodies with framing errors after a valid head: the head may reach
// the app, the body never completes, and both connections are freed.
var framingBodyVectors = []struct {
	name, body string
	closeWrite bool
}{
	{"size overflow", "ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n", false},
	{"size bare LF", "3\nabc\r\n0\r\n\r\n", false},
	{"data without CRLF", "3\r\nabcXY3\r\nabc\r\n0\r\n\r\n", false},
	{"negative size", "-3\r\nabc\r\n0\r\n\r\n", false},
	{"CTL in extension", "3;a=\x01\r\nabc\r\n0\r\n\r\n", false},
	{"trailer obs-fold", "3\r\nabc\r\n0\r\nX: 1\r\n 2\r\n\r\n", false},
	{"truncated", "5\r\nab", true},
}

func TestSecurityFramingMalformedBodyFreesBothSides(t *testing.T) {
	fm := newFramingMesh(t)
	for _, dir := range []struct{ name, addr string }{{"inbound", fm.server.InboundAddr}, {"outbound", fm.client.OutboundAddr}} {
		for _, v := range framingBodyVectors {
			raw := "POST /body HTTP/1.1\r\nHost: " + echoAuthority + "\r\nTransfer-Encoding: chunked\r\n\r\n" + v.body
			out, closed := rawExchange(t, dir.addr, raw, v.closeWrite)
			if !strings.HasPrefix(out, "HTTP/1.1 400 ") || !closed {
				t.Errorf("%s %s: want 400 and a close, got closed=%v %q", dir.name, v.name, closed, clipStr(out))
			}
			start := time.Now()
			if err := eventually(10*time.Second, func() error {
				if n := fm.app.active(); n > 0 {
					return fmt.Errorf("%d app connections still in a request", n)
				}
				return nil
			}); err != nil {
				t.Errorf("%s %s: %v", dir.name, v.name, err)
			}
			t.Logf("%s %s: app connection freed after %v", dir.name, v.name, time.Since(start).Round(time.Millisecond))
		}
	}
	if n := fm.app.bodies.Load(); n > 2 { // the two sanity requests
		t.Errorf("the app read %d bodies in full, want only the 2 valid ones", n)
	}
	for _, p := range fm.app.drainPaths() {
		if p != "/body" {
			t.Errorf("unexpected request at the app: %s", p)
		}
	}
}

// A request head that never ends gets 408, not a silent close.
func TestSecurityFramingHeaderTimeout408(t *testing.T) {
	fm := newFramingMesh(t, "--http1-header-timeout", "1s")
	for _, addr := range []string{fm.server.InboundAddr, fm.client.OutboundAddr} {
		out, closed := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: "+echoAuthority+"\r\nX-Slow: 1\r\n", false)
		if !strings.HasPrefix(out, "HTTP/1.1 408 ") || !closed {
			t.Errorf("%s: want 408 and a close, got closed=%v %q", addr, closed, clipStr(out))
		}
	}
}

// expectApp answers 413 to every request without reading its body, and
// records whether it saw Expect and whether any body byte arrived.
func startExpectApp(t *testing.T) (string, chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				seen <- "expect=" + req.Header.Get("Expect")
				if req.URL.Path == "/accept" {
					// Ask for the body, then answer with its size.
					_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
					n, _ := io.Copy(io.Discard, req.Body)
					_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(fmt.Sprint(n)), fmt.Sprint(n))
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n")
				if n := br.Buffered(); n > 0 {
					seen <- fmt.Sprintf("body bytes: %d", n)
				}
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String(), seen
}

// Expect: 100-continue reaches the app, which refuses the upload: the
// client gets 413 without a 100 Continue, so it never sends the body.
func TestSecurityFramingExpectContinueFromApp(t *testing.T) {
	requireBinaries(t)
	appAddr, seen := startExpectApp(t)
	store := harness.Store{
		Services: []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client"},
			{Name: "echo-1", Namespace: ns, ServiceAccount: "echo", Endpoints: []harness.Endpoint{
				{Service: "echo", Port: 80, TargetPort: port(t, appAddr)}}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	server := m.StartProxy(harness.ProxySpec{Workload: "echo-1", AppAddr: appAddr})
	client := m.StartProxy(harness.ProxySpec{Workload: "client"})
	waitReady(t, server, client)
	for _, addr := range []string{server.InboundAddr, client.OutboundAddr} {
		head := "PUT /upload HTTP/1.1\r\nHost: " + echoAuthority + "\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, head)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		line, err := bufio.NewReader(c).ReadString('\n')
		t.Logf("%s: first response line after %v: %q", addr, time.Since(start).Round(time.Millisecond), line)
		_ = c.Close()
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 413 ") {
			t.Errorf("%s: want 413 first (the app's answer, no 100 Continue), got %q %v", addr, line, err)
		}
		select {
		case got := <-seen:
			if got != "expect=100-continue" {
				t.Errorf("%s: the app saw %q, want the Expect header", addr, got)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: the request never reached the app", addr)
		}
	}
	select {
	case got := <-seen:
		t.Errorf("the app received more: %s", got)
	default:
	}
	for _, addr := range []string{server.InboundAddr, client.OutboundAddr} {
		expectAccepted(t, addr, seen)
	}
}

// expectAccepted: the app asks for the body with 100 Continue; the client
// gets it, sends the body, and the app receives all of it.
func expectAccepted(t *testing.T, addr string, seen chan string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "PUT /accept HTTP/1.1\r\nHost: "+echoAuthority+"\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	start := time.Now()
	line, err := br.ReadString('\n')
	t.Logf("%s: 100 Continue after %v", addr, time.Since(start).Round(time.Millisecond))
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("%s: want 100 Continue, got %q %v", addr, line, err)
	}
	_, _ = br.ReadString('\n')
	_, _ = io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "5" {
		t.Errorf("%s: got %d %q, want 200 \"5\"", addr, resp.StatusCode, b)
	}
	if got := <-seen; got != "expect=100-continue" {
		t.Errorf("%s: the app saw %q", addr, got)
	}
}

func clipStr(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// An app response framed ambiguously (Transfer-Encoding with
// Content-Length, obs-fold, bare LF) is refused with 502 naming the app,
// whichever port the request came in on, and counted.
func TestSecurityFramingAmbiguousAppResponse(t *testing.T) {
	requireBinaries(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	responses := map[string]string{
		"/te-cl":    "HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"/obs-fold": "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n",
		"/bare-lf":  "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, responses[req.URL.Path])
			}()
		}
	}()
	store := harness.Store{
		Services: []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client"},
			{Name: "echo-1", Namespace: ns, ServiceAccount: "echo", Endpoints: []harness.Endpoint{
				{Service: "echo", Port: 80, TargetPort: port(t, ln.Addr().String())}}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	server := m.StartProxy(harness.ProxySpec{Workload: "echo-1", AppAddr: ln.Addr().String()})
	client := m.StartProxy(harness.ProxySpec{Workload: "client"})
	waitReady(t, server, client)
	for _, addr := range []string{server.InboundAddr, client.OutboundAddr} {
		for path := range responses {
			out, _ := rawExchange(t, addr, "GET "+path+" HTTP/1.1\r\nHost: "+echoAuthority+"\r\nConnection: close\r\n\r\n", false)
			if !strings.HasPrefix(out, "HTTP/1.1 502 ") || !strings.Contains(out, "app ") || strings.Count(out, "HTTP/1.1 ") != 1 {
				t.Errorf("%s %s: want one 502 naming the app, got %q", addr, path, clipStr(out))
			}
		}
	}
	metricAtLeast(t, server, "trellis_http1_protocol_errors_total", map[string]string{"direction": "inbound", "side": "app"}, float64(2*len(responses)), 10*time.Second)
}
