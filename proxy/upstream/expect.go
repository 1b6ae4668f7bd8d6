package upstream

import (
	"io"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// expectTimeout is how long a body waits for the peer's 100 Continue before
// it is sent anyway (what clients do themselves, RFC 9110 §10.1.1).
const expectTimeout = time.Second

// continueGate holds back the body of an "Expect: 100-continue" request
// until the far side asks for it (100 Continue relayed by the HTTP/2
// client's Got100Continue) or expectTimeout passes. The HTTP/1 server in
// front sends the app's client its 100 Continue only when the body is first
// read, so the continue the client sees is the far app's own; an app that
// answers 413 at once never makes the client send the body.
type continueGate struct {
	body   io.ReadCloser
	open   chan struct{}
	closed chan struct{}
	once   sync.Once
	cOnce  sync.Once
	timer  *time.Timer
}

// gateContinue wraps out's body when its client expects 100-continue and
// returns the request to send and a func to call once the response head
// arrived (a final answer before the continue means the body is not
// wanted: it stays held until the HTTP/2 client closes it).
func gateContinue(out *http.Request) (*http.Request, func()) {
	if out.Body == nil || out.Body == http.NoBody || !httpguts.HeaderValuesContainsToken(out.Header["Expect"], "100-continue") {
		return out, func() {}
	}
	g := &continueGate{body: out.Body, open: make(chan struct{}), closed: make(chan struct{})}
	g.timer = time.AfterFunc(expectTimeout, g.release)
	ctx := httptrace.WithClientTrace(out.Context(), &httptrace.ClientTrace{Got100Continue: g.release})
	out = out.WithContext(ctx)
	out.Body = g
	return out, func() { g.timer.Stop() }
}

func (g *continueGate) release() { g.once.Do(func() { close(g.open) }) }

func (g *continueGate) Read(p []byte) (int, error) {
	select {
	case <-g.open:
		return g.body.Read(p)
	case <-g.closed:
		return 0, http.ErrBodyReadAfterClose
	}
}

func (g *continueGate) Close() error {
	g.cOnce.Do(func() { close(g.closed) })
	g.timer.Stop()
	return g.body.Close()
}
