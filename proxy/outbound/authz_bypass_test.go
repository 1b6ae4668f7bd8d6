//lint:file-ignore SA1019 the app under attack accepts "Upgrade: h2c" as x/net's h2c handler does (net/http's own unencrypted HTTP/2 takes prior knowledge only), which is the bypass this test proves closed.
package outbound_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"golang.org/x/net/http2/hpack"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/policy"
)

// publicOnly: deny, but anyone may reach /public and GET /healthz.
var publicOnly = &apiv1.ServerPolicy{Name: "server/books", Access: apiv1.AccessPolicy_DENY, Source: "server",
	Routes: []*apiv1.InboundRoute{
		{Name: "public", Matches: []*apiv1.RouteMatch{{PathPrefix: "/public"}},
			Authorizations: []*apiv1.Authorization{{Name: "open", Unauthenticated: true}}},
		{Name: "health", Matches: []*apiv1.RouteMatch{{PathExact: "/healthz", Method: "GET"}},
			Authorizations: []*apiv1.Authorization{{Name: "open", Unauthenticated: true}}},
	}}

// rawRequest sends one HTTP/1.1 request head as written, without mesh
// TLS, on a fresh connection, and returns the response and the connection.
func rawRequest(t *testing.T, addr, head string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	method, _, _ := strings.Cut(head, " ")
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: %v", head, err)
	}
	return resp, c, br
}

// TestPathReadingsBypass: a path the app reads as another route than the
// proxy's decoded, param-dropped, dot-resolved reading does not get the
// route's authorizations: "/admin/..;/public" is "/public" to the proxy
// but reaches a Go app (and nginx, and anything that keeps params) as a
// path under /admin.
func TestPathReadingsBypass(t *testing.T) {
	r := newAuthzRig(t, policy.AllUnauthenticated, publicOnly)
	if code, body := r.plainGet(t, "/public/a"); code != 200 || body != "app:/public/a" {
		t.Fatalf("open route: %d %q", code, body)
	}
	for _, target := range []string{
		"/admin/..;/public",
		"/admin/x%2F..%2F..%2Fpublic",
		"/admin/x/%2e%2e/%2e%2e/public",
		"/admin%5C..%5Cpublic",
	} {
		before := r.requests.Load()
		resp, _, _ := rawRequest(t, r.inAddr, "GET "+target+" HTTP/1.1\r\nHost: books\r\nConnection: close\r\n\r\n")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || r.requests.Load() != before {
			t.Errorf("GET %s: %d %q, the app saw %d requests; want 403 and none", target, resp.StatusCode, body, r.requests.Load()-before)
		}
	}
}

// TestKeepAliveDecidedAgain: each request of a kept-alive connection is
// decided on its own; an allowed first request opens nothing.
func TestKeepAliveDecidedAgain(t *testing.T) {
	r := newAuthzRig(t, policy.AllUnauthenticated, publicOnly)
	resp, c, br := rawRequest(t, r.inAddr, "GET /healthz HTTP/1.1\r\nHost: books\r\n\r\n")
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	before := r.requests.Load()
	if _, err := io.WriteString(c, "GET /secret HTTP/1.1\r\nHost: books\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || r.requests.Load() != before {
		t.Fatalf("second request: %d, app saw %d; want 403 and none", resp.StatusCode, r.requests.Load()-before)
	}
}

// TestH2CUpgradeBypass: "Upgrade: h2c" on an open route must not turn the
// connection into HTTP/2 straight to the app, where every later stream
// would skip the proxy's decision. The app here accepts h2c upgrades (as
// Go's h2c handler, Jetty and others do).
func TestH2CUpgradeBypass(t *testing.T) {
	r := newAuthzRigApp(t, policy.AllUnauthenticated, publicOnly, func(h http.Handler) http.Handler {
		return h2c.NewHandler(h, &http2.Server{})
	})
	settings := http2SettingsPayload(t)
	resp, c, br := rawRequest(t, r.inAddr, "GET /healthz HTTP/1.1\r\nHost: books\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
		"Upgrade: h2c\r\nHTTP2-Settings: "+settings+"\r\n\r\n")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET /healthz with Upgrade: h2c: %d, want 200 (the upgrade dropped)", resp.StatusCode)
		}
		return
	}
	// Switched: speak HTTP/2 to the app through the proxy's splice.
	before := r.requests.Load()
	status := h2Get(t, c, br, "/secret")
	t.Errorf("Upgrade: h2c was switched: a later HTTP/2 stream for /secret got %q past the policy (app requests +%d)", status, r.requests.Load()-before)
}

