package outbound_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// upgradeApp is an app on a raw listener. It reports each Upgrade
// request's head as received, switches (then echoes) or declines with a
// 200 as told, and reports every byte that reaches a declined connection
// afterwards: such bytes bypassed the proxy's parsing. Other requests are
// answered 200 "second".
type upgradeApp struct {
	heads  chan string
	leaked chan string
}

func startUpgradeApp(t *testing.T, ln net.Listener, decline bool) *upgradeApp {
	a := &upgradeApp{heads: make(chan string, 4), leaked: make(chan string, 4)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go a.serve(c, decline)
		}
	}()
	return a
}

func (a *upgradeApp) serve(c net.Conn, decline bool) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		var head strings.Builder
		tee := bufio.NewReader(io.TeeReader(br, &head))
		req, err := http.ReadRequest(tee)
		if err != nil {
			return
		}
		if req.Header.Get("Upgrade") == "" {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
			continue
		}
		a.heads <- head.String()
		if !decline {
			fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			_, _ = io.Copy(c, tee)
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
		rest, _ := io.ReadAll(tee)
		a.leaked <- string(rest)
		return
	}
}

const upgradeReq = "GET /ws HTTP/1.1\r\nHost: books.demo\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"

// upgradeVias are the two proxy paths of an Upgrade request: an app's
// request through the outbound and the mesh, and a plain caller's straight
// to the inbound.
var upgradeVias = []struct {
	name string
	addr func(*pair) string
}{
	{"outbound", func(p *pair) string { return p.outAddr }},
	{"inbound-plain", func(p *pair) string { return p.inAddr }},
}

func TestUpgradeAddsNothing(t *testing.T) {
	for _, via := range upgradeVias {
		t.Run(via.name, func(t *testing.T) {
			ln := listen(t)
			t.Cleanup(func() { _ = ln.Close() })
			app := startUpgradeApp(t, ln, false)
			p := newPair(t, pairOpts{appListener: ln, plainToApp: true})
			c := dialDeadline(t, via.addr(p))
			_, _ = io.WriteString(c, upgradeReq)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			head := <-app.heads
			if strings.Contains(strings.ToLower(head), "user-agent") {
				t.Errorf("the app received a User-Agent the caller never sent:\n%s", head)
			}
			for _, f := range []string{"Connection: Upgrade", "Upgrade: echo"} {
				if !strings.Contains(head, f) {
					t.Errorf("the app did not receive %q:\n%s", f, head)
				}
			}
			_, _ = io.WriteString(c, "frame\n")
			if got, err := br.ReadString('\n'); err != nil || got != "frame\n" {
				t.Fatalf("echo after the switch: %q %v", got, err)
			}
		})
	}
}

// TestUpgradeDeclined: an app that answers an Upgrade request with a final
// response has not switched protocols, so the caller's next request is an
// HTTP request like any other: parsed by the proxy and answered, never
// passed as raw bytes down the declined connection.
func TestUpgradeDeclined(t *testing.T) {
	for _, via := range upgradeVias {
		t.Run(via.name, func(t *testing.T) {
			ln := listen(t)
			t.Cleanup(func() { _ = ln.Close() })
			app := startUpgradeApp(t, ln, true)
			p := newPair(t, pairOpts{appListener: ln, plainToApp: true})
			c := dialDeadline(t, via.addr(p))
			_, _ = io.WriteString(c, upgradeReq+"GET /second HTTP/1.1\r\nHost: books.demo\r\n\r\n")
			br := bufio.NewReader(c)
			for i, want := range []string{"no", "second"} {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("response %d: %v", i+1, err)
				}
				body, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != http.StatusOK || string(body) != want {
					t.Errorf("response %d: %d %q %v, want 200 %q", i+1, resp.StatusCode, body, err, want)
				}
			}
			_ = c.Close()
			select {
			case rest := <-app.leaked:
				if rest != "" {
					t.Errorf("bytes after a declined upgrade reached the app unparsed: %q", rest)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the declined connection to the app was never closed")
			}
		})
	}
}

func dialDeadline(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// TestUpgradeDeclinedStalledBody: an upstream that declines an upgrade and
// then stops sending its body does not hold the connection once the caller
// has gone.
func TestUpgradeDeclinedStalledBody(t *testing.T) {
	for _, via := range upgradeVias {
		t.Run(via.name, func(t *testing.T) {
			ln := listen(t)
			t.Cleanup(func() { _ = ln.Close() })
			answered, closed := make(chan struct{}, 1), make(chan struct{}, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nno")
				answered <- struct{}{}
				_, _ = io.Copy(io.Discard, br) // until the proxy closes
				closed <- struct{}{}
			}()
			p := newPair(t, pairOpts{appListener: ln, plainToApp: true})
			c := dialDeadline(t, via.addr(p))
			_, _ = io.WriteString(c, upgradeReq)
			<-answered
			start := time.Now()
			_ = c.Close()
			select {
			case <-closed:
				t.Logf("upstream connection closed %s after the caller left", time.Since(start).Round(time.Millisecond))
			case <-time.After(30 * time.Second):
				t.Fatal("the proxy still holds the stalled declined connection 30 s after the caller left")
			}
		})
	}
}