func http2SettingsPayload(t *testing.T) string {
	t.Helper()
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// The payload of an empty SETTINGS frame is empty.
	return strings.TrimRight(string(buf.Bytes()[9:]), "=")
}

// h2Get sends the client preface and a GET on stream 3 and returns its
// :status ("" if none came).
func h2Get(t *testing.T, c net.Conn, br *bufio.Reader, path string) string {
	t.Helper()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, br)
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "books"}, {":path", path}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return ""
		}
		if h, ok := f.(*http2.HeadersFrame); ok && h.StreamID == 3 {
			fs, _ := dec.DecodeFull(h.HeaderBlockFragment())
			for _, x := range fs {
				if x.Name == ":status" {
					return x.Value
				}
			}
		} else if h, ok := f.(*http2.HeadersFrame); ok {
			_, _ = dec.DecodeFull(h.HeaderBlockFragment())
		}
	}
}

// TestRequestFormsDecided: request forms that could read as an open route
// are decided on what the app gets; none reaches the app past a deny.
func TestRequestFormsDecided(t *testing.T) {
	r := newAuthzRig(t, policy.AllUnauthenticated, publicOnly)
	for _, tt := range []struct {
		name, head string
		want       int
	}{
		{"absolute form", "GET http://books/public/../secret HTTP/1.1\r\nHost: books\r\n\r\n", 403},
		{"absolute form, open", "GET http://books/public/a HTTP/1.1\r\nHost: books\r\n\r\n", 200},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: books\r\n\r\n", 403},
		{"CONNECT", "CONNECT books:80 HTTP/1.1\r\nHost: books:80\r\n\r\n", 403},
		{"lower-case method on a GET route", "get /healthz HTTP/1.1\r\nHost: books\r\n\r\n", 0},
		{"HEAD on a GET route", "HEAD /healthz HTTP/1.1\r\nHost: books\r\n\r\n", 403},
		{"websocket upgrade, denied path", "GET /secret HTTP/1.1\r\nHost: books\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 403},
		{"trellis-target-port from a plain caller", "GET /public/a HTTP/1.1\r\nHost: books\r\nTrellis-Target-Port: 1\r\n\r\n", 200},
		{"fragment-like %23", "GET /secret%23/../../public HTTP/1.1\r\nHost: books\r\n\r\n", 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := r.requests.Load()
			resp, _, _ := rawRequest(t, r.inAddr, tt.head)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			saw := r.requests.Load() - before
			switch {
			case tt.want == 0: // any refusal, never the app
				if saw != 0 || resp.StatusCode < 400 {
					t.Fatalf("%d %q, app saw %d; want a refusal", resp.StatusCode, body, saw)
				}
			case resp.StatusCode != tt.want || (tt.want >= 400) != (saw == 0):
				t.Fatalf("%d %q, app saw %d; want %d", resp.StatusCode, body, saw, tt.want)
			}
		})
	}
}

// TestH2PriorKnowledgeStreams: a plain HTTP/2 caller's streams are
// decided one by one: an open first stream opens nothing else.
func TestH2PriorKnowledgeStreams(t *testing.T) {
	r := newAuthzRig(t, policy.AllUnauthenticated, publicOnly)
	c, err := net.DialTimeout("tcp", r.inAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	before := r.requests.Load()
	if st := h2Get(t, c, br, "/secret"); st != "403" || r.requests.Load() != before {
		t.Fatalf("HTTP/2 stream for /secret: %q, app saw %d; want 403 and none", st, r.requests.Load()-before)
	}
}

// TestPipelinedDecided: a request pipelined behind an allowed one, in the
// same write, is decided on its own.
func TestPipelinedDecided(t *testing.T) {
	r := newAuthzRig(t, policy.AllUnauthenticated, publicOnly)
	before := r.requests.Load()
	resp, _, br := rawRequest(t, r.inAddr, "GET /healthz HTTP/1.1\r\nHost: books\r\n\r\nGET /secret HTTP/1.1\r\nHost: books\r\n\r\n")
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	second, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	second.Body.Close()
	if resp.StatusCode != 200 || second.StatusCode != http.StatusForbidden || r.requests.Load()-before != 1 {
		t.Fatalf("pipelined: %d then %d, app saw %d; want 200, 403 and 1", resp.StatusCode, second.StatusCode, r.requests.Load()-before)
	}
}
